#pragma once
/// \file
/// What solvers integrate: any callable v(x, t) → tensor shaped like x.

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
