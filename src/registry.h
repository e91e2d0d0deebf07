#pragma once
// The registries behind register_model, register_solver, register_domain and register_objective:
// named entries in registration order, a later registration of a name replacing the earlier one,
// safe to use from several threads.

#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace flowmatch::detail {

template <typename Entry>
class Registry {
 public:
  /// Adds `entry` under `name`, or replaces the entry of that name in place.
  void add(const std::string& name, Entry entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& e : entries_) {
      if (e.first == name) {
        e.second = std::move(entry);
        return;
      }
    }
    entries_.emplace_back(name, std::move(entry));
  }
  std::optional<Entry> find(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& e : entries_)
      if (e.first == name) return e.second;
    return std::nullopt;
  }
  /// A copy of every (name, entry), in registration order.
  std::vector<std::pair<std::string, Entry>> entries() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entries_;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries()) out.push_back(e.first);
    return out;
  }
  /// "a, b, c": the names for error messages.
  std::string known() const {
    std::string out;
    for (const auto& name : names()) out += (out.empty() ? "" : ", ") + name;
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, Entry>> entries_;
};

}  // namespace flowmatch::detail
