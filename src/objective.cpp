#include "flowmatch/objective.h"

#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "flowmatch/autocast.h"
#include "flowmatch/discrete_path.h"
#include "flowmatch/loss.h"
#include "flowmatch/paths.h"
#include "flowmatch/autoregressive.h"
#include "registry.h"

namespace flowmatch {

TrainingBatch TrainingBatch::to(const c10::Device& device) const {
  auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  TrainingBatch out;
  out.x_t = move(x_t);
  out.t = move(t);
  out.target = move(target);
  out.weight = move(weight);
  out.labels = move(labels);
  out.x0 = move(x0);
  out.x1 = move(x1);
  out.condition = condition.to(device);
  return out;
}

at::Tensor Objective::loss_and_gradients(models::VelocityModel& model, const TrainingBatch& batch, bool) const {
  return autograd_loss_and_gradients(model, batch);
}

at::Tensor Objective::autograd_loss_and_gradients(models::VelocityModel& model, const TrainingBatch& batch,
                                                  std::optional<c10::DeviceType> autocast_bf16_on) const {
  for (auto& p : model.parameters())
    if (p.grad().defined()) p.mutable_grad().zero_();
  at::Tensor value;
  {
    std::optional<AutocastGuard> autocast;
    if (autocast_bf16_on) autocast.emplace(*autocast_bf16_on, at::kBFloat16);
    value = loss(model, batch);
  }
  value.backward();  // outside autocast, as PyTorch advises: each op's gradient in its forward's dtype
  return value.detach();  // not read here: on a GPU, reading waits for the device
}

at::Tensor RegressionObjective::loss(models::VelocityModel& model, const TrainingBatch& batch) const {
  if (!batch.target.defined()) throw std::invalid_argument("the regression objective needs a batch with a target");
  return flow_matching_loss(model.forward_with(batch.x_t, batch.t, batch.condition), batch.target, batch.weight);
}

at::Tensor RegressionObjective::loss_and_gradients(models::VelocityModel& model, const TrainingBatch& batch, bool allow_fused) const {
  if (allow_fused && batch.condition.empty() && model.supports_fused_regression()) {
    return model.fused_regression_loss_and_gradients(batch.x_t, batch.t, batch.target, batch.weight);  // replaces .grad()
  }
  return Objective::loss_and_gradients(model, batch, allow_fused);
}

at::Tensor RiemannianObjective::loss(models::VelocityModel& model, const TrainingBatch& batch) const {
  if (!batch.target.defined()) throw std::invalid_argument("the riemannian objective needs a batch with a target");
  at::Tensor v = model.forward_with(batch.x_t, batch.t, batch.condition);
  TORCH_CHECK(v.sizes() == batch.target.sizes(), "riemannian objective: velocity ", v.sizes(), " and target ",
              batch.target.sizes(), " differ in shape");
  at::Tensor per_sample = (v - batch.target).square().reshape({v.size(0), -1}).sum(1);
  if (batch.weight.defined()) per_sample = per_sample * batch.weight.reshape({-1});
  return per_sample.mean();
}

at::Tensor CrossEntropyObjective::loss(models::VelocityModel& model, const TrainingBatch& batch) const {
  if (!batch.x1.defined() || batch.x1.scalar_type() != at::kLong) {
    throw std::invalid_argument("the cross-entropy objective needs token data (int64 x1)");
  }
  at::Tensor logits = model.forward_with(batch.x_t, batch.t, batch.condition);
  TORCH_CHECK(logits.dim() == batch.x1.dim() + 1 && logits.sizes().slice(0, batch.x1.dim()) == batch.x1.sizes(),
              "cross-entropy objective: logits ", logits.sizes(), " do not match the tokens ", batch.x1.sizes());
  at::Tensor nll = -at::log_softmax(logits, -1).gather(-1, batch.x1.unsqueeze(-1)).squeeze(-1);
  at::Tensor per_sample = nll.reshape({nll.size(0), -1}).mean(1);
  if (batch.weight.defined()) per_sample = per_sample * batch.weight.reshape({-1});
  return per_sample.mean();
}

GeneralizedKLObjective::GeneralizedKLObjective(std::shared_ptr<const MixtureDiscretePath> path) : path_(std::move(path)) {
  if (!path_) throw std::invalid_argument("the generalized-kl objective needs a mixture-discrete path (token data)");
}

nlohmann::json GeneralizedKLObjective::spec() const { return {{"type", "generalized-kl"}, {"path", path_->spec()}}; }

at::Tensor GeneralizedKLObjective::loss(models::VelocityModel& model, const TrainingBatch& batch) const {
  if (!batch.x1.defined() || batch.x1.scalar_type() != at::kLong) {
    throw std::invalid_argument("the generalized-kl objective needs token data (int64 x1)");
  }
  at::Tensor logits = model.forward_with(batch.x_t, batch.t, batch.condition);
  at::Tensor per_token = generalized_kl(logits, batch.x1, batch.x_t, batch.t, *path_);
  at::Tensor per_sample = per_token.reshape({per_token.size(0), -1}).mean(1);
  if (batch.weight.defined()) per_sample = per_sample * batch.weight.reshape({-1});
  return per_sample.mean();
}

namespace {
detail::Registry<ObjectiveFactory>& objective_registry() {
  static auto* registry = [] {
    auto* r = new detail::Registry<ObjectiveFactory>;
    r->add("regression", [](const nlohmann::json&) { return std::make_shared<RegressionObjective>(); });
    r->add("riemannian", [](const nlohmann::json&) { return std::make_shared<RiemannianObjective>(); });
    r->add("cross-entropy", [](const nlohmann::json&) { return std::make_shared<CrossEntropyObjective>(); });
    r->add("autoregressive", [](const nlohmann::json&) { return std::make_shared<AutoregressiveObjective>(); });
    r->add("generalized-kl", [](const nlohmann::json& spec) {
      auto path = spec.contains("path") ? std::dynamic_pointer_cast<const MixtureDiscretePath>(make_path(spec["path"])) : nullptr;
      return std::make_shared<GeneralizedKLObjective>(path);
    });
    return r;
  }();
  return *registry;
}
}  // namespace

void register_objective(const std::string& type, ObjectiveFactory factory) {
  if (type.empty() || !factory) throw std::invalid_argument("register_objective: a name and a factory are required");
  objective_registry().add(type, std::move(factory));
}

std::vector<std::string> objective_names() { return objective_registry().names(); }

std::shared_ptr<Objective> make_objective(const nlohmann::json& spec) {
  const nlohmann::json s = spec.is_string() ? nlohmann::json{{"type", spec}} : spec;
  if (!s.is_object() || !s.contains("type") || !s["type"].is_string()) {
    throw std::invalid_argument("objective must be a name or an object with a string \"type\", got " + spec.dump());
  }
  const std::string type = s["type"];
  const auto factory = objective_registry().find(type);
  if (!factory) throw std::invalid_argument("unknown objective '" + type + "' (expected one of: " + objective_registry().known() + ")");
  return (*factory)(s);
}

}  // namespace flowmatch
