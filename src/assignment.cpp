#include "flowmatch/assignment.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif
#include <c10/util/Exception.h>

namespace flowmatch {

namespace {

// Jonker & Volgenant's (1987) initialization for a square problem: column reduction (each column's
// cheapest row, v_j = min_i c_ij, assigned when that row is still free) and reduction transfer (a
// row owning exactly one column minimum passes its slack to that column's price). Afterwards every
// assigned row's column minimises c_ij − v_j over j, so with u_i = min_j (c_ij − v_j) the duals are
// feasible and tight on every assigned pair, and the shortest augmenting paths only place the rows
// still free. JV's third step, augmenting row reduction, is left out: on minibatch OT costs
// (8gaussians → moons) it ran close to its n·|free| step limit and doubled the total time.
std::vector<int64_t> jonker_volgenant_initialization(const double* cost, int64_t n, std::vector<double>& u,
                                                     std::vector<double>& v, std::vector<int64_t>& col4row,
                                                     std::vector<int64_t>& row4col) {
  const double inf = std::numeric_limits<double>::infinity();
  // Column reduction, scanning columns in reverse as in the paper.
  std::vector<char> unique(n, 1);
  std::vector<int64_t> argmin(n, 0);
  for (int64_t j = 0; j < n; ++j) v[j] = inf;
  for (int64_t i = 0; i < n; ++i) {
    const double* row = cost + i * n;
    for (int64_t j = 0; j < n; ++j) {
      if (row[j] < v[j]) {
        v[j] = row[j];
        argmin[j] = i;
      }
    }
  }
  for (int64_t j = n - 1; j >= 0; --j) {
    const int64_t i = argmin[j];
    if (col4row[i] < 0) {
      col4row[i] = j;
      row4col[j] = i;
    } else {
      unique[i] = 0;
    }
  }
  // Reduction transfer.
  std::vector<int64_t> free_rows;
  for (int64_t i = 0; i < n; ++i) {
    if (col4row[i] < 0) {
      free_rows.push_back(i);
    } else if (unique[i]) {
      const int64_t j = col4row[i];
      const double* row = cost + i * n;
      double lowest = inf;
      for (int64_t k = 0; k < n; ++k)
        if (k != j) lowest = std::min(lowest, row[k] - v[k]);
      v[j] -= lowest;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const double* row = cost + i * n;
    double lowest = inf;
    for (int64_t j = 0; j < n; ++j) lowest = std::min(lowest, row[j] - v[j]);
    u[i] = lowest;
  }
  return free_rows;
}

// One Dijkstra step of the shortest-augmenting-path search: relax every column with row i,
//   d_j ← min(d_j, (base + c_ij) − w_j),
// and return the first column of least d (its value in `least`). Finished columns carry w_j = −∞
// (so (base + c_ij) − w_j = +∞ never relaxes them) and d_j = +∞ (so they are never picked again):
// the loop needs no mask, no index array and no branch, and vectorises. The predecessor of each
// column is not stored here; it is recovered for the few columns on the augmenting path.
struct ScanResult {
  int64_t column;
  double least;
};

ScanResult scan_row_portable(const double* __restrict row, const double* __restrict w, double* __restrict d,
                             int64_t n, double base) {
  double least = std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    const double r = (base + row[j]) - w[j];
    const double dj = r < d[j] ? r : d[j];
    d[j] = dj;
    least = dj < least ? dj : least;
  }
  for (int64_t j = 0; j < n; ++j) {
    if (d[j] == least) return {j, least};
  }
  return {-1, least};
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FLOWMATCH_ASSIGNMENT_AVX2 1
// The same scan four doubles at a time (AVX2; chosen at run time when the processor has it). The
// arithmetic per element is the portable version's: (base + c) − w, then min.
__attribute__((target("avx2"))) ScanResult scan_row_avx2(const double* __restrict row, const double* __restrict w,
                                                         double* __restrict d, int64_t n, double base) {
  const __m256d b = _mm256_set1_pd(base);
  __m256d least0 = _mm256_set1_pd(std::numeric_limits<double>::infinity()), least1 = least0;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256d r0 = _mm256_sub_pd(_mm256_add_pd(b, _mm256_loadu_pd(row + j)), _mm256_loadu_pd(w + j));
    __m256d r1 = _mm256_sub_pd(_mm256_add_pd(b, _mm256_loadu_pd(row + j + 4)), _mm256_loadu_pd(w + j + 4));
    // min_pd(r, d) returns d when r < d is false, as the portable version.
    r0 = _mm256_min_pd(r0, _mm256_loadu_pd(d + j));
    r1 = _mm256_min_pd(r1, _mm256_loadu_pd(d + j + 4));
    _mm256_storeu_pd(d + j, r0);
    _mm256_storeu_pd(d + j + 4, r1);
    least0 = _mm256_min_pd(r0, least0);
    least1 = _mm256_min_pd(r1, least1);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_min_pd(least0, least1));
  double least = std::min(std::min(lanes[0], lanes[1]), std::min(lanes[2], lanes[3]));
  for (int64_t k = j; k < n; ++k) {
    const double r = (base + row[k]) - w[k];
    const double dk = r < d[k] ? r : d[k];
    d[k] = dk;
    least = dk < least ? dk : least;
  }
  const __m256d target = _mm256_set1_pd(least);
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    const int mask = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(d + k), target, _CMP_EQ_OQ));
    if (mask != 0) return {k + __builtin_ctz(static_cast<unsigned>(mask)), least};
  }
  for (; k < n; ++k) {
    if (d[k] == least) return {k, least};
  }
  return {-1, least};
}
#endif

