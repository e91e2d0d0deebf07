#include "flowmatch/io/json.h"

#include <stdexcept>

namespace flowmatch::io {

nlohmann::json parse_json(const char* begin, const char* end, const std::string& what) {
  // Depth of brackets outside strings: a linear scan, no recursion.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char* p = begin; p != end; ++p) {
    const char c = *p;
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        throw std::runtime_error(what + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels (at byte " +
                                 std::to_string(p - begin) + ")");
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    return nlohmann::json::parse(begin, end);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(what + ": not valid JSON: " + e.what());
  }
}

}  // namespace flowmatch::io
