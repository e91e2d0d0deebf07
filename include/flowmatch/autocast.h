#pragma once
/// \file
/// Mixed precision by autocast: inside an `AutocastGuard`, LibTorch runs matrix products and
/// convolutions in a lower precision (bfloat16 here) and keeps reductions, normalisations and losses
/// in float32, casting at each operation; the weights, their gradients and the optimizer's state stay
/// float32 (PyTorch's `torch.autocast(device, dtype=torch.bfloat16)`). bfloat16 has float32's exponent
/// range, so no loss scaling is needed. The trainer uses it for the forward pass and the loss when
/// `TrainerOptions::autocast_bf16` is set.

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace flowmatch {

/// Turns autocast to `dtype` on for `device` (CPU or CUDA) for its lifetime, and restores the previous
/// state (on and dtype) after; the cast cache is cleared on leaving the outermost guard. Throws
/// std::invalid_argument for another device type or a dtype other than bfloat16 or float16.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, c10::ScalarType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool was_enabled_;
  c10::ScalarType previous_dtype_;
};

}  // namespace flowmatch
