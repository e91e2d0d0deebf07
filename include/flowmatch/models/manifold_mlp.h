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

class ManifoldMLPImpl : public VelocityModel {
 public:
  /// `options.dim()` is ignored: the MLP's width in and out is the manifold's feature width.
  ManifoldMLPImpl(std::shared_ptr<const Manifold> manifold, MLPOptions options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return {manifold_->coordinates()}; }
  nlohmann::json spec() const override;
  const std::shared_ptr<const Manifold>& manifold() const { return manifold_; }

 private:
  std::shared_ptr<const Manifold> manifold_;
  std::shared_ptr<MLPImpl> mlp_;
};

/// The registration of "manifold-mlp" (its user options are the MLP's; the manifold comes from the
/// data, as the option "manifold").
ModelRegistration manifold_mlp_registration();

}  // namespace flowmatch::models
