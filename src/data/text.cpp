#include "flowmatch/data/text.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>

namespace flowmatch::data {

const std::string& letters_and_space() {
  static const std::string symbols = " abcdefghijklmnopqrstuvwxyz";
  return symbols;
}

std::string normalize_letters_and_spaces(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool space = true;  // no leading space
  for (unsigned char c : text) {
    if (std::isalpha(c) && c < 128) {
      out.push_back(static_cast<char>(std::tolower(c)));
      space = false;
    } else if (!space) {
      out.push_back(' ');
      space = true;
    }
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::vector<std::pair<std::string, int64_t>> characters_outside_letters_and_spaces(const std::string& text) {
  std::map<std::string, int64_t> counts;
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t width = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4;
    if (!(c < 0x80 && (std::isalpha(c) || c == ' ' || c == '\t' || c == '\n' || c == '\r'))) ++counts[text.substr(i, width)];
    i += width;
  }
  std::vector<std::pair<std::string, int64_t>> out(counts.begin(), counts.end());
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!std::isdigit(c)) return false;
  return true;
}

}  // namespace

std::vector<Book> parse_bible_output(const std::string& output) {
  // Chapter headings stand alone between blank lines ("\nGenesis 2\n\n"); verses are indented
  // ("  1 text"); a verse's continuation lines follow it, unindented.
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= output.size()) {
    size_t end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    lines.push_back(output.substr(start, end - start));
    start = end + 1;
  }
  std::vector<Book> books;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& raw = lines[i];
    const std::string line = trim(raw);
    if (line.empty()) continue;
    const std::string where = "bible text line " + std::to_string(i + 1);
    const bool blank_before = i == 0 || trim(lines[i - 1]).empty();
    const bool blank_after = i + 1 >= lines.size() || trim(lines[i + 1]).empty();
    if (raw[0] != ' ') {
      const size_t last_space = line.rfind(' ');
      if (blank_before && blank_after && last_space != std::string::npos && all_digits(line.substr(last_space + 1))) {
        const std::string name = line.substr(0, last_space);
        if (books.empty() || books.back().name != name) books.push_back({name, ""});
        continue;
      }
      if (books.empty() || blank_before) throw std::invalid_argument(where + ": expected a chapter heading, got '" + line + "'");
      books.back().text += " " + line;
      continue;
    }
    if (books.empty()) throw std::invalid_argument(where + ": a verse before any chapter heading");
    const size_t space = line.find(' ');
    if (space == std::string::npos || !all_digits(line.substr(0, space))) {
      throw std::invalid_argument(where + ": expected 'NUMBER text', got '" + line + "'");
    }
    books.back().text += " " + line.substr(space + 1);
  }
  for (auto& b : books) b.text = trim(b.text);
  return books;
}

std::vector<Book> read_kjv(const std::string& program) {
  const std::string command = program + " gen1:1-rev22:21 < /dev/null 2> /dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("could not run '" + program + "' (install bible-kjv)");
  std::string output;
  std::array<char, 1 << 16> buffer;
  size_t got = 0;
  while ((got = fread(buffer.data(), 1, buffer.size(), pipe.get())) > 0) output.append(buffer.data(), got);
  const int status = pclose(pipe.release());
  if (status != 0 || output.size() < 1000) {
    throw std::runtime_error("'" + program + "' printed no Bible (exit status " + std::to_string(status) +
                             "): install Debian's bible-kjv (scripts/install-deps.sh)");
  }
  return parse_bible_output(output);
}

bool kjv_book_is_held_out(int64_t k, int64_t books) { return k % 10 == 9 || k == books - 1; }

std::vector<int64_t> encode_text(const std::string& text, const std::string& alphabet) {
  std::array<int64_t, 256> id;
  id.fill(-1);
  for (size_t i = 0; i < alphabet.size(); ++i) id[static_cast<unsigned char>(alphabet[i])] = static_cast<int64_t>(i);
  std::vector<int64_t> out(text.size());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < text.size(); ++i) {
    out[i] = id[static_cast<unsigned char>(text[i])];
    if (out[i] < 0) {
      ++bad;
      if (first < 0) first = static_cast<int64_t>(i);
    }
  }
  if (bad > 0) {
    const unsigned char c = static_cast<unsigned char>(text[first]);
    char shown[16];
    std::snprintf(shown, sizeof shown, c >= 32 && c < 127 ? "'%c'" : "byte 0x%02x", c);
    throw std::invalid_argument(std::string(shown) + " at byte " + std::to_string(first) + " is outside the vocabulary (" +
                                std::to_string(bad) + " such characters)");
  }
  return out;
}

std::string decode_text(const std::vector<int64_t>& ids, const std::string& alphabet) {
  std::string out;
  out.reserve(ids.size());
  for (int64_t i : ids) {
    if (i < 0 || i >= static_cast<int64_t>(alphabet.size())) throw std::invalid_argument("token id " + std::to_string(i) + " is outside the vocabulary");
    out.push_back(alphabet[static_cast<size_t>(i)]);
  }
  return out;
}

int64_t first_invalid_utf8(const std::string& text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and code points beyond U+10FFFF are invalid.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

}  // namespace flowmatch::data
