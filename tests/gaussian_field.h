#pragma once
// The closed-form marginal velocity for source N(0, I) and target N(μ, c²I) on an affine path:
// x_t ~ N(αμ, (α²c² + σ²)I) and u(x, t) = α̇μ + (αα̇c² + σσ̇)/(α²c² + σ²)·(x − αμ).

#include <memory>

#include <ATen/ATen.h>

#include "flowmatch/schedulers.h"
#include "flowmatch/velocity_field.h"

namespace fmtest {

inline flowmatch::VelocityField gaussian_marginal_velocity(std::shared_ptr<flowmatch::Scheduler> s, at::Tensor mu,
                                                           double c) {
  return [s, mu, c](const at::Tensor& x, const at::Tensor& t) {
    auto v = (*s)(t.to(at::kDouble));
    at::Tensor var = v.alpha * v.alpha * c * c + v.sigma * v.sigma;
    return (v.d_alpha * mu + (v.alpha * v.d_alpha * c * c + v.sigma * v.d_sigma) / var * (x - v.alpha * mu)).to(x.dtype());
  };
}

}  // namespace fmtest
