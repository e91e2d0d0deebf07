#pragma once
// Wall-clock seconds since a steady_clock time point (the library's own timings: benchmarks, evaluation
// and comparison reports). Private to src/.

#include <chrono>

namespace flowmatch::detail {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace flowmatch::detail
