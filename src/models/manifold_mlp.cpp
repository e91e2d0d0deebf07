#include "flowmatch/models/manifold_mlp.h"

#include <stdexcept>

#include <ATen/ATen.h>

namespace flowmatch::models {

ManifoldMLPImpl::ManifoldMLPImpl(std::shared_ptr<const Manifold> manifold, MLPOptions options) : manifold_(std::move(manifold)) {
  if (!manifold_ || manifold_->coordinates() < 1) {
    throw std::invalid_argument("manifold-mlp needs a sphere, a torus or a product of them");
  }
  options.dim(manifold_->feature_dim());
  mlp_ = register_module("mlp", std::make_shared<MLPImpl>(options));
}

at::Tensor ManifoldMLPImpl::forward(const at::Tensor& x, const at::Tensor& t) {
  return manifold_->velocity_from_features(x, mlp_->forward(manifold_->features(x), t));
}

nlohmann::json ManifoldMLPImpl::spec() const {
  nlohmann::json options = to_json(mlp_->options);
  options.erase("dim");
  return {{"type", "manifold-mlp"}, {"manifold", manifold_->spec()}, {"options", options}};
}

ModelRegistration manifold_mlp_registration() {
  const std::vector<std::string> keys = {"width", "depth", "activation", "time_encoding", "time_features"};
  ModelRegistration r;
  r.describe = [keys](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
    if (classes > 0) throw std::invalid_argument("model manifold-mlp is not class-conditional");
    nlohmann::json options = given.is_object() ? given : nlohmann::json::object();
    if (!options.contains("manifold")) {
      throw std::invalid_argument("model manifold-mlp needs data on a manifold (a sphere or torus data set, or --manifold)");
    }
    const auto manifold = make_manifold(options["manifold"]);
    options.erase("manifold");
    if (shape.size() != 1 || shape[0] != manifold->coordinates()) {
      throw std::invalid_argument("model manifold-mlp on the " + manifold->name() + " takes points of " +
                                  std::to_string(manifold->coordinates()) + " coordinates");
    }
    // The MLP's own description checks the options.
    nlohmann::json mlp = model_registration("mlp").describe({manifold->feature_dim()}, 0, options);
    mlp["options"].erase("dim");
    return nlohmann::json{{"type", "manifold-mlp"}, {"manifold", manifold->spec()}, {"options", mlp["options"]}};
  };
  r.build = [](const nlohmann::json& spec) -> std::shared_ptr<VelocityModel> {
    if (!spec.contains("manifold")) throw std::invalid_argument("manifold-mlp description needs \"manifold\", got " + spec.dump());
    const auto manifold = make_manifold(spec["manifold"]);
    nlohmann::json options = spec.value("options", nlohmann::json::object());
    options["dim"] = manifold->feature_dim();
    return std::make_shared<ManifoldMLPImpl>(manifold, mlp_options_from_json(options));
  };
  r.help = "MLP for data on a sphere or torus: sees the manifold's features, gives tangent velocities (width, depth, activation, time-encoding)";
  r.options = keys;
  return r;
}

}  // namespace flowmatch::models
