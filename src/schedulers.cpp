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

// ---- DDPM's discrete chain ----------------------------------------------------------------------

DDPMScheduler::DDPMScheduler(DDPMSchedulerOptions options) : options_(std::move(options)) {
  const int64_t n = options_.steps();
  if (n < 2 || n > 100000) throw std::invalid_argument("DDPM steps must be in [2, 100000], got " + std::to_string(n));
  std::vector<double> beta(static_cast<size_t>(n));
  if (options_.beta_schedule() == "linear") {
    const double b0 = options_.beta_start(), b1 = options_.beta_end();
    require(b0 > 0 && b0 < 1, "DDPM beta_start", b0, "in (0, 1)");
    require(b1 >= b0 && b1 < 1, "DDPM beta_end", b1, "in [beta_start, 1)");
    for (int64_t i = 0; i < n; ++i) beta[i] = b0 + (b1 - b0) * static_cast<double>(i) / static_cast<double>(n - 1);
  } else if (options_.beta_schedule() == "cosine") {
    const double s = 0.008;
    auto f = [&](int64_t k) {
      const double c = std::cos((static_cast<double>(k) / n + s) / (1 + s) * M_PI / 2);
      return c * c;
    };
    for (int64_t i = 0; i < n; ++i) beta[i] = std::min(1 - f(i + 1) / f(i), 0.999);
  } else {
    throw std::invalid_argument("DDPM beta schedule '" + options_.beta_schedule() + "': expected linear or cosine");
  }
  std::vector<double> log_bar(static_cast<size_t>(n + 1), 0.0);
  for (int64_t i = 0; i < n; ++i) log_bar[i + 1] = log_bar[i] + std::log1p(-beta[i]);
  // Fritsch–Carlson slopes of λ(s) = log ᾱ at the steps (per unit s): monotone cubic Hermite
  // interpolation, so λ is C¹ and the velocity of the probability-flow ODE continuous between steps.
  std::vector<double> secant(static_cast<size_t>(n)), slope(static_cast<size_t>(n + 1));
  for (int64_t k = 0; k < n; ++k) secant[k] = log_bar[k + 1] - log_bar[k];
  slope[0] = secant[0];
  slope[n] = secant[n - 1];
  for (int64_t k = 1; k < n; ++k) slope[k] = secant[k - 1] * secant[k] > 0 ? 0.5 * (secant[k - 1] + secant[k]) : 0.0;
  for (int64_t k = 0; k < n; ++k) {
    if (secant[k] == 0) {
      slope[k] = slope[k + 1] = 0;
      continue;
    }
    const double a = slope[k] / secant[k], b = slope[k + 1] / secant[k];
    if (a * a + b * b > 9) {
      const double tau = 3 / std::sqrt(a * a + b * b);
      slope[k] = tau * a * secant[k];
      slope[k + 1] = tau * b * secant[k];
    }
  }
  log_alpha_bar_ = at::tensor(log_bar, at::kDouble);
  slopes_ = at::tensor(slope, at::kDouble);
  alpha_bar_ = at::exp(log_alpha_bar_);
}

namespace {

// The cubic Hermite λ on segment k at u ∈ [0, 1] and dλ/du.
std::pair<at::Tensor, at::Tensor> hermite(const at::Tensor& u, const at::Tensor& l0, const at::Tensor& l1, const at::Tensor& m0,
                                          const at::Tensor& m1) {
  at::Tensor u2 = u * u, u3 = u2 * u;
  at::Tensor value = (2 * u3 - 3 * u2 + 1) * l0 + (u3 - 2 * u2 + u) * m0 + (-2 * u3 + 3 * u2) * l1 + (u3 - u2) * m1;
  at::Tensor derivative = (6 * u2 - 6 * u) * (l0 - l1) + (3 * u2 - 4 * u + 1) * m0 + (3 * u2 - 2 * u) * m1;
  return {value, derivative};
}

}  // namespace

// With s = (1 − t)·N on segment k = ⌊s⌋, u = s − k: λ = log ᾱ by the monotone cubic through the steps,
// α = e^{λ/2}, σ = √(1 − e^λ); dλ/dt = −N·dλ/du, α̇ = ½λ̇α, σ̇ = −αα̇/σ.
SchedulerValues DDPMScheduler::operator()(const at::Tensor& t) const {
  check_time(t, "DDPMScheduler");
  const int64_t n = options_.steps();
  at::Tensor table = log_alpha_bar_.to(t.device()), slopes = slopes_.to(t.device());
  at::Tensor s = ((1 - t.to(at::kDouble)) * static_cast<double>(n)).clamp(0, static_cast<double>(n));
  at::Tensor k = s.floor().clamp(0, static_cast<double>(n - 1)).to(at::kLong);
  auto [lambda, d_lambda] = hermite(s - k.to(at::kDouble), table.index({k}), table.index({k + 1}), slopes.index({k}), slopes.index({k + 1}));
  at::Tensor a = at::exp(0.5 * lambda);
  at::Tensor sigma = at::sqrt(-at::expm1(lambda));
  at::Tensor da = -0.5 * static_cast<double>(n) * d_lambda * a;
  at::Tensor dsigma = -a * da / sigma;
  const auto type = t.scalar_type();
  return {a.to(type), sigma.to(type), da.to(type), dsigma.to(type)};
}

