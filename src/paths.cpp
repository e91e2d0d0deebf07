#include "flowmatch/paths.h"

#include "flowmatch/discrete_path.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "enum_names.h"

namespace flowmatch {

at::Tensor expand_time_like(const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.defined() && x.defined(), "expand_time_like: undefined tensor");
  if (t.dim() == 0) return t.to(x.options());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(0), "time of shape ", t.sizes(),
              " does not match a batch of shape ", x.sizes(), " (expected (", x.size(0), "))");
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  return t.to(x.options()).view(shape);
}

namespace {
constexpr detail::EnumNames<InterpolantNoise, 3> kNoiseNames{{{InterpolantNoise::None, "none"},
                                                             {InterpolantNoise::Constant, "constant"},
                                                             {InterpolantNoise::BrownianBridge, "brownian-bridge"}}};
}  // namespace

InterpolantNoise interpolant_noise_from_string(const std::string& name) {
  return detail::enum_from_name(kNoiseNames, name, "interpolant noise");
}
std::string to_string(InterpolantNoise noise) { return detail::enum_name(kNoiseNames, noise); }

AffinePath::AffinePath(std::shared_ptr<const Scheduler> scheduler, AffinePathOptions options)
    : scheduler_(std::move(scheduler)), options_(options) {
  if (!scheduler_) throw std::invalid_argument("AffinePath: scheduler is null");
  const double s = options_.noise_scale();
  if (!(s >= 0.0) || !std::isfinite(s)) {
    throw std::invalid_argument("path noise scale (sigma) must be finite and >= 0, got " + std::to_string(s));
  }
  const SchedulerValues v = (*scheduler_)(at::zeros({}, at::kDouble));
  sigma0_ = v.sigma.item<double>();
  straight_ = scheduler_->spec() == CondOTScheduler().spec();
}

bool AffinePath::has_interpolant_noise() const {
  return options_.noise() != InterpolantNoise::None && options_.noise_scale() > 0;
}

at::Tensor AffinePath::start(const at::Tensor& x0) const { return sigma0_ == 1.0 ? x0 : x0 * sigma0_; }

PathSample AffinePath::sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                              std::optional<at::Generator> generator) const {
  TORCH_CHECK(x0.sizes() == x1.sizes(), "path: x0 ", x0.sizes(), " and x1 ", x1.sizes(), " must have the same shape");
  TORCH_CHECK(t.dim() <= 1, "path: time must have shape (B) or be a scalar, got ", t.sizes());
  at::Tensor tt = expand_time_like(t, x0);
  PathSample out;
  out.x0 = x0;
  out.x1 = x1;
  out.t = t;
  if (straight_) {  // the common case in two operations: u = x₁ − x₀, x_t = x₀ + t·u
    out.velocity = x1 - x0;
    out.x_t = at::addcmul(x0, tt, out.velocity);
  } else {
    const SchedulerValues v = (*scheduler_)(tt);
    out.x_t = v.alpha * x1 + v.sigma * x0;
    out.velocity = v.d_alpha * x1 + v.d_sigma * x0;
  }
  if (has_interpolant_noise()) {
    c10::optional<at::Generator> gen;
    if (generator) gen = *generator;
    at::Tensor z = at::randn(x0.sizes(), gen, x0.options());
    const double s = options_.noise_scale();
    if (options_.noise() == InterpolantNoise::Constant) {
      out.x_t.add_(z, s);
    } else {
      at::Tensor var = tt * (1 - tt);
      at::Tensor gamma = s * at::sqrt(var);
      at::Tensor d_gamma = s * (1 - 2 * tt) / (2 * at::sqrt(var.clamp_min(1e-8)));
      out.x_t.addcmul_(gamma, z);
      out.velocity.addcmul_(d_gamma, z);
    }
  }
  return out;
}

nlohmann::json AffinePath::spec() const {
  return {{"type", "affine"},
          {"scheduler", scheduler_->spec()},
          {"noise", to_string(options_.noise())},
          {"sigma", options_.noise_scale()}};
}

CondOTPath::CondOTPath(CondOTPathOptions options)
    : AffinePath(std::make_shared<CondOTScheduler>(),
                 AffinePathOptions().noise(InterpolantNoise::Constant).noise_scale(options.sigma())) {}

std::vector<std::string> path_names() { return scheduler_names(); }

