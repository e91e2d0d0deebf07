#include "flowmatch/schedulers.h"
#include "flowmatch/prediction.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace flowmatch {

namespace {

void require(bool ok, const std::string& what, double value, const std::string& expected) {
  if (!ok) throw std::invalid_argument(what + " must be " + expected + ", got " + std::to_string(value));
}

void check_time(const at::Tensor& t, const char* who) {
  TORCH_CHECK(t.defined() && t.is_floating_point(), who, ": time must be a floating-point tensor");
}

}  // namespace

// ---- CondOT -------------------------------------------------------------------------------------

CondOTScheduler::CondOTScheduler(CondOTSchedulerOptions options) : options_(options) {
  require(options_.sigma_min() >= 0 && options_.sigma_min() < 1, "CondOT sigma_min", options_.sigma_min(), "in [0, 1)");
}

SchedulerValues CondOTScheduler::operator()(const at::Tensor& t) const {
  check_time(t, "CondOTScheduler");
  const double c = 1 - options_.sigma_min();
  return {t, 1 - c * t, at::ones_like(t), at::full_like(t, -c)};
}

// ρ = t / (1 − c t)  ⇒  t = 1 / (1/ρ + c), clamped to 1 (ρ ≥ 1/σ_min is beyond the path's end).
at::Tensor CondOTScheduler::time_at_snr(const at::Tensor& snr) const {
  return (1 / (1 / snr + (1 - options_.sigma_min()))).clamp(0, 1);
}

nlohmann::json CondOTScheduler::spec() const { return {{"type", "condot"}, {"sigma_min", options_.sigma_min()}}; }

// ---- polynomial ---------------------------------------------------------------------------------

PolynomialScheduler::PolynomialScheduler(PolynomialSchedulerOptions options) : options_(options) {
  require(options_.exponent() > 0 && std::isfinite(options_.exponent()), "polynomial exponent", options_.exponent(),
          "finite and > 0");
}

SchedulerValues PolynomialScheduler::operator()(const at::Tensor& t) const {
  check_time(t, "PolynomialScheduler");
  const double n = options_.exponent();
  at::Tensor a = at::pow(t, n);
  at::Tensor da = n * at::pow(t, n - 1);
  return {a, 1 - a, da, -da};
}

// ρ = tⁿ / (1 − tⁿ)  ⇒  tⁿ = 1 / (1 + 1/ρ).
at::Tensor PolynomialScheduler::time_at_snr(const at::Tensor& snr) const {
  return at::pow(1 / (1 + 1 / snr), 1 / options_.exponent()).clamp(0, 1);
}

nlohmann::json PolynomialScheduler::spec() const { return {{"type", "polynomial"}, {"exponent", options_.exponent()}}; }

// ---- cosine -------------------------------------------------------------------------------------

SchedulerValues CosineScheduler::operator()(const at::Tensor& t) const {
  check_time(t, "CosineScheduler");
  at::Tensor a = at::sin(t * (M_PI / 2)), s = at::cos(t * (M_PI / 2));
  return {a, s, s * (M_PI / 2), a * (-M_PI / 2)};
}

at::Tensor CosineScheduler::time_at_snr(const at::Tensor& snr) const { return (at::atan(snr) * (2 / M_PI)).clamp(0, 1); }

nlohmann::json CosineScheduler::spec() const { return {{"type", "cosine"}}; }

// ---- VP -----------------------------------------------------------------------------------------

VPScheduler::VPScheduler(VPSchedulerOptions options) : options_(options) {
  require(options_.beta_min() > 0 && std::isfinite(options_.beta_min()), "VP beta_min", options_.beta_min(), "finite and > 0");
  require(options_.beta_max() > options_.beta_min() && std::isfinite(options_.beta_max()), "VP beta_max",
          options_.beta_max(), "finite and > beta_min");
}

