#pragma once
/// \file
/// A fused Adam/AdamW step: the same update and the same state as LibTorch's `torch::optim::Adam`
/// and `torch::optim::AdamW` (step count, exp_avg, exp_avg_sq per parameter, kept in the optimizer's
/// own state map, so checkpoints and the LibTorch optimizer interoperate), done in one pass over
/// each parameter's memory instead of about ten ATen operations per parameter. For small networks
/// (the 2-D MLPs) the per-operation dispatch is most of Adam's time; this is the optimizer step of
/// `Trainer` whenever `fused_adam_supported` holds.

#include <string>
#include <type_traits>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/util/C++17.h>
#include <sstream>
#include <torch/optim/optimizer.h>

namespace flowmatch {

/// The key of `parameter`'s entry in `optimizer.state()`: LibTorch 1.x keys it by the TensorImpl's
/// address as a string, 2.x by the address itself.
template <typename StateMap>
typename StateMap::key_type optimizer_state_key(const StateMap&, const at::Tensor& parameter) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    std::ostringstream key;  // what LibTorch 1.x's c10::guts::to_string wrote (2.x removed it)
    key << parameter.unsafeGetTensorImpl();
    return key.str();
  } else {
    return parameter.unsafeGetTensorImpl();
  }
}

/// True when every parameter is a contiguous float32 CPU tensor and the optimizer is a
/// torch::optim::Adam or AdamW without amsgrad.
bool fused_adam_supported(const torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters);

/// One step of `optimizer` (Adam or AdamW, single parameter group) on `parameters` using their
/// current .grad(); parameters without a gradient are skipped, as LibTorch does. Throws
/// std::invalid_argument when `fused_adam_supported` is false.
void fused_adam_step(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters);

/// True when the optimizer is a torch::optim::Adam or AdamW without amsgrad over one parameter group,
/// and the parameters are dense floating tensors of one dtype on one device (any device).
bool multi_tensor_adam_supported(const torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters);

/// The same step as `optimizer.step()` (Adam or AdamW), done by ATen's multi-tensor `_foreach_`
/// operations over all parameters at once: on CUDA about ten kernel launches a step instead of about ten
/// per parameter tensor, as PyTorch's `foreach` Adam. It keeps LibTorch's state (checkpoints are unchanged);
/// parameters without a gradient are skipped, and those whose step counts differ are stepped in groups.
/// Throws std::invalid_argument when `multi_tensor_adam_supported` is false.
void multi_tensor_adam_step(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters);

/// ema ← decay · ema + (1 − decay) · value, element by element, for pairs of same-shaped tensors
/// (one pass each for contiguous float32 CPU tensors, ATen's multi-tensor operations over the rest).
void exponential_moving_average(const std::vector<at::Tensor>& ema, const std::vector<at::Tensor>& values, double decay);

}  // namespace flowmatch
