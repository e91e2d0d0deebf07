#pragma once
/// \file
/// The space a flow's state lives in. Euclidean space is the default; a curved space says how to
/// bring a point back onto it after a solver step, how to make a velocity tangent, its geodesics
/// (exp and log maps), its uniform distribution and volume, and what a network should see of a point.
/// Built in (Riemannian flow matching, Chen & Lipman 2024):
/// - `Sphere`: S^d as unit vectors in R^(d+1), the metric of R^(d+1) restricted to it;
/// - `FlatTorus`: T^d as d angles in [−π, π), the flat metric;
/// - `ProductManifold`: factors side by side in the coordinates (e.g. S² × T²).
/// Points are rows of a (B, coordinates) tensor. `make_manifold` rebuilds one from `spec()`.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>

namespace flowmatch {

class Manifold {
 public:
  virtual ~Manifold() = default;
  virtual std::string name() const = 0;
  /// The description `make_manifold` rebuilds it from ({"type": ..., "dim": d}).
  virtual nlohmann::json spec() const;
  /// Coordinates of a point (S^d: d + 1; T^d: d); 0 for Euclidean space, which takes any.
  virtual int64_t coordinates() const { return 0; }
  /// The manifold's own dimension (S^d, T^d: d).
  virtual int64_t dimension() const { return coordinates(); }

  /// The point of the space nearest to each row of x (applied after every solver step).
  virtual at::Tensor project(const at::Tensor& x) const = 0;
  /// v made tangent at x (applied to every velocity the solver evaluates).
  virtual at::Tensor project_tangent(const at::Tensor& x, const at::Tensor& v) const = 0;

  /// exp_x(v): where the geodesic from x with initial velocity v (tangent) is at time 1.
  virtual at::Tensor expmap(const at::Tensor& x, const at::Tensor& v) const;
  /// log_x(y): the initial velocity of the shortest geodesic from x reaching y at time 1.
  virtual at::Tensor logmap(const at::Tensor& x, const at::Tensor& y) const;
  /// Geodesic distance per row (B).
  virtual at::Tensor distance(const at::Tensor& x, const at::Tensor& y) const;
  /// Geodesic distances between every row of x (n) and every row of y (m): (n, m). The default
  /// pairs the rows up and calls distance(); the sphere uses one matrix product (acos of ⟨x, y⟩).
  virtual at::Tensor pairwise_distance(const at::Tensor& x, const at::Tensor& y) const;
  /// The geodesic γ(s) = exp_x(s·v) at per-row times s (B) and its velocity γ'(s) (tangent at γ(s)).
  virtual std::pair<at::Tensor, at::Tensor> geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const;

  /// log of the total volume (S²: log 4π; T^d: d·log 2π). Throws for spaces of infinite volume.
  virtual double log_volume() const;
  /// n points of the uniform distribution (normalised volume measure).
  virtual at::Tensor sample_uniform(int64_t n, at::Generator& generator, const at::TensorOptions& options) const;

  /// What a network sees of x (default: x itself; the torus: cos θ and sin θ, continuous across
  /// the cut at ±π), its width, and the tangent velocity at x made of a network output of that width
  /// (default: the output projected to the tangent space).
  virtual at::Tensor features(const at::Tensor& x) const { return x; }
  virtual int64_t feature_dim() const { return coordinates(); }
  virtual at::Tensor velocity_from_features(const at::Tensor& x, const at::Tensor& output) const {
    return project_tangent(x, output);
  }

  /// The Riemannian divergence of a tangent field from its Jacobian J (B, D, D) in the coordinates
  /// (J[b][i][j] = ∂v_i/∂x_j) at points x: tr(J) for Euclidean space and the flat torus,
  /// tr(P J P) = tr(J) − xᵀJx for the sphere (P the tangent projection at x).
  virtual at::Tensor tangent_trace(const at::Tensor& x, const at::Tensor& jacobian) const;

