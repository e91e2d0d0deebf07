#pragma once
/// \file
/// The autoregressive baseline for token data, run by the same tool as discrete flow matching so that
/// bits per character compare at equal network and budget: a causal network (the `transformer` with
/// `causal`, models/transformer.h) whose logits at position i are those of p(x_i | x_<i). Training is
/// next-token cross-entropy (`AutoregressiveObjective`), the likelihood is exact (the chain rule), and
/// sampling draws the tokens left to right (solver `autoregressive`, NFE = L).

#include <ATen/Tensor.h>

#include "flowmatch/objective.h"
#include "flowmatch/solvers.h"

namespace flowmatch {

/// −1/(B·L) Σ log p_θ(x_i | x_<i) over the batch's data x₁ (B, L): the model is called on x₁ at t = 0
/// (a causal network's time embedding is a constant). Registered as "autoregressive".
class AutoregressiveObjective : public Objective {
 public:
  std::string name() const override { return "autoregressive"; }
  nlohmann::json spec() const override { return {{"type", "autoregressive"}}; }
  at::Tensor loss(models::VelocityModel& model, const TrainingBatch& batch) const override;
};

/// −log p_θ(x) per sequence (B, float64, nats) of tokens x (B, L) under a causal network `model`
/// ((B, L) ids, t → logits (B, L, V) of p(x_i | x_<i)), `chunk` sequences per call.
at::Tensor autoregressive_negative_log_likelihood(const VelocityField& model, const at::Tensor& x, int64_t chunk = 1024);

/// Draws x_0, x_1, …, x_{L−1} in turn from the causal network's p(x_i | x_<i), one call per position
/// (NFE = L; x0 (B, L) int64 gives the shape, its ids are overwritten); `options.generator()` draws
/// (on the CPU generator), `options.categorical_float64()` draws from float64 probabilities.
SolveResult sample_autoregressive(const VelocityField& model, const at::Tensor& x0, const SolverOptions& options);

}  // namespace flowmatch
