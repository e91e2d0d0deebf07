#include "flowmatch/assignment.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace flowmatch {

// Shortest augmenting paths with dual potentials (u for rows, v for columns). Rows are added
// one at a time; for each, a Dijkstra search over reduced costs c_ij − u_i − v_j ≥ 0 finds the
// cheapest path to a free column, the potentials are updated so reduced costs stay
// non-negative, and the path is augmented. Each row costs O(cols × rows visited).
Assignment solve_assignment(const double* cost, int64_t rows, int64_t cols) {
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
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(rows, 0.0), v(cols, 0.0), shortest(cols);
  std::vector<int64_t> path(cols, -1), col4row(rows, -1), row4col(cols, -1), remaining(cols);
  std::vector<char> row_seen(rows), col_seen(cols);

  for (int64_t current = 0; current < rows; ++current) {
    double min_val = 0.0;
    int64_t i = current;
    int64_t num_remaining = cols;
    for (int64_t j = 0; j < cols; ++j) remaining[j] = cols - 1 - j;
    std::fill(row_seen.begin(), row_seen.end(), 0);
    std::fill(col_seen.begin(), col_seen.end(), 0);
    std::fill(shortest.begin(), shortest.end(), inf);
    int64_t sink = -1;
    while (sink == -1) {
      row_seen[i] = 1;
      const double* row = cost + i * cols;
      const double base = min_val - u[i];
      int64_t index = -1;
      double lowest = inf;
      for (int64_t it = 0; it < num_remaining; ++it) {
        const int64_t j = remaining[it];
        const double reduced = base + row[j] - v[j];
        if (reduced < shortest[j]) {
          path[j] = i;
          shortest[j] = reduced;
        }
        if (shortest[j] < lowest || (shortest[j] == lowest && row4col[j] == -1)) {
          lowest = shortest[j];
          index = it;
        }
      }
      min_val = lowest;
      if (index < 0 || !std::isfinite(min_val)) {
        throw std::runtime_error("solve_assignment: no feasible assignment");
      }
      const int64_t j = remaining[index];
      if (row4col[j] == -1) {
        sink = j;
      } else {
        i = row4col[j];
      }
      col_seen[j] = 1;
      remaining[index] = remaining[--num_remaining];
    }
    u[current] += min_val;
    for (int64_t r = 0; r < rows; ++r) {
      if (row_seen[r] && r != current) u[r] += min_val - shortest[col4row[r]];
    }
    for (int64_t c = 0; c < cols; ++c) {
      if (col_seen[c]) v[c] -= min_val - shortest[c];
    }
    int64_t j = sink;
    while (true) {
      const int64_t r = path[j];
      row4col[j] = r;
      std::swap(col4row[r], j);
      if (r == current) break;
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
  at::Tensor a2 = a.square().sum(1, true);
  at::Tensor b2 = bb.square().sum(1).unsqueeze(0);
  return at::addmm(a2 + b2, a, bb.t(), 1.0, -2.0).clamp_min_(0.0);
}

}  // namespace flowmatch
