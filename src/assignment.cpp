#include "flowmatch/assignment.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
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

}  // namespace

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
  std::vector<int64_t> free_rows;
  if (rows == cols && rows > 1) {
    free_rows = jonker_volgenant_initialization(cost, rows, u, v, col4row, row4col);
  } else {
    free_rows.resize(rows);
    for (int64_t i = 0; i < rows; ++i) free_rows[i] = i;
  }

  for (const int64_t current : free_rows) {
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
  if (a.size(1) <= 8) {
    // Few coordinates: Σ_d (a_id − b_jd)² column by column, exact for equal points (the expanded
    // form below cancels ‖a‖² against 2a·b and leaves rounding residue of order ε‖a‖²).
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
