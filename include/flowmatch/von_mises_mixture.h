#pragma once
/// \file
/// A mixture of products of von Mises distributions on the torus T^d, fitted by EM: the classical
/// density baseline for angles (e.g. protein backbone φ/ψ), beside which a flow's NLL is judged.
///   p(θ) = Σ_k w_k Π_j exp(κ_kj cos(θ_j − μ_kj)) / (2π I₀(κ_kj))

#include <cstdint>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

namespace flowmatch {

struct VonMisesMixture {
  at::Tensor weights;  ///< (K)
  at::Tensor means;    ///< (K, d) in (−π, π]
  at::Tensor kappas;   ///< (K, d) ≥ 0
  /// log p per row of angles (N, d), float64.
  at::Tensor log_density(const at::Tensor& angles) const;
};

/// EM from K training rows drawn by `generator` as the initial means (κ = 1): `iterations` rounds;
/// κ from the mean resultant length R̄ by Banerjee et al.'s approximation R̄(2 − R̄²)/(1 − R̄²),
/// capped at 500. std::invalid_argument for K < 1, fewer rows than K, or non-(N, d) input.
VonMisesMixture fit_von_mises_mixture(const at::Tensor& angles, int64_t components, int64_t iterations, at::Generator& generator);

}  // namespace flowmatch
