#pragma once
/// \file
/// Metrics: distances between point sets, and the straightness and path energy of a flow
/// measured along its own ODE trajectories (definitions in ../shared/PROTOCOLS.md).

#include <cstdint>

#include <vector>

#include <ATen/Tensor.h>
#include <torch/arg.h>

#include "flowmatch/solvers.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch::metrics {

/// Exact 2-Wasserstein distance between two empirical measures with uniform weights and
/// squared Euclidean ground cost, computed in float64: W2 = sqrt(min_π Σ π_ij ‖a_i − b_j‖²).
/// For equal sizes the optimal plan is a permutation (solved exactly by linear assignment).
/// For unequal sizes, LEMON's network simplex on integer supplies (exact).
/// a: (n, D), b: (m, D). Throws on shape mismatch or non-finite input.
double wasserstein2(const at::Tensor& a, const at::Tensor& b);

/// Squared maximum mean discrepancy with a mixture of RBF kernels, as TorchCFM reports it
/// (`mix_rbf_mmd2`, biased): k(x, y) = Σ_σ exp(−‖x − y‖² / (2σ²)) and
///   MMD² = mean k(a, a) + mean k(b, b) − 2 mean k(a, b),
/// in float64, with TorchCFM's bandwidths σ ∈ {0.01, 0.1, 1, 10, 100} by default.
double rbf_mmd2(const at::Tensor& a, const at::Tensor& b, const std::vector<double>& sigmas = {0.01, 0.1, 1, 10, 100});

/// How `trajectory_metrics` integrates the flow.
struct TrajectoryMetricsOptions {
  /// The solver whose trajectories are measured (any fixed-step method).
  TORCH_ARG(SolverMethod, method) = SolverMethod::Euler;
  TORCH_ARG(int64_t, steps) = 100;
};

struct TrajectoryMetrics {
  /// S = ∫₀¹ E‖(X₁ − X₀) − v(X_t, t)‖² dt (rectified flow's straightness; 0 for straight flows).
  double straightness = 0;
  /// E ∫₀¹ ‖v(X_t, t)‖² dt.
  double path_energy = 0;
  /// W2²(source samples, target samples), exact.
  double w2_squared = 0;
  /// |path_energy − w2_squared| / w2_squared (TorchCFM's NPE).
  double normalized_path_energy = 0;
  /// The trajectories' end points X₁.
  at::Tensor x1;
  /// Velocity evaluations: the solve plus one per grid time.
  int64_t nfe = 0;
};

/// Solves dx/dt = v from x0 (n, D) on a uniform grid, evaluates v at every grid state and
/// integrates ‖v‖² and ‖(X₁ − X₀) − v‖² with the trapezoidal rule (error O(1/steps²)); W2² is between
/// x0 and `target` (m, D), exact. Runs without gradients. Throws std::invalid_argument for bad
/// shapes or an adaptive method.
TrajectoryMetrics trajectory_metrics(const VelocityField& field, const at::Tensor& x0, const at::Tensor& target,
                                     const TrajectoryMetricsOptions& options = {});

/// Mean (D) and covariance (D, D) of feature vectors (N, D), N ≥ 2, in float64 (unbiased covariance).
struct GaussianStatistics {
  at::Tensor mean, covariance;
};
GaussianStatistics gaussian_statistics(const at::Tensor& features);

/// Fréchet distance between the Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂) (FID's formula, here on any features):
///   ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2},
/// the matrix square roots by symmetric eigendecomposition (negative rounding eigenvalues clamped to 0).
double frechet_distance(const GaussianStatistics& a, const GaussianStatistics& b);
/// Fréchet distance between the Gaussians fitted to two feature sets (N, D) and (M, D).
double frechet_distance(const at::Tensor& features_a, const at::Tensor& features_b);

}  // namespace flowmatch::metrics
