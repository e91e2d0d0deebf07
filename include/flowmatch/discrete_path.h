#pragma once
/// \file
/// Discrete flow matching (Gat et al. 2024, "Discrete Flow Matching"; Campbell et al. 2024): data are
/// sequences of L tokens in {0, …, V − 1}, shaped (B, L) int64. The mixture path keeps each token of
/// the data with probability κ_t and otherwise shows the source's token,
///   x_t^i = x₁^i with probability κ_t, else x₀^i,
/// with x₀ uniform over the vocabulary or a mask token (the extra id V). A network gives per-token
/// logits of the posterior p_θ(x₁^i | x_t) (B, L, V); a continuous-time Markov chain whose rates come
/// from that posterior carries the source to the data (`solve_ctmc_euler`), and the generalized KL
/// bounds the likelihood (`discrete_negative_elbo`).
///
/// κ_t is the α_t of a convex scheduler (α₀ = 0, α₁ = 1, α + σ = 1): "linear" (condot with σ_min = 0,
/// κ = t) or "poly:n" (κ = tⁿ, n >= 1 so that κ̇ is finite); κ̇ is its α̇ and κ⁻¹ its `time_at_snr(κ / (1 − κ))`.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include "flowmatch/paths.h"
#include "flowmatch/solvers.h"

namespace flowmatch {

enum class DiscreteSource { Uniform, Mask };
DiscreteSource discrete_source_from_string(const std::string& name);
std::string to_string(DiscreteSource source);

/// A κ scheduler from its command-line name: "linear" or "poly:n" (1 <= n <= 100); std::invalid_argument else.
std::shared_ptr<Scheduler> make_kappa_scheduler(const std::string& name);

class MixtureDiscretePath : public ProbabilityPath {
 public:
  /// `kappa` must be convex (α₀ = 0, α₁ = 1); `vocabulary` V >= 2 data tokens.
  MixtureDiscretePath(std::shared_ptr<const Scheduler> kappa, DiscreteSource source, int64_t vocabulary);
  /// x₀, x₁: (B, L) int64 tokens; t: (B). x_t is int64; `velocity` is left undefined (the target is x₁).
  PathSample sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  /// {"type": "mixture-discrete", "scheduler": κ's spec, "source": "uniform"|"mask", "vocabulary": V}.
  nlohmann::json spec() const override;
  const std::shared_ptr<const Scheduler>& kappa() const { return kappa_; }
  /// κ_t and κ̇_t at times t (float64 tensors shaped like t).
  std::pair<at::Tensor, at::Tensor> kappa_at(const at::Tensor& t) const;
  /// κ⁻¹: the times at which κ takes the values k ∈ [0, 1].
  at::Tensor kappa_inverse(const at::Tensor& k) const;
  DiscreteSource source() const { return source_; }
  /// V: the tokens the data and the posterior range over.
  int64_t vocabulary() const { return vocabulary_; }
  /// The ids a network reads: V, or V + 1 with the mask token.
  int64_t input_vocabulary() const { return vocabulary_ + (source_ == DiscreteSource::Mask ? 1 : 0); }
  /// The mask token's id (V); −1 for the uniform source.
  int64_t mask_token() const { return source_ == DiscreteSource::Mask ? vocabulary_ : -1; }
  /// n source sequences of `length` tokens (int64).
  at::Tensor sample_source(int64_t n, int64_t length, at::Generator& generator) const;
  /// The source's probabilities over the input vocabulary (float64, input_vocabulary()).
  at::Tensor source_probabilities() const;

 private:
  std::shared_ptr<const Scheduler> kappa_;
  DiscreteSource source_;
  int64_t vocabulary_;
};

/// The generalized KL of the mixture path per token (Shaul et al. 2024; flow_matching's
/// MixturePathGeneralizedKL), for logits (B, L, V) of p_θ(x₁ | x_t), data x₁ and path points x_t
/// (B, L), times t (B):
///   ℓ = −κ̇/(1 − κ)·[p_θ(x_t | x_t) − δ(x₁, x_t) + (1 − δ(x₁, x_t))·log p_θ(x₁ | x_t)]   (B, L),
/// where p_θ(x_t | x_t) is 0 where x_t is the mask token. ℓ ≥ 0, and 0 where x_t = x₁ and
/// p_θ(x₁ | x_t) = 1 (e.g. the mask source's true posterior). Its integral over t ∈ [0, 1) and the path's x_t, summed over tokens, is −ELBO ≥ −log p_θ(x₁).
at::Tensor generalized_kl(const at::Tensor& logits, const at::Tensor& x1, const at::Tensor& x_t, const at::Tensor& t,
                         const MixtureDiscretePath& path);

/// The posterior a sampler or a bound uses: logits (B, L, V) of p(x₁ | x_t) for tokens x_t (B, L)
/// at times t (B) (the VelocityField type: a network's forward).
using PosteriorField = VelocityField;

struct DiscreteELBOOptions {
  /// Strata of κ ∈ [0, 1 − ε): one κ drawn uniformly in each, one x_t per κ and sequence.
  TORCH_ARG(int64_t, time_points) = 64;
  /// ε: the integral stops at κ = 1 − ε (flow_matching's text evaluation: 10⁻³). The true posterior's
  /// integrand is integrable up to κ = 1 (ε = 0 is exact for it), a learned network's is not: its
  /// weight 1/(1 − κ) meets a network that is never perfectly sure of x_t = x₁.
  TORCH_ARG(double, epsilon) = 1e-3;
  /// Sequences evaluated at once (memory).
  TORCH_ARG(int64_t, chunk) = 4096;
};

/// −ELBO per sequence (B, float64, nats, summed over its tokens) for data x₁ (B, L): the stratified
/// Monte Carlo estimate of ∫₀¹ E_{x_t ~ p_t(·|x₁)} Σ_i ℓ_i dt, written in κ (dt κ̇/(1 − κ) = dκ/(1 − κ),
/// as flow_matching's text evaluation) and cut at κ = 1 − ε; `time_points` posterior calls.
at::Tensor discrete_negative_elbo(const PosteriorField& posterior, const at::Tensor& x1, const MixtureDiscretePath& path,
                                  const DiscreteELBOOptions& options, at::Generator& generator);

/// The CTMC Euler sampler (Gat et al. 2024; flow_matching's MixtureDiscreteEulerSolver) on the grid of
/// `options` (steps, t0 = 0, t1 = 1): at each step x̂₁ ~ p(x₁ | x_t); each token jumps to x̂₁ with
/// probability 1 − exp(−h·κ̇/(1 − κ)) (where x̂₁ differs from it); the last step lands on t = 1 by taking
/// x̂₁. With a corrector c(t) > 0 (`options.corrector()`) the rates gain the divergence-free term
/// c·κ̇/(κ(1 − κ))·((1 − κ)p₀ + κ δ_x̂₁) and the jump target is drawn from the rates. NFE = steps.
/// `options.path()` must be a MixtureDiscretePath; x0 (B, L) int64 source tokens.
SolveResult solve_ctmc_euler(const PosteriorField& posterior, const at::Tensor& x0, const SolverOptions& options);

/// The corrector coefficient of the CTMC sampler from "A", "A:a" or "A:a:b": c(t) = A·tᵃ·(1 − t)ᵇ
/// (A ≥ 0; a, b ≥ 0; b = 0 and a = 0 when not given), after Gat et al.'s corrector schedule
/// α t^a (1 − t)^b. std::invalid_argument names a malformed or negative value.
std::function<double(double)> corrector_schedule(const std::string& spec);

}  // namespace flowmatch