// ρ² = ᾱ/(1 − ᾱ) ⇒ λ = −log(1 + 1/ρ²): the segment from the (decreasing) table, then Newton on the
// monotone cubic from the linear interpolation's u (bracketed in [0, 1]).
at::Tensor DDPMScheduler::time_at_snr(const at::Tensor& snr) const {
  const int64_t n = options_.steps();
  if (snr.numel() == 0) return at::empty_like(snr);
  at::Tensor table = log_alpha_bar_.to(snr.device()), slopes = slopes_.to(snr.device());
  at::Tensor target = -at::log1p(1 / snr.to(at::kDouble).square());
  at::Tensor k = (at::searchsorted(-table, -target) - 1).clamp(0, n - 1);
  at::Tensor l0 = table.index({k}), l1 = table.index({k + 1}), m0 = slopes.index({k}), m1 = slopes.index({k + 1});
  at::Tensor u = ((target - l0) / (l1 - l0)).clamp(0, 1).nan_to_num(0);
  for (int i = 0; i < 30; ++i) {
    auto [value, derivative] = hermite(u, l0, l1, m0, m1);
    at::Tensor next = (u - (value - target) / derivative).nan_to_num(0).clamp(0, 1);
    const bool done = (next - u).abs().max().item<double>() < 1e-15;
    u = next;
    if (done) break;
  }
  return (1 - (k.to(at::kDouble) + u) / static_cast<double>(n)).clamp(0, 1).to(snr.scalar_type());
}

nlohmann::json DDPMScheduler::spec() const {
  nlohmann::json j = {{"type", "ddpm-" + options_.beta_schedule()}, {"steps", options_.steps()}};
  if (options_.beta_schedule() == "linear") j["beta_start"] = options_.beta_start(), j["beta_end"] = options_.beta_end();
  return j;
}

at::Tensor ddpm_time_of_step(const at::Tensor& n, int64_t steps) {
  if (steps < 1) throw std::invalid_argument("DDPM steps must be >= 1, got " + std::to_string(steps));
  return 1 - n.to(at::kDouble) / static_cast<double>(steps);
}
at::Tensor ddpm_step_of_time(const at::Tensor& t, int64_t steps) {
  if (steps < 1) throw std::invalid_argument("DDPM steps must be >= 1, got " + std::to_string(steps));
  return (1 - t.to(at::kDouble)) * static_cast<double>(steps);
}

// ---- factory ------------------------------------------------------------------------------------

std::vector<std::string> scheduler_names() {
  return {"condot", "polynomial", "cosine", "vp", "linear-vp", "ve", "ddpm-linear", "ddpm-cosine"};
}

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
    if (type == "ddpm-linear" || type == "ddpm-cosine") {
      return std::make_shared<DDPMScheduler>(DDPMSchedulerOptions()
                                                 .beta_schedule(type.substr(5))
                                                 .steps(p.value("steps", int64_t{1000}))
                                                 .beta_start(p.value("beta_start", 1e-4))
                                                 .beta_end(p.value("beta_end", 0.02)));
    }
    if (type == "ve") {
      return std::make_shared<VEScheduler>(
          VESchedulerOptions().sigma_min(p.value("sigma_min", 0.01)).sigma_max(p.value("sigma_max", 30.0)));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("scheduler " + spec.dump() + ": " + e.what());
  }
  throw std::invalid_argument("unknown scheduler '" + type +
                              "' (expected: condot, polynomial, cosine, vp, linear-vp, ve, ddpm-linear, ddpm-cosine)");
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
    TORCH_CHECK(r.numel() == 1 || (r.dim() == 1 && x.dim() >= 1 && r.size(0) == x.size(0)),
                "schedule transform: expected one time, or one per sample of the batch of ", x.sizes(), ", got shape ", r.sizes());
    if (x.dim() >= 1 && x.size(0) == 0) return at::zeros_like(x);  // an empty batch
    at::Tensor rr = r.to(at::kDouble).clamp(margin, 1 - margin);
    const SchedulerValues w = (*wanted)(rr);
    // The trained time with the same signal-to-noise ratio.
    at::Tensor tr = trained->time_at_snr(w.alpha / w.sigma).clamp(margin, 1 - margin);
    const SchedulerValues a = (*trained)(tr);
    // ρ̇ = (α̇σ − ασ̇)/σ²; ṫ_r = ρ̄̇(r) / ρ̇(t_r), written without dividing by σ when it is small.
    at::Tensor wronskian_ratio = (w.d_alpha * w.sigma - w.alpha * w.d_sigma) / (a.d_alpha * a.sigma - a.alpha * a.d_sigma);
    // s = σ̄/σ = ᾱ/α (equal SNR): per time, the ratio with the larger denominator (the other branch may
    // divide by zero; `where` keeps the chosen one).
    at::Tensor by_sigma = a.sigma >= a.alpha.abs();
    at::Tensor s = at::where(by_sigma, w.sigma / a.sigma, w.alpha / a.alpha);
    at::Tensor dt = at::where(by_sigma, wronskian_ratio * (a.sigma / w.sigma).pow(2), wronskian_ratio * (a.alpha / w.alpha).pow(2));
    at::Tensor ds = at::where(by_sigma, (w.d_sigma * a.sigma - w.sigma * a.d_sigma * dt) / (a.sigma * a.sigma),
                              (w.d_alpha * a.alpha - w.alpha * a.d_alpha * dt) / (a.alpha * a.alpha));
    // Per-sample coefficients broadcast over the sample's other dimensions, in x's dtype.
    std::vector<int64_t> shape(static_cast<size_t>(std::max<int64_t>(x.dim(), 1)), 1);
    if (r.numel() > 1) shape[0] = r.size(0);
    auto along_x = [&](const at::Tensor& c) {
      return c.reshape(r.numel() > 1 ? at::IntArrayRef(shape) : at::IntArrayRef{}).to(x.device(), x.scalar_type());
    };
    at::Tensor t_model = tr.to(r.options()).reshape(r.sizes());
    at::Tensor u = field(x / along_x(s), t_model);
    return u * along_x(s * dt) + x * along_x(ds / s);
  };
}

}  // namespace flowmatch
