#include "flowmatch/prediction.h"

#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "enum_names.h"

namespace flowmatch {

namespace {
constexpr detail::EnumNames<PredictionTarget, 4> kTargetNames{{{PredictionTarget::Velocity, "velocity"},
                                                              {PredictionTarget::Data, "data"},
                                                              {PredictionTarget::Noise, "noise"},
                                                              {PredictionTarget::Score, "score"}}};
}  // namespace

PredictionTarget prediction_target_from_string(const std::string& name) {
  return detail::enum_from_name(kTargetNames, name, "prediction target");
}
std::string to_string(PredictionTarget target) { return detail::enum_name(kTargetNames, target); }
std::vector<std::string> prediction_target_names() { return detail::enum_names(kTargetNames); }

at::Tensor convert_prediction(const at::Tensor& value, PredictionTarget from, PredictionTarget to, const at::Tensor& x,
                              const at::Tensor& t, const Scheduler& scheduler) {
  TORCH_CHECK(value.sizes() == x.sizes(), "convert_prediction: prediction ", value.sizes(), " and x ", x.sizes(),
              " must have the same shape");
  if (from == to) return value;
  const SchedulerValues v = scheduler(expand_time_like(t, x));
  // (x̂₁, x̂₀) with x = α x̂₁ + σ x̂₀.
  at::Tensor x1, x0;
  switch (from) {
    case PredictionTarget::Data:
      x1 = value;
      x0 = (x - v.alpha * x1) / v.sigma;
      break;
    case PredictionTarget::Noise:
      x0 = value;
      x1 = (x - v.sigma * x0) / v.alpha;
      break;
    case PredictionTarget::Score:
      x0 = -v.sigma * value;
      x1 = (x - v.sigma * x0) / v.alpha;
      break;
    case PredictionTarget::Velocity: {
      // [α σ; α̇ σ̇] [x₁; x₀] = [x; u], determinant ασ̇ − σα̇ = −(α̇σ − ασ̇) < 0 on every scheduler.
      at::Tensor det = v.d_alpha * v.sigma - v.alpha * v.d_sigma;
      x1 = (v.sigma * value - v.d_sigma * x) / det;
      x0 = (v.d_alpha * x - v.alpha * value) / det;
      break;
    }
  }
  switch (to) {
    case PredictionTarget::Data: return x1;
    case PredictionTarget::Noise: return x0;
    case PredictionTarget::Score: return -x0 / v.sigma;
    case PredictionTarget::Velocity: return v.d_alpha * x1 + v.d_sigma * x0;
  }
  return value;
}

void check_prediction_target(const ProbabilityPath& path, PredictionTarget target) {
  if (target == PredictionTarget::Velocity) return;
  if (!path.scheduler()) {
    throw std::invalid_argument("prediction target '" + to_string(target) + "' needs an affine Gaussian path, got " +
                                path.spec().dump());
  }
  if (path.has_interpolant_noise()) {
    throw std::invalid_argument("prediction target '" + to_string(target) +
                                "' needs a path without interpolant noise (sigma = 0); only 'velocity' is defined on " +
                                path.spec().dump());
  }
}

at::Tensor regression_target(const ProbabilityPath& path, const PathSample& sample, PredictionTarget target) {
  check_prediction_target(path, target);
  switch (target) {
    case PredictionTarget::Data: return sample.x1;
    case PredictionTarget::Noise: return sample.x0;
    case PredictionTarget::Score: {
      const SchedulerValues v = (*path.scheduler())(expand_time_like(sample.t, sample.x0));
      return -sample.x0 / v.sigma;
    }
    case PredictionTarget::Velocity: break;
  }
  return sample.velocity;
}

VelocityField velocity_from_prediction(VelocityField predictor, PredictionTarget target,
                                       std::shared_ptr<const Scheduler> scheduler, double time_margin) {
  if (!predictor) throw std::invalid_argument("velocity_from_prediction: predictor is empty");
  if (target == PredictionTarget::Velocity) return predictor;
  if (!scheduler) throw std::invalid_argument("velocity_from_prediction: target '" + to_string(target) + "' needs a scheduler");
  if (!(time_margin >= 0 && time_margin < 0.5)) {
    throw std::invalid_argument("time margin must be in [0, 0.5), got " + std::to_string(time_margin));
  }
  // Only an end where the conversion divides by zero is moved inward: t = 0 where α₀ = 0 (CondOT, cosine),
  // not on VP paths and DDPM's chain, whose α₀ > 0 (DDPM's sampler evaluates its network at step N).
  const auto ends = (*scheduler)(at::tensor({0.0, 1.0}, at::kDouble));
  const double lo = ends.alpha[0].item<double>() > 0 ? 0.0 : time_margin;
  const double hi = ends.sigma[1].item<double>() > 0 ? 1.0 : 1 - time_margin;
  return [predictor = std::move(predictor), target, scheduler = std::move(scheduler), lo, hi](const at::Tensor& x, const at::Tensor& t) {
    at::Tensor tc = t.clamp(lo, hi);
    return convert_prediction(predictor(x, tc), target, PredictionTarget::Velocity, x, tc, *scheduler);
  };
}

}  // namespace flowmatch