  /// Dopri5's error control: per sample (shape (B)), the RMS of err / (atol + rtol·max(|a|, |b|))
  /// over the sample's coordinates, a and b the states before and after the step.
  virtual at::Tensor error_ratio(const at::Tensor& err, const at::Tensor& a, const at::Tensor& b, double atol,
                                 double rtol) const;

  /// Throws std::invalid_argument naming the first row of x (B, coordinates) farther than
  /// `tolerance` from the manifold (or of the wrong width), prefixed with `what`.
  void check_points(const at::Tensor& x, double tolerance, const std::string& what) const;
  /// Distance of each row from the manifold (|x| − 1 for the sphere; 0 for the torus's angles
  /// inside [−π, π]; else the distance to that range).
  virtual at::Tensor distance_from_manifold(const at::Tensor& x) const;
};

/// R^d: projections are the identity.
class EuclideanSpace : public Manifold {
 public:
  std::string name() const override { return "euclidean"; }
  nlohmann::json spec() const override { return {{"type", "euclidean"}}; }
  at::Tensor project(const at::Tensor& x) const override { return x; }
  at::Tensor project_tangent(const at::Tensor&, const at::Tensor& v) const override { return v; }
};

/// S^d ⊂ R^(d+1): unit vectors. exp_x(v) = cos|v|·x + sin|v|·v/|v|; log_x(y) = θ·u/|u| with
/// u = y − ⟨x, y⟩x and θ = atan2(|u|, ⟨x, y⟩) the geodesic distance; area 2π^((d+1)/2)/Γ((d+1)/2).
class Sphere : public Manifold {
 public:
  explicit Sphere(int64_t dimension = 2);
  std::string name() const override { return "sphere"; }
  int64_t coordinates() const override { return d_ + 1; }
  int64_t dimension() const override { return d_; }
  at::Tensor project(const at::Tensor& x) const override;
  at::Tensor project_tangent(const at::Tensor& x, const at::Tensor& v) const override;
  at::Tensor expmap(const at::Tensor& x, const at::Tensor& v) const override;
  at::Tensor logmap(const at::Tensor& x, const at::Tensor& y) const override;
  at::Tensor distance(const at::Tensor& x, const at::Tensor& y) const override;
  at::Tensor pairwise_distance(const at::Tensor& x, const at::Tensor& y) const override;
  std::pair<at::Tensor, at::Tensor> geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const override;
  double log_volume() const override;
  at::Tensor sample_uniform(int64_t n, at::Generator& generator, const at::TensorOptions& options) const override;
  at::Tensor tangent_trace(const at::Tensor& x, const at::Tensor& jacobian) const override;
  at::Tensor distance_from_manifold(const at::Tensor& x) const override;

 private:
  int64_t d_;
};

/// T^d: d angles in [−π, π), wrapped; exp_x(v) = wrap(x + v), log_x(y) = wrap(y − x); volume (2π)^d.
/// A network sees (cos θ, sin θ) (2d features) and its output o is read as a velocity of the circles
/// embedded in R²: θ̇_i = −sin θ_i·o_i + cos θ_i·o_(d+i), the tangent projection there.
class FlatTorus : public Manifold {
 public:
  explicit FlatTorus(int64_t dimension = 2);
  std::string name() const override { return "torus"; }
  int64_t coordinates() const override { return d_; }
  at::Tensor project(const at::Tensor& x) const override;
  at::Tensor project_tangent(const at::Tensor&, const at::Tensor& v) const override { return v; }
  at::Tensor expmap(const at::Tensor& x, const at::Tensor& v) const override;
  at::Tensor logmap(const at::Tensor& x, const at::Tensor& y) const override;
  at::Tensor pairwise_distance(const at::Tensor& x, const at::Tensor& y) const override;
  std::pair<at::Tensor, at::Tensor> geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const override;
  double log_volume() const override;
  at::Tensor sample_uniform(int64_t n, at::Generator& generator, const at::TensorOptions& options) const override;
  at::Tensor features(const at::Tensor& x) const override;
  int64_t feature_dim() const override { return 2 * d_; }
  at::Tensor velocity_from_features(const at::Tensor& x, const at::Tensor& output) const override;
  at::Tensor distance_from_manifold(const at::Tensor& x) const override;

