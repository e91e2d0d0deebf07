#pragma once
/// \file
/// Discrete optimal transport between two point sets with uniform weights: the exact plan
/// (linear assignment for equal sizes, LEMON's network simplex otherwise) and the entropic plan
/// (Sinkhorn's iterations in the log domain, so a small regularization does not overflow).

#include <cstdint>

#include <ATen/Tensor.h>
#include <torch/arg.h>

namespace flowmatch {

/// A transport plan π between n sources and m targets with uniform weights: π is (n, m),
/// float64, rows sum to 1/n and columns to 1/m (within `marginal_error` for Sinkhorn).
struct TransportPlan {
  at::Tensor plan;
  /// Σ_ij π_ij C_ij: the transport cost of the plan (without the entropy term).
  double cost = 0.0;
  /// Sinkhorn: iterations made (over all ε stages); 0 for exact plans.
  int64_t iterations = 0;
  /// ‖π1 − 1/n‖₁ + ‖πᵀ1 − 1/m‖₁ of the returned plan (0 up to rounding for exact plans).
  double marginal_error = 0.0;
  /// Sinkhorn: whether `marginal_error` met the tolerance within the iterations allowed.
  bool converged = true;
};

/// The exact optimal plan for the cost matrix (n, m), finite entries. For n = m it is a
/// permutation (each π_ij ∈ {0, 1/n}); otherwise the network simplex on integer supplies m/g and
/// n/g (g = gcd(n, m)) makes it exact, with at most n + m − 1 non-zero entries.
/// Throws std::invalid_argument for an empty or non-finite cost.
TransportPlan exact_transport(const at::Tensor& cost);

/// Options for `sinkhorn`.
struct SinkhornOptions {
  /// Entropic regularization ε, in the cost's units: min ⟨π, C⟩ − ε H(π).
  TORCH_ARG(double, reg) = 0.05;
  /// Most iterations (one row and one column update each), counting the ε-scaling stages.
  TORCH_ARG(int64_t, max_iterations) = 2000;
  /// Stop when ‖π1 − 1/n‖₁ (columns are exact after each update) is at most this.
  TORCH_ARG(double, tolerance) = 1e-6;
  /// Start at ε = max C and halve it, a few iterations per stage, down to `reg` (same fixed point,
  /// far fewer iterations at small ε).
  TORCH_ARG(bool, epsilon_scaling) = true;
};

/// Throws std::invalid_argument naming the first bad option.
void validate(const SinkhornOptions& options);

/// The entropic plan π = exp((f_i + g_j − C_ij)/ε) with dual potentials f, g updated in the log
/// domain. Never throws for non-convergence: check `converged`. The plan's cost satisfies
/// 0 ≤ ⟨π_ε, C⟩ − OT ≤ ε·log m at convergence.
TransportPlan sinkhorn(const at::Tensor& cost, const SinkhornOptions& options = {});

}  // namespace flowmatch
