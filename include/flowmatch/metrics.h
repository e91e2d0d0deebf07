#pragma once
/// \file
/// Metrics as pure functions of tensors.

#include <ATen/Tensor.h>

namespace flowmatch::metrics {

/// Exact 2-Wasserstein distance between two empirical measures with uniform weights and
/// squared Euclidean ground cost, computed in float64: W2 = sqrt(min_π Σ π_ij ‖a_i − b_j‖²).
/// For equal sizes the optimal plan is a permutation (solved exactly by linear assignment).
/// a: (n, D), b: (n, D). Throws std::invalid_argument on shape mismatch or non-finite input.
double wasserstein2(const at::Tensor& a, const at::Tensor& b);

}  // namespace flowmatch::metrics