using ScanFunction = ScanResult (*)(const double*, const double*, double*, int64_t, double);

ScanFunction best_scan() {
#ifdef FLOWMATCH_ASSIGNMENT_AVX2
  if (__builtin_cpu_supports("avx2")) return scan_row_avx2;
#endif
  return scan_row_portable;
}

}  // namespace

// Shortest augmenting paths with dual potentials (u for rows, v for columns). The rows left free
// by the initialization are placed one at a time; for each, a Dijkstra search over reduced costs
// c_ij − u_i − v_j ≥ 0 finds the cheapest path to a free column, the potentials are updated so
// reduced costs stay non-negative, and the path is augmented. Each row scanned costs one pass
// over the columns (`scan_row_*`), so a placement costs O(cols × rows visited).
Assignment solve_assignment(const double* cost, int64_t rows, int64_t cols, bool vectorized) {
  if (rows < 0 || cols < 0) throw std::invalid_argument("solve_assignment: negative size");
  if (rows > cols) {
    throw std::invalid_argument("solve_assignment: needs rows <= cols, got " + std::to_string(rows) +
                                " x " + std::to_string(cols) + " (transpose the cost)");
  }
  for (int64_t k = 0; k < rows * cols; ++k) {
    if (!std::isfinite(cost[k])) {
      throw std::invalid_argument("solve_assignment: non-finite cost at (" + std::to_string(k / cols) +
                                  ", " + std::to_string(k % cols) + ")");
    }
  }
  static const ScanFunction fastest = best_scan();
  const ScanFunction scan = vectorized ? fastest : scan_row_portable;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(rows, 0.0), v(cols, 0.0);
  std::vector<int64_t> col4row(rows, -1), row4col(cols, -1);
  std::vector<int64_t> free_rows;
  if (rows == cols && rows > 1) {
    free_rows = jonker_volgenant_initialization(cost, rows, u, v, col4row, row4col);
  } else {
    free_rows.resize(rows);
    for (int64_t i = 0; i < rows; ++i) free_rows[i] = i;
  }
  // d: tentative distances of the columns not finished; w: v with −∞ on finished columns;
  // final_distance / finished_at: a finished column's distance and the number of rows scanned
  // before it was finished; scanned / bases: the rows scanned and their offsets, in order.
  std::vector<double> d(cols), w(v), final_distance(cols), bases;
  std::vector<int64_t> finished_at(cols), scanned, finished;
  bases.reserve(rows);
  scanned.reserve(rows);
  finished.reserve(cols);
  for (const int64_t current : free_rows) {
    std::fill(d.begin(), d.end(), inf);
    scanned.clear();
    bases.clear();
    finished.clear();
    double min_val = 0.0;
    int64_t i = current;
    int64_t sink = -1;
    while (sink < 0) {
      const double base = min_val - u[i];
      scanned.push_back(i);
      bases.push_back(base);
      const ScanResult next = scan(cost + i * cols, w.data(), d.data(), cols, base);
      if (next.column < 0 || !std::isfinite(next.least)) {
        throw std::runtime_error("solve_assignment: no feasible assignment");
      }
      const int64_t j = next.column;
      min_val = next.least;
      final_distance[j] = min_val;
      finished_at[j] = static_cast<int64_t>(scanned.size());
      d[j] = inf;
      w[j] = -inf;
      finished.push_back(j);
      if (row4col[j] < 0) {
        sink = j;
      } else {
        i = row4col[j];
      }
    }
    u[current] += min_val;
    for (size_t k = 1; k < scanned.size(); ++k) {
      const int64_t r = scanned[k];
      u[r] += min_val - final_distance[col4row[r]];
    }
    // Augment along the path. A finished column's predecessor is the first row, among those
    // scanned before it finished, whose relaxation gave its final distance: recomputed with the
    // scan's own arithmetic, so the comparison is exact.
    int64_t j = sink;
    while (true) {
      int64_t r = -1;
      for (int64_t k = 0; k < finished_at[j]; ++k) {
        if ((bases[k] + cost[scanned[k] * cols + j]) - v[j] == final_distance[j]) {
          r = scanned[k];
          break;
        }
      }
      if (r < 0) throw std::logic_error("solve_assignment: lost the augmenting path");
      row4col[j] = r;
      std::swap(col4row[r], j);
      if (r == current) break;
    }
    for (const int64_t c : finished) {
      v[c] -= min_val - final_distance[c];
      w[c] = v[c];
    }
  }

  Assignment result;
  result.column_of_row = std::move(col4row);
  for (int64_t r = 0; r < rows; ++r) result.total_cost += cost[r * cols + result.column_of_row[r]];
  return result;
}

