#pragma once
/// \file
/// What training minimises. A batch source draws a `TrainingBatch` (the pairs, times, points on the
/// path and what they condition on); an `Objective` turns the model's output on it into a loss. The
/// conditional flow-matching regression is one objective (`RegressionObjective`); a cross-entropy
/// over tokens, a Riemannian norm or an ε-prediction diffusion loss are others, added with
/// `register_objective` without touching the trainer.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/DeviceType.h>
#include <nlohmann/json.hpp>

#include "flowmatch/models/velocity_model.h"

namespace flowmatch {

/// One minibatch ready for an objective: the coupled pairs (x0, x1), their times t (B), the points
/// x_t on the path, the regression target of the problem's prediction target, per-sample loss
/// weights (undefined when unweighted), and the conditioning (labels after label dropout, ...).
/// `labels` repeats `condition.labels` for the class-conditional case.
struct TrainingBatch {
  at::Tensor x_t, t, target, weight, labels;
  at::Tensor x0, x1;
  models::Conditioning condition;
  /// Every defined tensor moved to `device`.
  TrainingBatch to(const c10::Device& device) const;
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;
  /// The description `make_objective` rebuilds it from ({"type": name, ...}).
  virtual nlohmann::json spec() const = 0;
  /// The (differentiable) loss of `model` on `batch`, a 0-dim tensor.
  virtual at::Tensor loss(models::VelocityModel& model, const TrainingBatch& batch) const = 0;
  /// The loss value, with its gradients in the parameters' .grad() (replacing what was there).
  /// The value is a detached 0-dim tensor, on the model's device: reading it (`.item()`) waits for
  /// that device, so the caller decides when (the trainer, on a GPU, once per report).
  /// The default zeroes the gradients, then loss() and backward(); an objective may use a model
  /// capability instead (the regression uses `supports_fused_regression` when `allow_fused`).
  virtual at::Tensor loss_and_gradients(models::VelocityModel& model, const TrainingBatch& batch, bool allow_fused) const;
  /// The default's work: zero the gradients, loss() (under bf16 autocast on `autocast_bf16_on` when
  /// given, autocast.h), then backward outside autocast. The trainer calls it directly for mixed
  /// precision, where no model capability (fused gradients) applies.
  at::Tensor autograd_loss_and_gradients(models::VelocityModel& model, const TrainingBatch& batch,
                                         std::optional<c10::DeviceType> autocast_bf16_on = std::nullopt) const;
};

/// Conditional flow matching's regression (TorchCFM, flow_matching): the weighted mean squared
/// error between the network's output and the batch's target, averaged over every element,
///   L = 1/(B·D) Σ_b w_b ‖v_θ(x_t, t, c)_b − target_b‖².
class RegressionObjective : public Objective {
 public:
  std::string name() const override { return "regression"; }
  nlohmann::json spec() const override { return {{"type", "regression"}}; }
  at::Tensor loss(models::VelocityModel& model, const TrainingBatch& batch) const override;
  at::Tensor loss_and_gradients(models::VelocityModel& model, const TrainingBatch& batch, bool allow_fused) const override;
};

/// Riemannian flow matching's loss (Chen & Lipman 2024): the metric's squared norm of the error,
/// averaged over the batch, L = 1/B Σ_b w_b ‖v_θ(x_t, t)_b − u_t,b‖²_g. For the manifolds of
/// manifold.h the metric is the Euclidean one of the coordinates (the sphere in R^(d+1), the torus in
/// angles), so the norm is the sum of squares over coordinates; the network's velocity is tangent
/// (models::ManifoldMLPImpl), and so is the target.
class RiemannianObjective : public Objective {
 public:
  std::string name() const override { return "riemannian"; }
  nlohmann::json spec() const override { return {{"type", "riemannian"}}; }
  at::Tensor loss(models::VelocityModel& model, const TrainingBatch& batch) const override;
};

class MixtureDiscretePath;

/// Discrete flow matching (discrete_path.h): the network gives logits (B, L, V) of the posterior
/// p_θ(x₁ | x_t) and the loss is the cross-entropy at the data tokens, mean over every token,
/// L = −1/(B·L) Σ log p_θ(x₁ⁱ | x_t) (per-sample weights multiply each sequence's mean).
class CrossEntropyObjective : public Objective {
 public:
  std::string name() const override { return "cross-entropy"; }
  nlohmann::json spec() const override { return {{"type", "cross-entropy"}}; }
  at::Tensor loss(models::VelocityModel& model, const TrainingBatch& batch) const override;
};

/// The mixture path's generalized KL (`generalized_kl`, discrete_path.h), mean over every token
/// (flow_matching's MixturePathGeneralizedKL). Its weight κ̇/(1 − κ) diverges at t = 1, so runs draw
/// t in [0, 1 − 10⁻³) (--time-max). The spec carries the path: {"type": "generalized-kl", "path": ...}.
class GeneralizedKLObjective : public Objective {
 public:
  explicit GeneralizedKLObjective(std::shared_ptr<const MixtureDiscretePath> path);
  std::string name() const override { return "generalized-kl"; }
  nlohmann::json spec() const override;
  at::Tensor loss(models::VelocityModel& model, const TrainingBatch& batch) const override;

 private:
  std::shared_ptr<const MixtureDiscretePath> path_;
};

using ObjectiveFactory = std::function<std::shared_ptr<Objective>(const nlohmann::json& spec)>;
/// Adds (or replaces) an objective type. Built in: regression, riemannian, cross-entropy,
/// generalized-kl. Runs pass their path as spec["path"] (objectives that need it read it).
void register_objective(const std::string& type, ObjectiveFactory factory);
std::vector<std::string> objective_names();
/// From a spec ({"type": ...}) or a bare name; std::invalid_argument listing the names when unknown.
std::shared_ptr<Objective> make_objective(const nlohmann::json& spec);

}  // namespace flowmatch
