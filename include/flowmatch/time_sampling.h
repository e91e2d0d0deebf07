#pragma once
/// \file
/// How training draws t ∈ [0, 1] (t = 0 noise, t = 1 data), and an optional per-sample loss weight
/// as a function of t. Formulas in docs/PATHS.md.

#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/arg.h>

namespace flowmatch {

class Scheduler;

enum class TimeDistribution {
  Uniform,      ///< t ~ U[0, 1)
  LogitNormal,  ///< logit(t) ~ N(location, scale²) (SD3's rf/lognorm)
  ModeScaled,   ///< t = u + s·(cos²(πu/2) − 1 + u), u ~ U[0, 1) (SD3's mode sampling; s = mode_scale)
  Constant,     ///< t = constant_time for every sample (one-step distillation trains at t = 0)
  Discrete,     ///< t = 1 − n/N, n uniform in {1, …, N} (N = discrete_steps): DDPM's training on its chain
};
TimeDistribution time_distribution_from_string(const std::string& name);
std::string to_string(TimeDistribution distribution);
/// uniform, logit-normal, mode, constant, discrete.
std::vector<std::string> time_distribution_names();

enum class LossWeighting {
  None,
  /// w(t) = the logit-normal(location, scale) density: uniform times weighted so are, in expectation,
  /// the logit-normal sampling of the same loss.
  LogitNormal,
  /// w(t) = σ_t² of the path's scheduler (Song et al.'s λ(t) for score matching: it turns the score
  /// loss into the noise-prediction loss).
  SigmaSquared,
};
LossWeighting loss_weighting_from_string(const std::string& name);
std::string to_string(LossWeighting weighting);

/// Options for `sample_times` and `loss_weights`.
struct TimeSamplingOptions {
  TORCH_ARG(TimeDistribution, distribution) = TimeDistribution::Uniform;
  TORCH_ARG(LossWeighting, weighting) = LossWeighting::None;
  /// Mean and standard deviation of logit(t) (logit-normal sampling and weighting).
  TORCH_ARG(double, location) = 0.0;
  TORCH_ARG(double, scale) = 1.0;
  /// s of mode sampling, in [−1, 2/(π − 2)] so that the map u ↦ t is monotone; 0 is uniform.
  TORCH_ARG(double, mode_scale) = 1.29;
  /// The time of TimeDistribution::Constant, in [0, 1].
  TORCH_ARG(double, constant_time) = 0.0;
  /// N of TimeDistribution::Discrete (DDPM's 1000 steps).
  TORCH_ARG(int64_t, discrete_steps) = 1000;
  /// Times are scaled into [0, max_time] (in (0, 1]); discrete runs use 1 − 10⁻³, where the weight of
  /// the generalized KL, κ̇/(1 − κ), is still finite.
  TORCH_ARG(double, max_time) = 1.0;
};

/// Throws std::invalid_argument naming a bad value.
void validate(const TimeSamplingOptions& options);

/// n times in [0, 1] (float32) drawn with `generator`.
at::Tensor sample_times(int64_t n, const TimeSamplingOptions& options, at::Generator& generator);

/// Per-sample loss weights for times t (undefined tensor for LossWeighting::None). SigmaSquared needs
/// the path's `scheduler` (std::invalid_argument when it is null).
at::Tensor loss_weights(const at::Tensor& t, const TimeSamplingOptions& options, const Scheduler* scheduler = nullptr);

/// The logit-normal density at t ∈ (0, 1): exp(−(logit t − m)²/(2s²)) / (s√(2π)·t(1 − t)).
at::Tensor logit_normal_density(const at::Tensor& t, double location, double scale);

nlohmann::json to_json(const TimeSamplingOptions& options);
/// Missing keys keep their defaults; throws std::invalid_argument on unknown names or bad values.
TimeSamplingOptions time_sampling_from_json(const nlohmann::json& j);

/// SD3's time shift of a sampling grid (Esser et al. 2024): in the noise fraction σ = 1 − t, a uniform
/// grid σ_k = 1 − k/steps becomes σ'_k = s·σ_k / (1 + (s − 1)·σ_k), so s > 1 spends more steps near the
/// noise (SD3 takes s = √(m/n) for m pixels against a base resolution of n; its 1024² models use 3).
/// Returns the steps + 1 times t' = 1 − σ' from 0 to 1, strictly increasing; s = 1 is the uniform grid.
/// std::invalid_argument for steps < 1 or s outside (0, 1000].
std::vector<double> shifted_time_grid(int64_t steps, double shift);

}  // namespace flowmatch
