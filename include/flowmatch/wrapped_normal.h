#pragma once
/// \file
/// The wrapped normal on the sphere and the torus: a Gaussian in the tangent space at a base point,
/// carried onto the manifold by the exponential map. It is the source of flow_matching's Riemannian
/// notebooks (torus: N(0, I) angles at the origin, wrapped; sphere: N(0, σ²I) in the tangent plane at
/// the north pole e_(d+1), σ = 1/2, then exp), with its exact log-density against the area measure:
/// - T^d: Π_i Σ_k N(θ_i + 2πk; 0, σ²) (the sum over windings, |k| ≤ 8);
/// - S^d: a point at geodesic distance r from the pole is reached by the tangent vectors of length
///   s = r + 2πk and s = 2π(k+1) − r (k ≥ 0); each adds N(s)·(s / sin r)^(d−1) (the exponential map's
///   Jacobian is (sin s / s)^(d−1), |sin s| = sin r). The density is infinite at the antipode (r = π),
///   where a whole sphere of tangent vectors lands (and, through windings of weight N(2π), at the pole):
///   sin r is floored at 1e-12 there.

#include <memory>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

#include "flowmatch/manifold.h"

namespace flowmatch {

class WrappedNormal {
 public:
  /// `manifold` a Sphere or a FlatTorus (std::invalid_argument otherwise); `scale` σ > 0.
  WrappedNormal(std::shared_ptr<const Manifold> manifold, double scale);
  /// The scale of flow_matching's notebooks: 1 on the torus, 1/2 on the sphere.
  static double notebook_scale(const Manifold& manifold);

  const Manifold& manifold() const { return *manifold_; }
  double scale() const { return scale_; }
  /// The base point (1, coordinates): the origin of the torus, the north pole of the sphere.
  at::Tensor base(const at::TensorOptions& options) const;
  at::Tensor sample(int64_t n, at::Generator& generator, const at::TensorOptions& options) const;
  /// log p(x) per row (B) against the manifold's volume measure (computed in float64).
  at::Tensor log_density(const at::Tensor& x) const;

 private:
  std::shared_ptr<const Manifold> manifold_;
  double scale_;
  bool sphere_;
};

}  // namespace flowmatch
