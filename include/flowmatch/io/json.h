#pragma once
/// \file
/// Reading JSON that came from a file: nesting is bounded before the parser sees the text (nlohmann's
/// recursive parser overflows the stack on a value nested a few hundred thousand levels deep), and
/// errors name the file.

#include <string>

#include <nlohmann/json.hpp>

namespace flowmatch::io {

/// The deepest nesting of arrays and objects accepted in any JSON flowmatch reads.
constexpr int kMaxJsonDepth = 256;

/// Parses [begin, end) as JSON. Throws std::runtime_error naming `what` (a file, or a file and a
/// line) when the text is not JSON or nests deeper than kMaxJsonDepth.
nlohmann::json parse_json(const char* begin, const char* end, const std::string& what);
inline nlohmann::json parse_json(const std::string& text, const std::string& what) {
  return parse_json(text.data(), text.data() + text.size(), what);
}

}  // namespace flowmatch::io
