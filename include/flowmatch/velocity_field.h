#pragma once
/// \file
/// What solvers integrate: any callable v(x, t) → tensor shaped like x; a conditioned network
/// becomes one by binding its conditioning.

#include <atomic>
#include <functional>
#include <memory>

#include <ATen/Tensor.h>

#include "flowmatch/models/velocity_model.h"

namespace flowmatch {

/// v(x, t): x of shape (B, ...), t a 0-dim tensor (the same time for the whole batch).
using VelocityField = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& t)>;

/// Adapts a network (no copy: the field calls the network it is given).
VelocityField as_velocity_field(std::shared_ptr<models::VelocityModel> model);
/// The network conditioned on `condition` (labels, a token context, masks) for every call:
/// v(x, t) = model.forward_with(x, t, condition); the condition's batch must be x's.
VelocityField as_velocity_field(std::shared_ptr<models::VelocityModel> model, models::Conditioning condition);

/// Wraps a field and counts its calls (for checking a solver's reported NFE).
class CountingVelocityField {
 public:
  explicit CountingVelocityField(VelocityField field);
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& t);
  int64_t calls() const { return calls_->load(); }
  /// A VelocityField sharing this counter.
  VelocityField field() const;

 private:
  VelocityField field_;
  std::shared_ptr<std::atomic<int64_t>> calls_;
};

}  // namespace flowmatch
