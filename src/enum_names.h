#pragma once
// Private to the library: an enum's names in one table, from which parsing, printing and the list
// of choices are derived (so that the three never disagree).

#include <array>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace flowmatch::detail {

template <class Enum, size_t N>
using EnumNames = std::array<std::pair<Enum, const char*>, N>;

template <class Enum, size_t N>
std::vector<std::string> enum_names(const EnumNames<Enum, N>& table) {
  std::vector<std::string> names;
  for (const auto& entry : table) names.emplace_back(entry.second);
  return names;
}

/// Throws std::invalid_argument("unknown WHAT 'name' (expected: a, b, c)").
template <class Enum, size_t N>
Enum enum_from_name(const EnumNames<Enum, N>& table, const std::string& name, const char* what) {
  for (const auto& entry : table) {
    if (name == entry.second) return entry.first;
  }
  std::string expected;
  for (const auto& entry : table) expected += (expected.empty() ? "" : ", ") + std::string(entry.second);
  throw std::invalid_argument("unknown " + std::string(what) + " '" + name + "' (expected: " + expected + ")");
}

template <class Enum, size_t N>
std::string enum_name(const EnumNames<Enum, N>& table, Enum value) {
  for (const auto& entry : table) {
    if (entry.first == value) return entry.second;
  }
  return "?";
}

}  // namespace flowmatch::detail
