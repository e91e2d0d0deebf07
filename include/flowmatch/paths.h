#pragma once
/// \file
/// Conditional probability paths: given a source point x₀ (noise, t = 0), a data point
/// x₁ (t = 1) and a time t, a path returns a point x_t and the conditional velocity
/// d/dt x_t that the network regresses on.

#include <memory>
#include <optional>
#include <string>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/arg.h>

namespace flowmatch {

/// One draw from a conditional path: x_t and its target velocity (same shape as x₀).
struct PathSample {
  at::Tensor x_t;
  at::Tensor velocity;
};

/// Broadcasts a per-sample time of shape (B) (or 0-dim) against x of shape (B, ...).
at::Tensor expand_time_like(const at::Tensor& t, const at::Tensor& x);

/// A conditional probability path p_t(x | x₀, x₁).
class ProbabilityPath {
 public:
  virtual ~ProbabilityPath() = default;
  /// x₀, x₁: (B, ...) of equal shape; t: (B) in [0, 1]. `generator` feeds any path noise.
  virtual PathSample sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                            std::optional<at::Generator> generator = std::nullopt) const = 0;
  /// Stored in a run's config.json; `make_path` rebuilds the path from it.
  virtual nlohmann::json spec() const = 0;
};

/// Options for `CondOTPath`.
struct CondOTPathOptions {
  /// Standard deviation σ of constant Gaussian smoothing around the straight line (I-CFM, TorchCFM's
  /// `sigma`): x_t = (1 − t)x₀ + t x₁ + σε, ε ~ N(0, I). The target velocity stays x₁ − x₀.
  TORCH_ARG(double, sigma) = 0.0;
};

/// The straight (conditional optimal-transport) path x_t = (1 − t)x₀ + t x₁ (+ σε), u_t = x₁ − x₀.
class CondOTPath : public ProbabilityPath {
 public:
  explicit CondOTPath(CondOTPathOptions options = CondOTPathOptions());
  PathSample sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
  const CondOTPathOptions& options() const { return options_; }

 private:
  CondOTPathOptions options_;
};

/// Rebuilds a path from `spec()`; throws std::invalid_argument naming the unknown type.
std::shared_ptr<ProbabilityPath> make_path(const nlohmann::json& spec);

}  // namespace flowmatch
