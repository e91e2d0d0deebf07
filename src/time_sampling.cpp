#include "flowmatch/time_sampling.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>

#include "enum_names.h"
#include "flowmatch/schedulers.h"

namespace flowmatch {

namespace {
constexpr detail::EnumNames<TimeDistribution, 5> kDistributionNames{{{TimeDistribution::Uniform, "uniform"},
                                                                    {TimeDistribution::LogitNormal, "logit-normal"},
                                                                    {TimeDistribution::ModeScaled, "mode"},
                                                                    {TimeDistribution::Constant, "constant"},
                                                                    {TimeDistribution::Discrete, "discrete"}}};
constexpr detail::EnumNames<LossWeighting, 3> kWeightingNames{{{LossWeighting::None, "none"},
                                                              {LossWeighting::LogitNormal, "logit-normal"},
                                                              {LossWeighting::SigmaSquared, "sigma-squared"}}};
}  // namespace

TimeDistribution time_distribution_from_string(const std::string& name) {
  return detail::enum_from_name(kDistributionNames, name, "time sampling");
}
std::string to_string(TimeDistribution d) { return detail::enum_name(kDistributionNames, d); }
std::vector<std::string> time_distribution_names() { return detail::enum_names(kDistributionNames); }

LossWeighting loss_weighting_from_string(const std::string& name) {
  return detail::enum_from_name(kWeightingNames, name, "loss weighting");
}
std::string to_string(LossWeighting w) { return detail::enum_name(kWeightingNames, w); }

void validate(const TimeSamplingOptions& o) {
  if (!std::isfinite(o.location())) {
    throw std::invalid_argument("logit-normal location must be finite, got " + std::to_string(o.location()));
  }
  if (!(o.scale() > 0) || !std::isfinite(o.scale())) {
    throw std::invalid_argument("logit-normal scale must be finite and > 0, got " + std::to_string(o.scale()));
  }
  const double s_max = 2 / (M_PI - 2);
  if (!(o.mode_scale() >= -1 && o.mode_scale() <= s_max)) {
    throw std::invalid_argument("mode scale must be in [-1, " + std::to_string(s_max) + "] (monotone map), got " +
                                std::to_string(o.mode_scale()));
  }
  if (!(o.max_time() > 0 && o.max_time() <= 1)) {
    throw std::invalid_argument("time-max must be in (0, 1], got " + std::to_string(o.max_time()));
  }
  if (!(o.constant_time() >= 0 && o.constant_time() <= 1)) {
    throw std::invalid_argument("constant time must be in [0, 1], got " + std::to_string(o.constant_time()));
  }
  if (o.discrete_steps() < 1 || o.discrete_steps() > 100000) {
    throw std::invalid_argument("discrete time steps must be in [1, 100000], got " + std::to_string(o.discrete_steps()));
  }
}

at::Tensor sample_times(int64_t n, const TimeSamplingOptions& o, at::Generator& generator) {
  if (n < 1) throw std::invalid_argument("sample_times: n must be >= 1, got " + std::to_string(n));
  if (o.max_time() != 1.0) return sample_times(n, TimeSamplingOptions(o).max_time(1.0), generator).mul_(o.max_time());
  switch (o.distribution()) {
    case TimeDistribution::Uniform: return at::rand({n}, generator, at::kFloat);
    case TimeDistribution::LogitNormal:
      return at::sigmoid(at::randn({n}, generator, at::kFloat) * o.scale() + o.location());
    case TimeDistribution::ModeScaled: {
      at::Tensor u = at::rand({n}, generator, at::kFloat);
      at::Tensor c = at::cos(u * (M_PI / 2));
      return (u + o.mode_scale() * (c * c - 1 + u)).clamp(0, 1);
    }
    case TimeDistribution::Constant: return at::full({n}, o.constant_time(), at::kFloat);
    case TimeDistribution::Discrete: {
      const int64_t steps = o.discrete_steps();
      return 1 - at::randint(1, steps + 1, {n}, generator, at::kLong).to(at::kFloat) / static_cast<float>(steps);
    }
  }
  return at::rand({n}, generator, at::kFloat);
}

at::Tensor logit_normal_density(const at::Tensor& t, double location, double scale) {
  at::Tensor z = (at::logit(t) - location) / scale;
  return at::exp(-0.5 * z * z) / (scale * std::sqrt(2 * M_PI) * t * (1 - t));
}

at::Tensor loss_weights(const at::Tensor& t, const TimeSamplingOptions& o, const Scheduler* scheduler) {
  if (o.weighting() == LossWeighting::None) return at::Tensor();
  if (o.weighting() == LossWeighting::SigmaSquared) {
    if (!scheduler) throw std::invalid_argument("loss weighting sigma-squared needs an affine Gaussian path (a scheduler)");
    return (*scheduler)(t).sigma.square();
  }
  // At t = 0 or 1 exactly the density is 0·∞: it tends to 0, so clamp just inside.
  return logit_normal_density(t.clamp(1e-7, 1 - 1e-7), o.location(), o.scale());
}

nlohmann::json to_json(const TimeSamplingOptions& o) {
  nlohmann::json j = {{"distribution", to_string(o.distribution())},
          {"weighting", to_string(o.weighting())},
          {"location", o.location()},
          {"scale", o.scale()},
          {"mode_scale", o.mode_scale()},
          {"constant_time", o.constant_time()}};
  if (o.max_time() != 1.0) j["max_time"] = o.max_time();  // absent in runs drawing t up to 1
  if (o.distribution() == TimeDistribution::Discrete) j["discrete_steps"] = o.discrete_steps();
  return j;
}

TimeSamplingOptions time_sampling_from_json(const nlohmann::json& j) {
  TimeSamplingOptions o;
  try {
    if (j.contains("distribution")) o.distribution(time_distribution_from_string(j.at("distribution").get<std::string>()));
    if (j.contains("weighting")) o.weighting(loss_weighting_from_string(j.at("weighting").get<std::string>()));
    o.location(j.value("location", o.location()));
    o.scale(j.value("scale", o.scale()));
    o.mode_scale(j.value("mode_scale", o.mode_scale()));
    o.constant_time(j.value("constant_time", o.constant_time()));
    o.max_time(j.value("max_time", o.max_time()));
    o.discrete_steps(j.value("discrete_steps", o.discrete_steps()));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("time sampling " + j.dump() + ": " + e.what());
  }
  validate(o);
  return o;
}

std::vector<double> shifted_time_grid(int64_t steps, double shift) {
  if (steps < 1 || steps > 100000000) throw std::invalid_argument("time shift: steps must be in [1, 10^8], got " + std::to_string(steps));
  if (!(shift > 0 && shift <= 1000)) throw std::invalid_argument("--time-shift must be in (0, 1000], got " + std::to_string(shift));
  std::vector<double> grid(static_cast<size_t>(steps) + 1);
  for (int64_t k = 0; k <= steps; ++k) {
    const double sigma = 1.0 - static_cast<double>(k) / static_cast<double>(steps);
    grid[k] = 1.0 - shift * sigma / (1.0 + (shift - 1.0) * sigma);
  }
  grid.front() = 0.0;
  grid.back() = 1.0;
  return grid;
}

}  // namespace flowmatch