GeodesicPath::GeodesicPath(std::shared_ptr<const Manifold> manifold, std::shared_ptr<const Scheduler> scheduler)
    : manifold_(std::move(manifold)), kappa_(std::move(scheduler)) {
  if (!manifold_ || !kappa_) throw std::invalid_argument("geodesic path needs a manifold and a scheduler");
  const at::Tensor ends = at::tensor({0.0, 1.0}, at::kDouble);
  const SchedulerValues v = (*kappa_)(ends);
  if (std::abs(v.alpha[0].item<double>()) > 1e-9 || std::abs(v.alpha[1].item<double>() - 1) > 1e-9) {
    throw std::invalid_argument("geodesic path: scheduler " + kappa_->spec().dump() + " must have alpha 0 at t = 0 and 1 at t = 1 (got " +
                                std::to_string(v.alpha[0].item<double>()) + ", " + std::to_string(v.alpha[1].item<double>()) + ")");
  }
}

PathSample GeodesicPath::sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                                std::optional<at::Generator>) const {
  TORCH_CHECK(x0.sizes() == x1.sizes() && x0.dim() == 2, "geodesic path: x0 ", x0.sizes(), " and x1 ", x1.sizes(),
              " must both be (B, coordinates)");
  TORCH_CHECK(t.dim() <= 1, "path: time must have shape (B) or be a scalar, got ", t.sizes());
  at::Tensor tt = t.dim() == 0 ? t.expand({x0.size(0)}) : t;
  const SchedulerValues k = (*kappa_)(tt.to(x0.scalar_type()));
  auto [point, velocity] = manifold_->geodesic(x0, manifold_->logmap(x0, x1), k.alpha);
  PathSample out;
  out.x0 = x0;
  out.x1 = x1;
  out.t = t;
  out.x_t = point;
  out.velocity = k.d_alpha.reshape({-1, 1}) * velocity;
  return out;
}

nlohmann::json GeodesicPath::spec() const {
  return {{"type", "geodesic"}, {"manifold", manifold_->spec()}, {"scheduler", kappa_->spec()}};
}

std::shared_ptr<ProbabilityPath> make_path(const nlohmann::json& spec) {
  if (!spec.is_string() && !spec.is_object()) {
    throw std::invalid_argument("path description must be a name or an object, got " + spec.dump());
  }
  const std::string type = spec.is_string() ? spec.get<std::string>() : spec.value("type", std::string());
  try {
    if (type == "condot" && spec.is_object() && spec.contains("sigma") && !spec.contains("sigma_min")) {  // runs written before schedulers
      return std::make_shared<CondOTPath>(CondOTPathOptions().sigma(spec.value("sigma", 0.0)));
    }
    if (type == "geodesic") {
      if (!spec.is_object() || !spec.contains("manifold")) throw std::invalid_argument("geodesic path " + spec.dump() + " lacks 'manifold'");
      return std::make_shared<GeodesicPath>(make_manifold(spec.at("manifold")), make_scheduler(spec.value("scheduler", nlohmann::json("condot"))));
    }
    if (type == "mixture-discrete") {
      if (!spec.is_object() || !spec.contains("scheduler") || !spec.contains("vocabulary")) {
        throw std::invalid_argument("mixture-discrete path " + spec.dump() + " lacks 'scheduler' or 'vocabulary'");
      }
      return std::make_shared<MixtureDiscretePath>(make_scheduler(spec.at("scheduler")),
                                                   discrete_source_from_string(spec.value("source", std::string("uniform"))),
                                                   spec.at("vocabulary").get<int64_t>());
    }
    if (type == "affine") {
      if (!spec.contains("scheduler")) throw std::invalid_argument("affine path " + spec.dump() + " lacks 'scheduler'");
      return std::make_shared<AffinePath>(
          make_scheduler(spec.at("scheduler")),
          AffinePathOptions()
              .noise(interpolant_noise_from_string(spec.value("noise", std::string("none"))))
              .noise_scale(spec.value("sigma", 0.0)));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("path " + spec.dump() + ": " + e.what());
  }
  // A bare scheduler name: the noiseless affine path with that scheduler.
  for (const auto& name : scheduler_names()) {
    if (type == name) return std::make_shared<AffinePath>(make_scheduler(spec));
  }
  throw std::invalid_argument("unknown path '" + type + "' (expected: affine, geodesic, mixture-discrete, or a scheduler name: condot, polynomial, "
                              "cosine, vp, linear-vp, ve)");
}

}  // namespace flowmatch
