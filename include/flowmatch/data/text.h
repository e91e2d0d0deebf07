#pragma once
/// \file
/// Character-level text for discrete flow matching (docs/DISCRETE.md): the King James Bible from
/// Debian's bible-kjv (its `bible` program prints every verse), reduced to lower-case letters and
/// single spaces (27 symbols), with a fixed held-out split of whole books; and the checks a UTF-8
/// text file needs before it becomes tokens.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace flowmatch::data {

/// The 27 symbols of the character corpus: ' ' (id 0) then 'a'…'z' (ids 1…26).
const std::string& letters_and_space();

/// Lower-cases ASCII letters and turns every other byte into a space, with runs of spaces made one
/// and no space at either end.
std::string normalize_letters_and_spaces(const std::string& text);

/// One book of the Bible: its name ("Genesis", "1 Samuel", "Song of Solomon") and its text (verse
/// numbers dropped, verses joined by spaces), as printed.
struct Book {
  std::string name;
  std::string text;
};

/// Parses the output of `bible gen1:1-rev22:21`: chapter headings "NAME CHAPTER", verse lines
/// "  N text" and their continuation lines. std::invalid_argument naming the line when the text
/// does not start with a heading or a verse line has no number.
std::vector<Book> parse_bible_output(const std::string& output);

/// The 66 books of the KJV from the `bible` program (`program`, found on the PATH);
/// std::runtime_error naming the package when it is missing or prints nothing.
std::vector<Book> read_kjv(const std::string& program = "bible");

/// Whether book number k (0-based, in the Bible's order) is held out: books 9, 19, ..., 59 and the last
/// (2 Samuel, Proverbs, Amos, Matthew, Philippians, 1 Peter and Revelation): 7 of 66.
bool kjv_book_is_held_out(int64_t k, int64_t books);

/// Symbols → ids with `alphabet`; std::invalid_argument naming the first character outside it, its
/// byte offset and how many there are.
std::vector<int64_t> encode_text(const std::string& text, const std::string& alphabet);
std::string decode_text(const std::vector<int64_t>& ids, const std::string& alphabet);

/// The characters of UTF-8 `text` that normalize_letters_and_spaces does not keep as they are (after
/// lower-casing ASCII letters): everything but letters, spaces, tabs and line breaks, each with its
/// count, most frequent first (ties in code order). `text` must be valid UTF-8.
std::vector<std::pair<std::string, int64_t>> characters_outside_letters_and_spaces(const std::string& text);

/// The byte offset of the first invalid UTF-8 sequence, or -1 when `text` is valid UTF-8.
int64_t first_invalid_utf8(const std::string& text);

}  // namespace flowmatch::data
