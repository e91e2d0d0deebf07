#include "flowmatch/guidance.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>

namespace flowmatch {

at::Tensor guided_velocity(const at::Tensor& conditional, const at::Tensor& unconditional, double w) {
  return conditional * (1.0 + w) - unconditional * w;
}

VelocityField guided_velocity_field(std::shared_ptr<models::VelocityModel> model, const at::Tensor& labels, double w) {
  if (!model) throw std::invalid_argument("guided_velocity_field: model is null");
  if (model->num_classes() <= 0) throw std::invalid_argument("guidance needs a class-conditional network; this one has no classes");
  if (!(w >= 0) || !std::isfinite(w)) throw std::invalid_argument("guidance scale must be finite and >= 0, got " + std::to_string(w));
  models::check_labels(labels, labels.defined() && labels.dim() == 1 ? labels.size(0) : -1, model->num_classes());
  if (w == 0) {
    return [model, labels](const at::Tensor& x, const at::Tensor& t) {
      return model->forward_conditional(x, t, labels.to(x.device()));
    };
  }
  at::Tensor doubled = at::cat({labels, at::full_like(labels, models::kNullLabel)});
  return [model, doubled, w](const at::Tensor& x, const at::Tensor& t) {
    const int64_t b = x.size(0);
    at::Tensor tt = t.dim() == 0 ? t : at::cat({t.reshape({-1}), t.reshape({-1})});
    at::Tensor v = model->forward_conditional(at::cat({x, x}), tt, doubled.to(x.device()));
    return guided_velocity(v.narrow(0, 0, b), v.narrow(0, b, b), w);
  };
}

at::Tensor grid_labels(int64_t n, int64_t num_classes, int64_t only_class) {
  if (num_classes <= 0) throw std::invalid_argument("grid_labels: num_classes must be > 0, got " + std::to_string(num_classes));
  if (only_class >= num_classes) {
    throw std::invalid_argument("class " + std::to_string(only_class) + " is outside [0, " + std::to_string(num_classes) + ")");
  }
  if (only_class >= 0) return at::full({n}, only_class, at::kLong);
  if (n % num_classes != 0) {
    throw std::invalid_argument("a grid of " + std::to_string(n) + " samples is not a multiple of the " +
                                std::to_string(num_classes) + " classes");
  }
  return at::arange(num_classes, at::kLong).repeat_interleave(n / num_classes);
}

}  // namespace flowmatch
