#pragma once
/// \file
/// The conditional flow-matching regression loss.

#include <ATen/Tensor.h>

namespace flowmatch {

/// Mean squared error between a predicted and a target velocity, averaged over every element
/// (batch and dimensions), as TorchCFM and Meta's flow_matching report it:
///   L = 1/(B·D) Σ_b w_b ‖prediction_b − target_b‖².
/// `weight`, if defined, has shape (B) and weights each sample (1 when undefined).
/// Throws std::invalid_argument when shapes differ.
at::Tensor flow_matching_loss(const at::Tensor& prediction, const at::Tensor& target,
                              const at::Tensor& weight = at::Tensor());

}  // namespace flowmatch
