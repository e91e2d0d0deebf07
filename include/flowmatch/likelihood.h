#pragma once
/// \file
/// Log-likelihoods of a continuous normalizing flow by the continuity equation:
///   log p₁(x₁) = log p₀(x₀) − ∫₀¹ div v(x_t, t) dt,
/// integrating the state and the divergence together with any solver of solvers.h.

#include <functional>
#include <optional>
#include <utility>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <torch/arg.h>

#include "flowmatch/solvers.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

/// Exact: one vector-Jacobian product per dimension (batched over samples). Hutchinson:
/// E[εᵀ (∂v/∂x) ε] with k probes drawn once per solve.
enum class DivergenceMethod { Exact, Hutchinson };
enum class ProbeDistribution { Rademacher, Gaussian };

/// v(x, t) and div_x v(x, t) per sample, from one call.
using FieldWithDivergence = std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>;

/// Options for `log_likelihood` and `sample_with_log_likelihood`.
struct LikelihoodOptions {
  /// The solver for the augmented state (default: Dopri5, atol = rtol = 1e-5).
  TORCH_ARG(SolverOptions, solver) = SolverOptions().method(SolverMethod::Dopri5);
  TORCH_ARG(DivergenceMethod, divergence) = DivergenceMethod::Exact;
  TORCH_ARG(int64_t, probes) = 1;
  TORCH_ARG(ProbeDistribution, probe_distribution) = ProbeDistribution::Rademacher;
  /// Keep the graph so the log-likelihood can be differentiated (a training loss). The caller
  /// must have gradient mode enabled.
  TORCH_ARG(bool, create_graph) = false;
  /// The source at t = 0 is N(0, s² I) (s = σ₀ of the path, e.g. σ_max for VE; 1 for CondOT and VP).
  TORCH_ARG(double, source_scale) = 1.0;
  /// The source's log-density per row, replacing N(0, s² I) when set. Unset on a curved manifold (the
  /// solver's `manifold()`), the source is its uniform distribution: −log volume.
  TORCH_ARG(std::function<at::Tensor(const at::Tensor&)>, source_log_density) = {};
  /// The field and its exact divergence in one call (e.g. a model's `forward_with_divergence`): used
  /// instead of autograd for the exact divergence in flat space without `create_graph`. It must be
  /// the same field as the one given to the solve.
  TORCH_ARG(FieldWithDivergence, field_with_divergence) = {};
};
// On a manifold (the solver's `manifold()`), the state is projected after each step, the field must
// be tangent, and the divergence is the manifold's: Manifold::tangent_trace of the Jacobian (exact),
// or Hutchinson's estimate with probes projected to the tangent space.

struct LikelihoodResult {
  at::Tensor log_prob;  ///< (B): log p₁ at the data points (or at the generated points)
  at::Tensor x0;        ///< (B, ...): the source-side points
  at::Tensor x1;        ///< (B, ...): the data-side points
  int64_t nfe = 0;      ///< solver evaluations of the augmented field
};

/// log N(x; 0, I) summed over all but the first dimension.
at::Tensor standard_normal_log_density(const at::Tensor& x);
/// log N(x; 0, s² I) = log N(x/s; 0, I) − D log s.
at::Tensor normal_log_density(const at::Tensor& x, double scale);

/// div_x v(x, t) per sample (B), exactly. Needs x of shape (B, D...).
at::Tensor divergence_exact(const VelocityField& field, const at::Tensor& x, const at::Tensor& t, bool create_graph = false);
/// Hutchinson's estimate with the given probes (k, B, D...): mean over k of εᵀ (∂v/∂x) ε.
at::Tensor divergence_hutchinson(const VelocityField& field, const at::Tensor& x, const at::Tensor& t,
                                 const at::Tensor& probes, bool create_graph = false);

/// log p₁(x1) for a flow whose source density at t = 0 is N(0, I): solves from t = 1 back to 0.
/// The solver's t0/t1 are ignored (the grid runs 1 → 0).
LikelihoodResult log_likelihood(const VelocityField& field, const at::Tensor& x1, const LikelihoodOptions& options = {},
                                std::optional<at::Generator> generator = std::nullopt);

/// Joint sampling and likelihood in one forward solve: from x0 ~ N(0, I) at t = 0 to x1 at t = 1,
/// carrying log p₀(x0) − ∫ div v dt, so log_prob is log p₁ at the generated points.
LikelihoodResult sample_with_log_likelihood(const VelocityField& field, const at::Tensor& x0,
                                            const LikelihoodOptions& options = {},
                                            std::optional<at::Generator> generator = std::nullopt);

/// Bits per dimension of 8-bit data with uniform dequantization, from an NLL in nats of data scaled to
/// [0, 1] (offset 8) or [−1, 1] (offset 7): bpd = nll / (D ln 2) + offset.
double bits_per_dimension(double nll_nats, int64_t dimensions, bool scaled_to_minus_one_one = false);

}  // namespace flowmatch
