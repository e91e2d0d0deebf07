#pragma once
/// \file
/// A velocity network for data on a manifold (`flowmatch/manifold.h`): an MLP that sees the
/// manifold's features of x (the sphere: x itself; the torus: cos θ and sin θ) and whose output is
/// made a tangent velocity at x (projected on the sphere; read as velocities of the embedded circles
/// on the torus). Every velocity it gives is tangent, so solvers that project their state stay on the
/// manifold and the likelihood's divergence is the manifold's.

#include <memory>

#include "flowmatch/manifold.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

/// Options for `ManifoldMLP`: the MLP's, and its input's Fourier features.
struct ManifoldMLPOptions {
  /* implicit */ ManifoldMLPOptions(MLPOptions mlp = MLPOptions()) : mlp_(std::move(mlp)) {}
  /// `dim` and `input_dim` are set from the manifold (its feature width, and the Fourier features').
  TORCH_ARG(MLPOptions, mlp);
  /// Number n of random frequencies (2n extra inputs); 0: none.
  TORCH_ARG(int64_t, fourier_features) = 0;
  /// Standard deviation of the frequencies, in cycles per unit of the features (the sphere: per
  /// radian, nearly, at small angles).
  TORCH_ARG(double, fourier_scale) = 4.0;
  TORCH_ARG(int64_t, fourier_seed) = 0;
};

class ManifoldMLPImpl : public VelocityModel {
 public:
  ManifoldMLPImpl(std::shared_ptr<const Manifold> manifold, ManifoldMLPOptions options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return {manifold_->coordinates()}; }
  nlohmann::json spec() const override;
  const std::shared_ptr<const Manifold>& manifold() const { return manifold_; }

 private:
  std::shared_ptr<const Manifold> manifold_;
  ManifoldMLPOptions options_;
  std::shared_ptr<MLPImpl> mlp_;
  at::Tensor frequencies_;  // (n, feature width), or undefined without Fourier features
};

/// The registration of "manifold-mlp" (its user options are the MLP's and fourier_features,
/// fourier_scale, fourier_seed; the manifold comes from the data, as the option "manifold").
ModelRegistration manifold_mlp_registration();

}  // namespace flowmatch::models
