#pragma once
/// \file
/// Prediction targets: a network may be trained to predict the velocity, the data x₁, the noise
/// x₀ or the score ∇log p_t; on an affine Gaussian path (x = α·x₁ + σ·x₀, x₀ ~ N(0, I)) each
/// is an affine function of any other given x and t, so a model trained on one target samples
/// through the same solvers. Formulas in docs/PATHS.md.

#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "flowmatch/paths.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

enum class PredictionTarget {
  Velocity,  ///< u = α̇·x₁ + σ̇·x₀
  Data,      ///< x₁ (the "x-prediction" / denoiser)
  Noise,     ///< x₀ (ε-prediction)
  Score,     ///< ∇ₓ log p_t(x) = −x₀/σ (for a standard-normal source)
};
PredictionTarget prediction_target_from_string(const std::string& name);
std::string to_string(PredictionTarget target);
/// velocity, data, noise, score.
std::vector<std::string> prediction_target_names();

/// Converts a prediction `value` of kind `from` at (x, t) into kind `to` for the scheduler's path:
/// both are first mapped to the pair (x̂₁, x̂₀) with x = α·x̂₁ + σ·x̂₀. `t` has shape (B), or is a
/// scalar; α = 0 (noise/score → data at t = 0 of CondOT) or σ = 0 (data → noise at t = 1) divide
/// by zero: those ends are for the caller to avoid (see `velocity_from_prediction`).
at::Tensor convert_prediction(const at::Tensor& value, PredictionTarget from, PredictionTarget to, const at::Tensor& x,
                              const at::Tensor& t, const Scheduler& scheduler);

/// Throws std::invalid_argument when a network predicting `target` cannot be trained on `path`: every
/// target but velocity needs an affine Gaussian path without interpolant noise (otherwise x_t is not
/// α·x₁ + σ·x₀ and the other targets do not convert).
void check_prediction_target(const ProbabilityPath& path, PredictionTarget target);

/// The regression target of kind `target` for a path draw (x₁, x₀, the velocity, or −x₀/σ_t).
/// Throws as `check_prediction_target` does.
at::Tensor regression_target(const ProbabilityPath& path, const PathSample& sample, PredictionTarget target);

/// A velocity field from a network that predicts `target`: v(x, t) = convert(f(x, t)). For targets
/// other than velocity the conversion divides by α or σ, which vanish at an end of most paths; there
/// the network and the conversion are evaluated at t clamped to [time_margin, 1 − time_margin] (an
/// end where α₀ > 0 or σ₁ > 0 is not moved).
VelocityField velocity_from_prediction(VelocityField predictor, PredictionTarget target,
                                       std::shared_ptr<const Scheduler> scheduler, double time_margin = 1e-3);

/// Options for `schedule_transformed_field`.
struct ScheduleTransformOptions {
  /// The transformation's coefficients are evaluated at times clamped to [margin, 1 − margin],
  /// where every scheduler is finite (VP's σ̇ and the SNR derivatives diverge at the ends).
  TORCH_ARG(double, time_margin) = 1e-5;
};

/// Samples a velocity field trained with scheduler `trained` as if it had been trained with
/// `wanted` (Pooladian et al. / the flow-matching guide, "schedule transform"): with r the new
/// time, t_r the trained time of equal SNR and s_r = σ̄_r / σ_{t_r},
///   ū(x, r) = (ṡ_r / s_r)·x + s_r·ṫ_r·u(x / s_r, t_r).
/// For the marginal velocity field this is exact: the new field generates the marginals of the
/// `wanted` path, with the same final distribution. The field is evaluated in float64 internally
/// for the coefficients; x keeps its dtype.
VelocityField schedule_transformed_field(VelocityField field, std::shared_ptr<const Scheduler> trained,
                                         std::shared_ptr<const Scheduler> wanted,
                                         ScheduleTransformOptions options = {});

}  // namespace flowmatch
