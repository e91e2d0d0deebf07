#pragma once
/// \file
/// The space a solver's state lives in. Euclidean space is the default; a curved space (the sphere,
/// the torus: issue "Flow matching on manifolds") says how to bring a point back onto it after a
/// step, how to make a velocity tangent, and how to measure a local error for adaptive steps.

#include <memory>
#include <string>

#include <ATen/Tensor.h>

namespace flowmatch {

class Manifold {
 public:
  virtual ~Manifold() = default;
  virtual std::string name() const = 0;
  /// The point of the space nearest to each row of x (applied after every solver step).
  virtual at::Tensor project(const at::Tensor& x) const = 0;
  /// v made tangent at x (applied to every velocity the solver evaluates).
  virtual at::Tensor project_tangent(const at::Tensor& x, const at::Tensor& v) const = 0;
  /// Dopri5's error control: per sample (shape (B)), the RMS of err / (atol + rtol·max(|a|, |b|))
  /// over the sample's coordinates, a and b the states before and after the step. Spaces whose
  /// coordinates are not on one scale override it.
  virtual at::Tensor error_ratio(const at::Tensor& err, const at::Tensor& a, const at::Tensor& b, double atol,
                                 double rtol) const;
};

/// R^d: projections are the identity.
class EuclideanSpace : public Manifold {
 public:
  std::string name() const override { return "euclidean"; }
  at::Tensor project(const at::Tensor& x) const override { return x; }
  at::Tensor project_tangent(const at::Tensor&, const at::Tensor& v) const override { return v; }
};

}  // namespace flowmatch
