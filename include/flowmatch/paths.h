#pragma once
/// \file
/// Conditional probability paths: given a source point x₀ (noise, t = 0), a data point x₁ (t = 1)
/// and a time t, a path returns a point x_t and the conditional velocity d/dt x_t that the network
/// regresses on. The affine Gaussian family x_t = α_t·x₁ + σ_t·x₀ (+ interpolant noise γ_t·z) is
/// given by a `Scheduler` (schedulers.h); formulas in docs/PATHS.md.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include "flowmatch/manifold.h"
#include "flowmatch/schedulers.h"

namespace flowmatch {

/// One draw from a conditional path: x_t and its target velocity (same shape as x₀), with the
/// endpoints and times it was drawn from (the regression targets of other parameterisations).
struct PathSample {
  at::Tensor x_t;
  at::Tensor velocity;
  at::Tensor x0, x1;
  at::Tensor t;  ///< (B)
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
  /// The scheduler of an affine Gaussian path; null for paths outside that family.
  virtual std::shared_ptr<const Scheduler> scheduler() const { return nullptr; }
  /// True when x_t carries noise besides α_t·x₁ + σ_t·x₀ (then only velocity is a valid target).
  virtual bool has_interpolant_noise() const { return false; }
  /// Where sampling starts at t = 0 from source draws x₀: α₀·x₁ + σ₀·x₀ without the unknown x₁,
  /// i.e. σ₀·x₀ (exact when α₀ = 0; for VE, α₀ = 1 and σ₀ = σ_max ≫ the data, as in Song et al.).
  virtual at::Tensor start(const at::Tensor& x0) const { return x0; }
  /// The space the path lives in (null: Euclidean). Solvers of a flow on this path project onto it.
  virtual std::shared_ptr<const Manifold> manifold() const { return nullptr; }
};

/// Extra Gaussian noise γ_t·z (z ~ N(0, I)) added to an affine path's x_t.
enum class InterpolantNoise {
  None,
  /// γ_t = s: constant smoothing (I-CFM, TorchCFM's `sigma`); adds nothing to the velocity.
  Constant,
  /// γ_t = s·√(t(1 − t)): the Brownian bridge of Schrödinger-bridge CFM; adds γ̇_t·z to the velocity.
  BrownianBridge,
};
InterpolantNoise interpolant_noise_from_string(const std::string& name);
std::string to_string(InterpolantNoise noise);

struct AffinePathOptions {
  TORCH_ARG(InterpolantNoise, noise) = InterpolantNoise::None;
  /// s in the formulas above (≥ 0; 0 means no noise whatever `noise` says).
  TORCH_ARG(double, noise_scale) = 0.0;
};

/// x_t = α_t·x₁ + σ_t·x₀ + γ_t·z,  u_t = α̇_t·x₁ + σ̇_t·x₀ + γ̇_t·z: the conditional velocity of the
/// Gaussian path N(α_t·x₁ + σ_t·x₀, γ_t²·I). For the Brownian bridge γ̇ diverges at t = 0 and 1; it
/// is evaluated with t(1 − t) floored at 1e-8, so a draw of exactly t = 0 stays finite.
class AffinePath : public ProbabilityPath {
 public:
  explicit AffinePath(std::shared_ptr<const Scheduler> scheduler, AffinePathOptions options = {});
  PathSample sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
  std::shared_ptr<const Scheduler> scheduler() const override { return scheduler_; }
  bool has_interpolant_noise() const override;
  at::Tensor start(const at::Tensor& x0) const override;
  const AffinePathOptions& options() const { return options_; }

 private:
  std::shared_ptr<const Scheduler> scheduler_;
  AffinePathOptions options_;
  double sigma0_ = 1;
  bool straight_ = false;  // CondOT with σ_min = 0
};

/// Options for `CondOTPath`.
struct CondOTPathOptions {
  /// Constant Gaussian smoothing σ around the straight line (I-CFM, TorchCFM's `sigma`):
  /// x_t = (1 − t)x₀ + t x₁ + σε, ε ~ N(0, I). The target velocity stays x₁ − x₀.
  TORCH_ARG(double, sigma) = 0.0;
};

/// The straight (conditional optimal-transport) path x_t = (1 − t)x₀ + t x₁ (+ σε), u_t = x₁ − x₀:
/// an `AffinePath` with the CondOT scheduler and constant noise σ.
class CondOTPath : public AffinePath {
 public:
  explicit CondOTPath(CondOTPathOptions options = CondOTPathOptions());
};

/// Riemannian flow matching's geodesic path (Chen & Lipman 2024): x_t = exp_{x₀}(κ_t·log_{x₀}(x₁)),
/// u_t = κ̇_t·γ'(κ_t) with γ(s) = exp_{x₀}(s·log_{x₀}(x₁)) the geodesic from x₀ to x₁ (on the sphere
/// u_t = κ̇_t/(1 − κ_t)·log_{x_t}(x₁); on the flat torus u_t = κ̇_t·wrap(x₁ − x₀)). κ_t is the α_t of
/// a scheduler with α₀ = 0 and α₁ = 1 (condot: κ = t; polynomial: tⁿ; cosine: sin(πt/2)). Only the
/// velocity is a target here (`scheduler()` is null: no data or noise prediction on a manifold).
class GeodesicPath : public ProbabilityPath {
 public:
  GeodesicPath(std::shared_ptr<const Manifold> manifold, std::shared_ptr<const Scheduler> scheduler);
  PathSample sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
  std::shared_ptr<const Manifold> manifold() const override { return manifold_; }
  const std::shared_ptr<const Scheduler>& kappa() const { return kappa_; }

 private:
  std::shared_ptr<const Manifold> manifold_;
  std::shared_ptr<const Scheduler> kappa_;
};

/// Path names for the CLI (the scheduler names: condot, polynomial, cosine, vp, linear-vp, ve).
std::vector<std::string> path_names();

/// Rebuilds a path from `spec()` (also reads the older {"type": "condot", "sigma": s}; a geodesic path
/// is {"type": "geodesic", "manifold": ..., "scheduler": ...}); throws
/// std::invalid_argument naming an unknown type or bad parameter.
std::shared_ptr<ProbabilityPath> make_path(const nlohmann::json& spec);

}  // namespace flowmatch
