#include "flowmatch/velocity_field.h"

#include <stdexcept>

namespace flowmatch {

VelocityField as_velocity_field(std::shared_ptr<models::VelocityModel> model) {
  if (!model) throw std::invalid_argument("as_velocity_field: model is null");
  return [model](const at::Tensor& x, const at::Tensor& t) { return model->forward(x, t); };
}

VelocityField as_velocity_field(std::shared_ptr<models::VelocityModel> model, models::Conditioning condition) {
  if (!model) throw std::invalid_argument("as_velocity_field: model is null");
  if (condition.empty()) return as_velocity_field(std::move(model));
  return [model, condition](const at::Tensor& x, const at::Tensor& t) { return model->forward_with(x, t, condition); };
}

CountingVelocityField::CountingVelocityField(VelocityField field)
    : field_(std::move(field)), calls_(std::make_shared<std::atomic<int64_t>>(0)) {
  if (!field_) throw std::invalid_argument("CountingVelocityField: field is empty");
}

at::Tensor CountingVelocityField::operator()(const at::Tensor& x, const at::Tensor& t) {
  ++*calls_;
  return field_(x, t);
}

VelocityField CountingVelocityField::field() const {
  auto f = field_;
  auto calls = calls_;
  return [f, calls](const at::Tensor& x, const at::Tensor& t) {
    ++*calls;
    return f(x, t);
  };
}

}  // namespace flowmatch
