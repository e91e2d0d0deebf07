#include "flowmatch/models/manifold_mlp.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace flowmatch::models {

namespace {

// Bad Fourier-feature values are named.
void check_fourier_options(const ManifoldMLPOptions& o) {
  if (o.fourier_features() < 0 || o.fourier_features() > 65536) {
    throw std::invalid_argument("model manifold-mlp fourier_features " + std::to_string(o.fourier_features()) +
                                ": expected an integer in [0, 65536] (0: none)");
  }
  if (!(std::isfinite(o.fourier_scale()) && o.fourier_scale() > 0)) {
    throw std::invalid_argument("model manifold-mlp fourier_scale " + std::to_string(o.fourier_scale()) + ": expected a number > 0");
  }
  if (o.fourier_seed() < 0) {
    throw std::invalid_argument("model manifold-mlp fourier_seed " + std::to_string(o.fourier_seed()) + ": expected an integer >= 0");
  }
}

// Fourier-feature options from a description (keys with underscores): absent keys take the defaults.
ManifoldMLPOptions fourier_options_from_json(ManifoldMLPOptions o, const nlohmann::json& j) {
  try {
    o.fourier_features(j.value("fourier_features", o.fourier_features()))
        .fourier_scale(j.value("fourier_scale", o.fourier_scale()))
        .fourier_seed(j.value("fourier_seed", o.fourier_seed()));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("model manifold-mlp Fourier options " + j.dump() + ": " + e.what());
  }
  check_fourier_options(o);
  return o;
}

// Their entries in a description: none without Fourier features, so older descriptions read the same.
void add_fourier_options(nlohmann::json& options, const ManifoldMLPOptions& o) {
  if (o.fourier_features() == 0) return;
  options["fourier_features"] = o.fourier_features();
  options["fourier_scale"] = o.fourier_scale();
  options["fourier_seed"] = o.fourier_seed();
}

}  // namespace

ManifoldMLPImpl::ManifoldMLPImpl(std::shared_ptr<const Manifold> manifold, ManifoldMLPOptions options)
    : manifold_(std::move(manifold)), options_(std::move(options)) {
  if (!manifold_ || manifold_->coordinates() < 1) {
    throw std::invalid_argument("manifold-mlp needs a sphere, a torus or a product of them");
  }
  check_fourier_options(options_);
  const int64_t features = manifold_->feature_dim(), n = options_.fourier_features();
  MLPOptions mlp = options_.mlp();
  mlp.dim(features).input_dim(n > 0 ? features + 2 * n : 0);
  options_.mlp(mlp);
  mlp_ = register_module("mlp", std::make_shared<MLPImpl>(mlp));
  if (n > 0) {
    at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(options_.fourier_seed()));
    at::Tensor b = at::randn({n, features}, generator, at::TensorOptions().dtype(at::kFloat));
    frequencies_ = register_buffer("fourier_frequencies", b.mul_(options_.fourier_scale() * 2 * M_PI));
  }
}

at::Tensor ManifoldMLPImpl::forward(const at::Tensor& x, const at::Tensor& t) {
  at::Tensor f = manifold_->features(x);
  if (frequencies_.defined()) {
    const at::Tensor angles = at::mm(f, frequencies_.to(f.dtype()).t());
    f = at::cat({f, at::sin(angles), at::cos(angles)}, 1);
  }
  return manifold_->velocity_from_features(x, mlp_->forward(f, t));
}

nlohmann::json ManifoldMLPImpl::spec() const {
  nlohmann::json options = to_json(mlp_->options);
  options.erase("dim");
  options.erase("input_dim");
  add_fourier_options(options, options_);
  return {{"type", "manifold-mlp"}, {"manifold", manifold_->spec()}, {"options", options}};
}

ModelRegistration manifold_mlp_registration() {
  const std::vector<std::string> keys = {"width",         "depth",            "activation",    "time_encoding", "time_features",
                                         "dropout",       "fourier_features", "fourier_scale", "fourier_seed"};
  ModelRegistration r;
  r.describe = [keys](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
    if (classes > 0) throw std::invalid_argument("model manifold-mlp is not class-conditional");
    nlohmann::json options = given.is_object() ? given : nlohmann::json::object();
    if (!options.contains("manifold")) {
      throw std::invalid_argument("model manifold-mlp needs data on a manifold (a sphere or torus data set, or --manifold)");
    }
    const auto manifold = make_manifold(options["manifold"]);
    options.erase("manifold");
    options = normalized_options("manifold-mlp", options, keys);  // underscores; unknown keys named
    const ManifoldMLPOptions checked = fourier_options_from_json(ManifoldMLPOptions(), options);
    for (const char* key : {"fourier_features", "fourier_scale", "fourier_seed"}) options.erase(key);
    if (shape.size() != 1 || shape[0] != manifold->coordinates()) {
      throw std::invalid_argument("model manifold-mlp on the " + manifold->name() + " takes points of " +
                                  std::to_string(manifold->coordinates()) + " coordinates");
    }
    // The MLP's own description checks the options.
    nlohmann::json mlp = model_registration("mlp").describe({manifold->feature_dim()}, 0, options);
    mlp["options"].erase("dim");
    add_fourier_options(mlp["options"], checked);
    return nlohmann::json{{"type", "manifold-mlp"}, {"manifold", manifold->spec()}, {"options", mlp["options"]}};
  };
  r.build = [](const nlohmann::json& spec) -> std::shared_ptr<VelocityModel> {
    if (!spec.contains("manifold")) throw std::invalid_argument("manifold-mlp description needs \"manifold\", got " + spec.dump());
    const auto manifold = make_manifold(spec["manifold"]);
    nlohmann::json options = spec.value("options", nlohmann::json::object());
    options["dim"] = manifold->feature_dim();
    options.erase("input_dim");
    return std::make_shared<ManifoldMLPImpl>(manifold,
                                             fourier_options_from_json(ManifoldMLPOptions(mlp_options_from_json(options)), options));
  };
  r.help = "MLP for data on a sphere or torus: sees the manifold's features (and fourier-features random frequencies of them, "
           "N(0, fourier-scale^2)), gives tangent velocities (width, depth, activation, time-encoding, dropout)";
  r.options = keys;
  return r;
}

}  // namespace flowmatch::models