SchedulerValues VPScheduler::operator()(const at::Tensor& t) const {
  check_time(t, "VPScheduler");
  const double b = options_.beta_min(), d = options_.beta_max() - options_.beta_min();
  at::Tensor s = 1 - t;
  at::Tensor T = 0.5 * d * s * s + b * s;
  at::Tensor dT = -(d * s + b);  // dT/dt
  at::Tensor a = at::exp(-0.5 * T);
  at::Tensor var = -at::expm1(-T);  // 1 − α², without cancellation near t = 1
  at::Tensor sigma = at::sqrt(var);
  at::Tensor da = -0.5 * dT * a;
  return {a, sigma, da, -a * da / sigma};
}

// α²/σ² = ρ²  ⇒  T = log(1 + 1/ρ²); solve ½d s² + b s = T for s = 1 − t ≥ 0.
at::Tensor VPScheduler::time_at_snr(const at::Tensor& snr) const {
  const double b = options_.beta_min(), d = options_.beta_max() - options_.beta_min();
  at::Tensor T = at::log1p(1 / (snr * snr));
  at::Tensor s = (at::sqrt(b * b + 2 * d * T) - b) / d;
  return (1 - s).clamp(0, 1);
}

nlohmann::json VPScheduler::spec() const {
  return {{"type", "vp"}, {"beta_min", options_.beta_min()}, {"beta_max", options_.beta_max()}};
}

// ---- linear VP ----------------------------------------------------------------------------------

SchedulerValues LinearVPScheduler::operator()(const at::Tensor& t) const {
  check_time(t, "LinearVPScheduler");
  at::Tensor sigma = at::sqrt((1 - t) * (1 + t));
  return {t, sigma, at::ones_like(t), -t / sigma};
}

// ρ = t / √(1 − t²)  ⇒  t = 1 / √(1 + 1/ρ²).
at::Tensor LinearVPScheduler::time_at_snr(const at::Tensor& snr) const {
  return (1 / at::sqrt(1 + 1 / (snr * snr))).clamp(0, 1);
}

nlohmann::json LinearVPScheduler::spec() const { return {{"type", "linear-vp"}}; }

// ---- VE -----------------------------------------------------------------------------------------

VEScheduler::VEScheduler(VESchedulerOptions options) : options_(options) {
  require(options_.sigma_min() > 0 && std::isfinite(options_.sigma_min()), "VE sigma_min", options_.sigma_min(), "finite and > 0");
  require(options_.sigma_max() > options_.sigma_min() && std::isfinite(options_.sigma_max()), "VE sigma_max",
          options_.sigma_max(), "finite and > sigma_min");
}

SchedulerValues VEScheduler::operator()(const at::Tensor& t) const {
  check_time(t, "VEScheduler");
  const double log_ratio = std::log(options_.sigma_max() / options_.sigma_min());
  at::Tensor sigma = options_.sigma_min() * at::exp((1 - t) * log_ratio);
  return {at::ones_like(t), sigma, at::zeros_like(t), -log_ratio * sigma};
}

// ρ = 1/σ  ⇒  1 − t = log(1 / (ρ σ_min)) / log(σ_max / σ_min).
at::Tensor VEScheduler::time_at_snr(const at::Tensor& snr) const {
  const double log_ratio = std::log(options_.sigma_max() / options_.sigma_min());
  return (1 + at::log(snr * options_.sigma_min()) / log_ratio).clamp(0, 1);
}

nlohmann::json VEScheduler::spec() const {
  return {{"type", "ve"}, {"sigma_min", options_.sigma_min()}, {"sigma_max", options_.sigma_max()}};
}

// ---- factory ------------------------------------------------------------------------------------

std::vector<std::string> scheduler_names() { return {"condot", "polynomial", "cosine", "vp", "linear-vp", "ve"}; }

