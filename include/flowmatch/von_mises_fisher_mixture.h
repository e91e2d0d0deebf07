#pragma once
/// \file
/// A mixture of von Mises–Fisher distributions on the sphere S² ⊂ R³, fitted by EM: the classical
/// parametric density for directions (the Kent mixture's isotropic cousin), and a data-fitted source
/// for flows on the sphere (`--source vmf-mixture:K`, docs/MANIFOLDS.md):
///   p(x) = Σ_k w_k κ_k / (4π sinh κ_k) · exp(κ_k μ_k·x)   against the area measure (total 4π).
/// The normaliser is computed as log κ − log 2π − κ − log(1 − e^(−2κ)), finite for large κ; a κ
/// below 1e-8 (0 included) counts as 1e-8, where the density is 1/(4π) to 1e-8.

#include <cstdint>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json_fwd.hpp>

namespace flowmatch {

struct VonMisesFisherMixture {
  at::Tensor weights;  ///< (K), summing to 1
  at::Tensor means;    ///< (K, 3) unit vectors
  at::Tensor kappas;   ///< (K) concentrations > 0

  /// std::invalid_argument unless the shapes agree, the weights are positive and sum to 1 (to 1e-6),
  /// the means are unit vectors (to 1e-6) and the concentrations are positive and finite.
  void check() const;
  /// log p per row of unit vectors (N, 3), float64.
  at::Tensor log_density(const at::Tensor& x) const;
  /// n points drawn exactly (a component by its weight, then Wood's inversion for S²:
  /// μ·x = 1 + log(u + (1 − u) e^(−2κ)) / κ, and a uniform angle around μ), in `options`' dtype
  /// and device (drawn on the CPU with `generator`).
  at::Tensor sample(int64_t n, at::Generator& generator, const at::TensorOptions& options) const;
  /// {"weights": [...], "means": [[x, y, z], ...], "kappas": [...]}, at full precision, and back
  /// (std::invalid_argument naming the missing or malformed field).
  nlohmann::json to_json() const;
  static VonMisesFisherMixture from_json(const nlohmann::json& j);
};

/// A's inverse for S²: the κ with coth κ − 1/κ = r̄ (the mean resultant length, 0 ≤ r̄ < 1), from
/// Banerjee et al.'s r̄(3 − r̄²)/(1 − r̄²) refined by Newton's method (to 1e-12 relative, or until
/// A(κ) meets r̄ to rounding).
double von_mises_fisher_kappa(double mean_resultant_length);

/// EM on unit vectors (N, 3): K initial means by k-means++ seeding on the cosine distance 1 − μ·x
/// (drawn with `generator`), then `iterations` rounds; each κ is the exact maximum-likelihood one for
/// its weighted mean resultant length, capped at `max_kappa` (a component on a few coincident points
/// would otherwise grow without bound). std::invalid_argument for K < 1, fewer rows than K, rows
/// that are not (N, 3), iterations < 0, or max_kappa < 1e-8.
VonMisesFisherMixture fit_von_mises_fisher_mixture(const at::Tensor& x, int64_t components, int64_t iterations,
                                                   at::Generator& generator, double max_kappa = 1e4);

}  // namespace flowmatch