 private:
  int64_t d_;
};

/// The configurations of n particles in R^d with their centre of mass at the origin: the linear
/// subspace {x ∈ R^(n·d) : Σ_i x_i = 0} of dimension (n − 1)·d, coordinates particle by particle
/// (x[i·d + a]). Equivariant flow matching (Klein, Krämer & Noé 2023) lives here: translations are
/// removed, the source is a Gaussian restricted to the subspace and densities are with respect to
/// its Lebesgue measure. Flat: exp_x(v) = x + v, log_x(y) = y − x; `project` subtracts the centre of
/// mass, `project_tangent` the mean velocity; the divergence of a tangent field is tr(J P) with P the
/// projection. No finite volume (no uniform distribution).
class MeanFreeSpace : public Manifold {
 public:
  MeanFreeSpace(int64_t particles, int64_t particle_dim);
  std::string name() const override { return "mean-free"; }
  nlohmann::json spec() const override;
  int64_t coordinates() const override { return n_ * d_; }
  int64_t dimension() const override { return (n_ - 1) * d_; }
  int64_t particles() const { return n_; }
  int64_t particle_dim() const { return d_; }
  at::Tensor project(const at::Tensor& x) const override;
  at::Tensor project_tangent(const at::Tensor& x, const at::Tensor& v) const override;
  at::Tensor expmap(const at::Tensor& x, const at::Tensor& v) const override;
  at::Tensor tangent_trace(const at::Tensor& x, const at::Tensor& jacobian) const override;
  /// ‖x − project(x)‖ = √n·‖centre of mass‖.
  at::Tensor distance_from_manifold(const at::Tensor& x) const override;

 private:
  int64_t n_, d_;
};

/// wrap(a) in [−π, π): a − 2π·floor((a + π)/2π).
at::Tensor wrap_angle(const at::Tensor& a);

/// M₁ × M₂ × ...: each factor owns consecutive coordinates (and consecutive features).
class ProductManifold : public Manifold {
 public:
  explicit ProductManifold(std::vector<std::shared_ptr<const Manifold>> factors);
  std::string name() const override;
  nlohmann::json spec() const override;
  int64_t coordinates() const override { return coordinates_; }
  int64_t dimension() const override;
  at::Tensor project(const at::Tensor& x) const override;
  at::Tensor project_tangent(const at::Tensor& x, const at::Tensor& v) const override;
  at::Tensor expmap(const at::Tensor& x, const at::Tensor& v) const override;
  at::Tensor logmap(const at::Tensor& x, const at::Tensor& y) const override;
  at::Tensor distance(const at::Tensor& x, const at::Tensor& y) const override;
  std::pair<at::Tensor, at::Tensor> geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const override;
  double log_volume() const override;
  at::Tensor sample_uniform(int64_t n, at::Generator& generator, const at::TensorOptions& options) const override;
  at::Tensor features(const at::Tensor& x) const override;
  int64_t feature_dim() const override;
  at::Tensor velocity_from_features(const at::Tensor& x, const at::Tensor& output) const override;
  at::Tensor tangent_trace(const at::Tensor& x, const at::Tensor& jacobian) const override;
  at::Tensor distance_from_manifold(const at::Tensor& x) const override;
  const std::vector<std::shared_ptr<const Manifold>>& factors() const { return factors_; }

 private:
  std::vector<std::shared_ptr<const Manifold>> factors_;
  std::vector<int64_t> offsets_, feature_offsets_;
  int64_t coordinates_ = 0;
};

/// From `spec()` or a name: "euclidean", "sphere" (S²), "torus" (T², or {"type": "torus", "dim": d}),
/// {"type": "product", "factors": [...]}, {"type": "mean-free", "particles": n, "particle_dim": d};
/// std::invalid_argument naming what is unknown or bad.
std::shared_ptr<Manifold> make_manifold(const nlohmann::json& spec);
/// The names make_manifold takes.
std::vector<std::string> manifold_names();

}  // namespace flowmatch