std::shared_ptr<Scheduler> make_scheduler(const nlohmann::json& spec) {
  if (!spec.is_string() && !spec.is_object()) {
    throw std::invalid_argument("scheduler description must be a name or an object, got " + spec.dump());
  }
  const std::string type = spec.is_string() ? spec.get<std::string>() : spec.value("type", std::string());
  const nlohmann::json p = spec.is_object() ? spec : nlohmann::json::object();
  try {
    if (type == "condot") return std::make_shared<CondOTScheduler>(CondOTSchedulerOptions().sigma_min(p.value("sigma_min", 0.0)));
    if (type == "polynomial") {
      return std::make_shared<PolynomialScheduler>(PolynomialSchedulerOptions().exponent(p.value("exponent", 2.0)));
    }
    if (type == "cosine") return std::make_shared<CosineScheduler>();
    if (type == "vp") {
      return std::make_shared<VPScheduler>(
          VPSchedulerOptions().beta_min(p.value("beta_min", 0.1)).beta_max(p.value("beta_max", 20.0)));
    }
    if (type == "linear-vp") return std::make_shared<LinearVPScheduler>();
    if (type == "ve") {
      return std::make_shared<VEScheduler>(
          VESchedulerOptions().sigma_min(p.value("sigma_min", 0.01)).sigma_max(p.value("sigma_max", 30.0)));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("scheduler " + spec.dump() + ": " + e.what());
  }
  throw std::invalid_argument("unknown scheduler '" + type +
                              "' (expected: condot, polynomial, cosine, vp, linear-vp, ve)");
}

// ---- schedule transform -------------------------------------------------------------------------

VelocityField schedule_transformed_field(VelocityField field, std::shared_ptr<const Scheduler> trained,
                                         std::shared_ptr<const Scheduler> wanted, ScheduleTransformOptions options) {
  if (!field || !trained || !wanted) throw std::invalid_argument("schedule_transformed_field: null field or scheduler");
  const double margin = options.time_margin();
  if (!(margin >= 0 && margin < 0.5)) {
    throw std::invalid_argument("schedule transform time margin must be in [0, 0.5), got " + std::to_string(margin));
  }
  return [field = std::move(field), trained = std::move(trained), wanted = std::move(wanted), margin](
             const at::Tensor& x, const at::Tensor& r) -> at::Tensor {
    TORCH_CHECK(r.numel() == 1, "schedule transform: expected one time for the batch, got shape ", r.sizes());
    at::Tensor rr = r.to(at::kDouble).reshape({}).clamp(margin, 1 - margin);
    const SchedulerValues w = (*wanted)(rr);
    // The trained time with the same signal-to-noise ratio.
    at::Tensor tr = trained->time_at_snr(w.alpha / w.sigma).clamp(margin, 1 - margin);
    const SchedulerValues a = (*trained)(tr);
    // ρ̇ = (α̇σ − ασ̇)/σ²; ṫ_r = ρ̄̇(r) / ρ̇(t_r), written without dividing by σ when it is small.
    at::Tensor wronskian_wanted = w.d_alpha * w.sigma - w.alpha * w.d_sigma;
    at::Tensor wronskian_trained = a.d_alpha * a.sigma - a.alpha * a.d_sigma;
    // s = σ̄/σ = ᾱ/α (equal SNR): use the ratio with the larger denominator.
    const bool by_sigma = (a.sigma >= a.alpha.abs()).item<bool>();
    at::Tensor s, ds, dt;
    if (by_sigma) {
      s = w.sigma / a.sigma;
      dt = wronskian_wanted / wronskian_trained * (a.sigma / w.sigma).pow(2);
      ds = (w.d_sigma * a.sigma - w.sigma * a.d_sigma * dt) / (a.sigma * a.sigma);
    } else {
      s = w.alpha / a.alpha;
      dt = wronskian_wanted / wronskian_trained * (a.alpha / w.alpha).pow(2);
      ds = (w.d_alpha * a.alpha - w.alpha * a.d_alpha * dt) / (a.alpha * a.alpha);
    }
    const double s_v = s.item<double>(), ds_v = ds.item<double>(), dt_v = dt.item<double>();
    at::Tensor t_model = tr.to(r.options()).reshape(r.sizes());
    at::Tensor u = field(x / s_v, t_model);
    return u.mul(s_v * dt_v).add_(x, ds_v / s_v);
  };
}

}  // namespace flowmatch