Assignment solve_assignment(const at::Tensor& cost) {
  TORCH_CHECK(cost.defined() && cost.dim() == 2, "solve_assignment: cost must be a 2-D tensor, got ",
              cost.defined() ? cost.sizes() : at::IntArrayRef{});
  at::Tensor c = cost.to(at::kCPU, at::kDouble).contiguous();
  return solve_assignment(c.data_ptr<double>(), c.size(0), c.size(1));
}

at::Tensor squared_distances(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1),
              "squared_distances: expects (n, D) and (m, D), got ", a.sizes(), " and ", b.sizes());
  at::Tensor bb = b.to(a.options());
  if (a.size(1) <= 8) {
    // Few coordinates: Σ_d (a_id − b_jd)² coordinate by coordinate, exact for equal points (the
    // expanded form below cancels ‖a‖² against 2a·b and leaves rounding residue of order ε‖a‖²).
    if (a.device().is_cpu() && (a.scalar_type() == at::kDouble || a.scalar_type() == at::kFloat) && !a.requires_grad() &&
        !bb.requires_grad()) {
      // The same sums in one loop (the coupling computes this for every minibatch).
      const at::Tensor ac = a.contiguous(), bc = bb.contiguous();
      at::Tensor out = at::empty({a.size(0), bb.size(0)}, a.options());
      AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "squared_distances", [&] {
        const scalar_t* pa = ac.data_ptr<scalar_t>();
        const scalar_t* pb = bc.data_ptr<scalar_t>();
        scalar_t* po = out.data_ptr<scalar_t>();
        const int64_t n = ac.size(0), m = bc.size(0), dims = ac.size(1);
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < m; ++j) {
            scalar_t sum = 0;
            for (int64_t d = 0; d < dims; ++d) {
              const scalar_t diff = pa[i * dims + d] - pb[j * dims + d];
              sum = sum + diff * diff;
            }
            po[i * m + j] = sum;
          }
        }
      });
      return out;
    }
    at::Tensor out = at::zeros({a.size(0), bb.size(0)}, a.options());
    for (int64_t d = 0; d < a.size(1); ++d) {
      out.add_((a.select(1, d).unsqueeze(1) - bb.select(1, d).unsqueeze(0)).square_());
    }
    return out;
  }
  at::Tensor a2 = a.square().sum(1, true);
  at::Tensor b2 = bb.square().sum(1).unsqueeze(0);
  return at::addmm(a2 + b2, a, bb.t(), 1.0, -2.0).clamp_min_(0.0);
}

}  // namespace flowmatch
