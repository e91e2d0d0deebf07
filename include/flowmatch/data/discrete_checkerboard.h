#pragma once
/// \file
/// The discrete checkerboard of flow_matching's 2-D discrete notebook: cells (a, b) of a G × G grid
/// (G = 128, divisible by 4) in 4 × 4 blocks of (G/4)², kept where the block indices add up to an even
/// number: G²/2 = 8192 cells, drawn uniformly (entropy ln 8192 = 9.011 nats per cell). A sample is two
/// tokens (a, b) in [0, G), int64.

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

namespace flowmatch {
class MixtureDiscretePath;
}

namespace flowmatch::data {

/// n cells (n, 2) int64, uniform over the kept cells (the notebook's draw).
at::Tensor sample_discrete_checkerboard(int64_t n, at::Generator& generator, int64_t grid = 128);
/// Whether each row of cells (n, 2) is a kept cell (bool (n)).
at::Tensor on_discrete_checkerboard(const at::Tensor& cells, int64_t grid = 128);
/// The true posterior p(x₁ⁱ | x_t) of the checkerboard under `path` (vocabulary = grid) as logits
/// (B, 2, grid) (float64; −inf where impossible), for tokens x_t (B, 2) at times t (B): the marginals of
/// q(x₁)·Πᵢ p_t(x_tⁱ | x₁ⁱ) with p_t(x | x₁) = κ_t δ(x, x₁) + (1 − κ_t) p₀(x).
at::Tensor discrete_checkerboard_posterior_logits(const at::Tensor& x_t, const at::Tensor& t, const MixtureDiscretePath& path);

}  // namespace flowmatch::data
