#pragma once
/// \file
/// Exact linear assignment (the optimal-transport plan between two equal-size point sets
/// with uniform weights is a permutation): a shortest-augmenting-path solver with dual
/// potentials (Jonker–Volgenant family), O(n³) worst case, exact in double precision.

#include <cstdint>
#include <vector>

#include <ATen/Tensor.h>

namespace flowmatch {

/// The solution of a rows × cols assignment problem (rows ≤ cols).
struct Assignment {
  /// column_of_row[i]: the column assigned to row i (each column used at most once).
  std::vector<int64_t> column_of_row;
  /// Σ_i cost[i][column_of_row[i]].
  double total_cost = 0.0;
};

/// Minimises Σ_i cost[i][σ(i)] over injective σ. `cost` is a row-major rows×cols array with
/// rows ≤ cols and finite entries. Throws std::invalid_argument otherwise. The inner loop (one pass
/// over the columns per row visited) uses AVX2 when the processor has it; `vectorized = false`
/// forces the portable loop, which does the same arithmetic and returns the same assignment.
Assignment solve_assignment(const double* cost, int64_t rows, int64_t cols, bool vectorized = true);

/// Same, for a 2-D tensor (converted to contiguous float64 on the CPU).
Assignment solve_assignment(const at::Tensor& cost);

/// Squared Euclidean distances between the rows of a (n, D) and b (m, D), in a's dtype, ≥ 0
/// (coordinate by coordinate for D ≤ 8, so equal points are at distance exactly 0; by one matrix
/// product above).
at::Tensor squared_distances(const at::Tensor& a, const at::Tensor& b);

}  // namespace flowmatch
