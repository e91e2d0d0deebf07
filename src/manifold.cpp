#include "flowmatch/manifold.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include <ATen/ATen.h>

namespace flowmatch {

namespace {

using nlohmann::json;

void check_width(const at::Tensor& x, int64_t coordinates, const char* what, const std::string& manifold) {
  if (coordinates > 0 && (x.dim() != 2 || x.size(1) != coordinates)) {
    std::ostringstream s;
    s << manifold << ": " << what << " must be (B, " << coordinates << "), got " << x.sizes();
    throw std::invalid_argument(s.str());
  }
}

at::Tensor row_dot(const at::Tensor& a, const at::Tensor& b) { return (a * b).sum(1, /*keepdim=*/true); }

// sin(n)/n, exact to rounding near 0 (1 − n²/6 there).
at::Tensor sin_over(const at::Tensor& n) {
  at::Tensor small = n.abs() < 1e-4;
  at::Tensor safe = at::where(small, at::ones_like(n), n);
  return at::where(small, 1 - n.square() / 6, at::sin(safe) / safe);
}

}  // namespace

// ---------------------------------------------------------------- defaults

json Manifold::spec() const { return {{"type", name()}, {"dim", dimension()}}; }

at::Tensor Manifold::expmap(const at::Tensor& x, const at::Tensor& v) const { return project(x + v); }
at::Tensor Manifold::logmap(const at::Tensor& x, const at::Tensor& y) const { return y - x; }
at::Tensor Manifold::distance(const at::Tensor& x, const at::Tensor& y) const {
  return logmap(x, y).reshape({x.size(0), -1}).square().sum(1).sqrt();
}
at::Tensor Manifold::pairwise_distance(const at::Tensor& x, const at::Tensor& y) const {
  const int64_t n = x.size(0), m = y.size(0);
  at::Tensor a = x.unsqueeze(1).expand({n, m, x.size(1)}).reshape({n * m, x.size(1)});
  at::Tensor b = y.unsqueeze(0).expand({n, m, y.size(1)}).reshape({n * m, y.size(1)});
  return distance(a, b).reshape({n, m});
}

std::pair<at::Tensor, at::Tensor> Manifold::geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const {
  at::Tensor sc = s.reshape({-1, 1}).to(x.scalar_type());
  return {expmap(x, sc * v), v};
}
double Manifold::log_volume() const { throw std::invalid_argument(name() + " has no finite volume (no uniform distribution)"); }
at::Tensor Manifold::sample_uniform(int64_t, at::Generator&, const at::TensorOptions&) const {
  throw std::invalid_argument(name() + " has no uniform distribution");
}

at::Tensor Manifold::tangent_trace(const at::Tensor&, const at::Tensor& jacobian) const {
  return jacobian.diagonal(0, 1, 2).sum(1);
}

at::Tensor Manifold::error_ratio(const at::Tensor& err, const at::Tensor& a, const at::Tensor& b, double atol,
                                 double rtol) const {
  at::Tensor scale = at::maximum(a.abs(), b.abs()).mul_(rtol).add_(atol);
  at::Tensor ratio = (err / scale).square_();
  if (ratio.dim() == 0) return ratio.sqrt().reshape({1});
  return ratio.reshape({ratio.size(0), -1}).mean(1).sqrt();
}

at::Tensor Manifold::distance_from_manifold(const at::Tensor& x) const { return at::zeros({x.size(0)}, x.options()); }

void Manifold::check_points(const at::Tensor& x, double tolerance, const std::string& what) const {
  check_width(x, coordinates(), "points", what + " (" + name() + ")");
  at::Tensor off = distance_from_manifold(x.to(at::kDouble));
  at::Tensor bad = (off > tolerance).logical_or(off.isnan());
  if (bad.any().item<bool>()) {
    const int64_t row = bad.nonzero()[0][0].item<int64_t>();
    std::ostringstream s;
    s << what << ": row " << row << " is " << off[row].item<double>() << " off the " << name() << " (tolerance " << tolerance
      << "; " << x.size(0) << " rows, " << bad.sum().item<int64_t>() << " off)";
    throw std::invalid_argument(s.str());
  }
}

// ---------------------------------------------------------------- sphere

Sphere::Sphere(int64_t dimension) : d_(dimension) {
  if (dimension < 1 || dimension > 1024) {
    throw std::invalid_argument("sphere dimension must be in [1, 1024], got " + std::to_string(dimension));
  }
}

at::Tensor Sphere::project(const at::Tensor& x) const {
  check_width(x, coordinates(), "points", "sphere");
  return x / x.norm(2, 1, true).clamp_min(1e-30);
}

at::Tensor Sphere::project_tangent(const at::Tensor& x, const at::Tensor& v) const {
  check_width(v, coordinates(), "vectors", "sphere");
  return v - row_dot(x, v) * x;
}

at::Tensor Sphere::expmap(const at::Tensor& x, const at::Tensor& v) const {
  at::Tensor n = v.norm(2, 1, true);
  return project(at::cos(n) * x + sin_over(n) * v);
}

at::Tensor Sphere::logmap(const at::Tensor& x, const at::Tensor& y) const {
  at::Tensor c = row_dot(x, y);
  at::Tensor u = y - c * x;
  at::Tensor un = u.norm(2, 1, true);
  at::Tensor theta = at::atan2(un, c);
  // θ/sin θ = θ/|u|, 1 at θ → 0.
  at::Tensor small = un < 1e-12;
  at::Tensor factor = at::where(small, at::ones_like(un), theta / at::where(small, at::ones_like(un), un));
  return factor * u;
}

at::Tensor Sphere::distance(const at::Tensor& x, const at::Tensor& y) const {
  at::Tensor c = row_dot(x, y);
  return at::atan2((y - c * x).norm(2, 1, true), c).squeeze(1);
}

at::Tensor Sphere::pairwise_distance(const at::Tensor& x, const at::Tensor& y) const {
  return at::acos(at::matmul(x, y.t()).clamp(-1, 1));
}

std::pair<at::Tensor, at::Tensor> Sphere::geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const {
  at::Tensor sc = s.reshape({-1, 1}).to(x.scalar_type());
  at::Tensor n = v.norm(2, 1, true);
  at::Tensor a = sc * n;
  at::Tensor point = at::cos(a) * x + sc * sin_over(a) * v;  // sin(sn)/n · v
  at::Tensor velocity = -n * at::sin(a) * x + at::cos(a) * v;
  return {point, velocity};
}

double Sphere::log_volume() const {
  const double k = static_cast<double>(d_ + 1) / 2;
  return std::log(2.0) + k * std::log(M_PI) - std::lgamma(k);
}

at::Tensor Sphere::sample_uniform(int64_t n, at::Generator& generator, const at::TensorOptions& options) const {
  at::Tensor g = at::randn({n, coordinates()}, generator, options);
  return project(g);
}

at::Tensor Sphere::tangent_trace(const at::Tensor& x, const at::Tensor& jacobian) const {
  // tr(P J P) = tr(J P) = tr(J) − xᵀ J x for |x| = 1.
  at::Tensor xu = x.unsqueeze(2);
  return jacobian.diagonal(0, 1, 2).sum(1) - at::matmul(x.unsqueeze(1), at::matmul(jacobian, xu)).reshape({-1});
}

at::Tensor Sphere::distance_from_manifold(const at::Tensor& x) const { return (x.norm(2, 1) - 1).abs(); }

// ---------------------------------------------------------------- torus

at::Tensor wrap_angle(const at::Tensor& a) { return a - 2 * M_PI * at::floor((a + M_PI) / (2 * M_PI)); }

FlatTorus::FlatTorus(int64_t dimension) : d_(dimension) {
  if (dimension < 1 || dimension > 4096) {
    throw std::invalid_argument("torus dimension must be in [1, 4096], got " + std::to_string(dimension));
  }
}

at::Tensor FlatTorus::project(const at::Tensor& x) const {
  check_width(x, coordinates(), "points", "torus");
  return wrap_angle(x);
}

at::Tensor FlatTorus::expmap(const at::Tensor& x, const at::Tensor& v) const { return wrap_angle(x + v); }
at::Tensor FlatTorus::logmap(const at::Tensor& x, const at::Tensor& y) const { return wrap_angle(y - x); }

at::Tensor FlatTorus::pairwise_distance(const at::Tensor& x, const at::Tensor& y) const {
  // For angles in [−π, π] (points of the torus), |wrap(y − x)| = min(|y − x|, 2π − |y − x|): no
  // floor or remainder (LibTorch's are scalar loops, 10× the cost here).
  // One contiguous (n, m) plane per angle.
  const at::Tensor xc = x.t().contiguous(), yc = y.t().contiguous();
  at::Tensor d2 = at::zeros({x.size(0), y.size(0)}, x.options());
  for (int64_t k = 0; k < d_; ++k) {
    at::Tensor diff = (yc[k].unsqueeze(0) - xc[k].unsqueeze(1)).abs_();
    d2.add_(at::minimum(diff, at::rsub(diff, 2 * M_PI)).square_());
  }
  return d2.sqrt_();
}

std::pair<at::Tensor, at::Tensor> FlatTorus::geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const {
  at::Tensor sc = s.reshape({-1, 1}).to(x.scalar_type());
  return {wrap_angle(x + sc * v), v};
}

double FlatTorus::log_volume() const { return static_cast<double>(d_) * std::log(2 * M_PI); }

at::Tensor FlatTorus::sample_uniform(int64_t n, at::Generator& generator, const at::TensorOptions& options) const {
  return at::rand({n, d_}, generator, options).mul_(2 * M_PI).sub_(M_PI);
}

at::Tensor FlatTorus::features(const at::Tensor& x) const { return at::cat({at::cos(x), at::sin(x)}, 1); }

at::Tensor FlatTorus::velocity_from_features(const at::Tensor& x, const at::Tensor& output) const {
  check_width(output, 2 * d_, "network outputs", "torus");
  return -at::sin(x) * output.slice(1, 0, d_) + at::cos(x) * output.slice(1, d_, 2 * d_);
}

at::Tensor FlatTorus::distance_from_manifold(const at::Tensor& x) const {
  return (x.abs() - M_PI).clamp_min(0).amax(1);
}

// ---------------------------------------------------------------- products

ProductManifold::ProductManifold(std::vector<std::shared_ptr<const Manifold>> factors) : factors_(std::move(factors)) {
  if (factors_.empty()) throw std::invalid_argument("product manifold needs at least one factor");
  int64_t features = 0;
  for (const auto& f : factors_) {
    if (!f || f->coordinates() < 1) throw std::invalid_argument("product manifold factors must be spheres, tori or products");
    offsets_.push_back(coordinates_);
    feature_offsets_.push_back(features);
    coordinates_ += f->coordinates();
    features += f->feature_dim();
  }
  offsets_.push_back(coordinates_);
  feature_offsets_.push_back(features);
}

std::string ProductManifold::name() const {
  std::string s;
  for (const auto& f : factors_) s += (s.empty() ? "" : " x ") + f->name() + std::to_string(f->dimension());
  return s;
}

json ProductManifold::spec() const {
  json factors = json::array();
  for (const auto& f : factors_) factors.push_back(f->spec());
  return {{"type", "product"}, {"factors", factors}};
}

int64_t ProductManifold::dimension() const {
  int64_t d = 0;
  for (const auto& f : factors_) d += f->dimension();
  return d;
}

int64_t ProductManifold::feature_dim() const { return feature_offsets_.back(); }

namespace {
template <typename F>
at::Tensor per_factor(const std::vector<std::shared_ptr<const Manifold>>& factors, const std::vector<int64_t>& offsets, F&& f) {
  std::vector<at::Tensor> parts;
  for (size_t k = 0; k < factors.size(); ++k) parts.push_back(f(*factors[k], offsets[k], offsets[k + 1] - offsets[k]));
  return at::cat(parts, 1);
}
}  // namespace

at::Tensor ProductManifold::project(const at::Tensor& x) const {
  check_width(x, coordinates_, "points", name());
  return per_factor(factors_, offsets_, [&](const Manifold& m, int64_t o, int64_t n) { return m.project(x.narrow(1, o, n)); });
}
at::Tensor ProductManifold::project_tangent(const at::Tensor& x, const at::Tensor& v) const {
  return per_factor(factors_, offsets_,
                    [&](const Manifold& m, int64_t o, int64_t n) { return m.project_tangent(x.narrow(1, o, n), v.narrow(1, o, n)); });
}
at::Tensor ProductManifold::expmap(const at::Tensor& x, const at::Tensor& v) const {
  return per_factor(factors_, offsets_,
                    [&](const Manifold& m, int64_t o, int64_t n) { return m.expmap(x.narrow(1, o, n), v.narrow(1, o, n)); });
}
at::Tensor ProductManifold::logmap(const at::Tensor& x, const at::Tensor& y) const {
  return per_factor(factors_, offsets_,
                    [&](const Manifold& m, int64_t o, int64_t n) { return m.logmap(x.narrow(1, o, n), y.narrow(1, o, n)); });
}
at::Tensor ProductManifold::distance(const at::Tensor& x, const at::Tensor& y) const {
  at::Tensor d2 = at::zeros({x.size(0)}, x.options());
  for (size_t k = 0; k < factors_.size(); ++k) {
    const int64_t o = offsets_[k], n = offsets_[k + 1] - o;
    d2 = d2 + factors_[k]->distance(x.narrow(1, o, n), y.narrow(1, o, n)).square();
  }
  return d2.sqrt();
}
std::pair<at::Tensor, at::Tensor> ProductManifold::geodesic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& s) const {
  std::vector<at::Tensor> points, velocities;
  for (size_t k = 0; k < factors_.size(); ++k) {
    const int64_t o = offsets_[k], n = offsets_[k + 1] - o;
    auto [p, u] = factors_[k]->geodesic(x.narrow(1, o, n), v.narrow(1, o, n), s);
    points.push_back(p);
    velocities.push_back(u);
  }
  return {at::cat(points, 1), at::cat(velocities, 1)};
}
double ProductManifold::log_volume() const {
  double v = 0;
  for (const auto& f : factors_) v += f->log_volume();
  return v;
}
at::Tensor ProductManifold::sample_uniform(int64_t n, at::Generator& generator, const at::TensorOptions& options) const {
  std::vector<at::Tensor> parts;
  for (const auto& f : factors_) parts.push_back(f->sample_uniform(n, generator, options));
  return at::cat(parts, 1);
}
at::Tensor ProductManifold::features(const at::Tensor& x) const {
  return per_factor(factors_, offsets_, [&](const Manifold& m, int64_t o, int64_t n) { return m.features(x.narrow(1, o, n)); });
}
at::Tensor ProductManifold::velocity_from_features(const at::Tensor& x, const at::Tensor& output) const {
  std::vector<at::Tensor> parts;
  for (size_t k = 0; k < factors_.size(); ++k) {
    const int64_t o = offsets_[k], n = offsets_[k + 1] - o;
    const int64_t fo = feature_offsets_[k], fn = feature_offsets_[k + 1] - fo;
    parts.push_back(factors_[k]->velocity_from_features(x.narrow(1, o, n), output.narrow(1, fo, fn)));
  }
  return at::cat(parts, 1);
}
at::Tensor ProductManifold::tangent_trace(const at::Tensor& x, const at::Tensor& jacobian) const {
  at::Tensor trace = at::zeros({x.size(0)}, x.options());
  for (size_t k = 0; k < factors_.size(); ++k) {  // the metric is block-diagonal: the diagonal blocks
    const int64_t o = offsets_[k], n = offsets_[k + 1] - o;
    trace = trace + factors_[k]->tangent_trace(x.narrow(1, o, n), jacobian.narrow(1, o, n).narrow(2, o, n));
  }
  return trace;
}
at::Tensor ProductManifold::distance_from_manifold(const at::Tensor& x) const {
  at::Tensor off = at::zeros({x.size(0)}, x.options());
  for (size_t k = 0; k < factors_.size(); ++k) {
    const int64_t o = offsets_[k], n = offsets_[k + 1] - o;
    off = at::maximum(off, factors_[k]->distance_from_manifold(x.narrow(1, o, n)));
  }
  return off;
}

// ---------------------------------------------------------------- registry

// ---------------------------------------------------------------- mean-free configurations

MeanFreeSpace::MeanFreeSpace(int64_t particles, int64_t particle_dim) : n_(particles), d_(particle_dim) {
  if (n_ < 2 || d_ < 1) {
    throw std::invalid_argument("mean-free space needs at least 2 particles of dimension at least 1, got " + std::to_string(n_) +
                                " particles of dimension " + std::to_string(d_));
  }
}

json MeanFreeSpace::spec() const { return {{"type", "mean-free"}, {"particles", n_}, {"particle_dim", d_}}; }

at::Tensor MeanFreeSpace::project(const at::Tensor& x) const {
  check_width(x, coordinates(), "points", "mean-free space");
  at::Tensor p = x.reshape({x.size(0), n_, d_});
  return (p - p.mean(1, /*keepdim=*/true)).reshape({x.size(0), n_ * d_});
}

at::Tensor MeanFreeSpace::project_tangent(const at::Tensor&, const at::Tensor& v) const { return project(v); }

at::Tensor MeanFreeSpace::expmap(const at::Tensor& x, const at::Tensor& v) const { return project(x + v); }

at::Tensor MeanFreeSpace::tangent_trace(const at::Tensor&, const at::Tensor& jacobian) const {
  // tr(J P) with P = I − (1/n)·(1 1ᵀ ⊗ I_d): tr J − (1/n)·Σ_a Σ_ij J[(i, a), (j, a)].
  const int64_t b = jacobian.size(0);
  at::Tensor j = jacobian.reshape({b, n_, d_, n_, d_});
  return jacobian.diagonal(0, 1, 2).sum(1) - j.diagonal(0, 2, 4).sum({1, 2, 3}) / static_cast<double>(n_);
}

at::Tensor MeanFreeSpace::distance_from_manifold(const at::Tensor& x) const {
  check_width(x, coordinates(), "points", "mean-free space");
  return x.reshape({x.size(0), n_, d_}).mean(1).norm(2, 1) * std::sqrt(static_cast<double>(n_));
}

std::vector<std::string> manifold_names() { return {"euclidean", "sphere", "torus", "product", "mean-free"}; }

std::shared_ptr<Manifold> make_manifold(const json& spec) {
  if (!spec.is_string() && !spec.is_object()) {
    throw std::invalid_argument("manifold description must be a name or an object, got " + spec.dump());
  }
  const std::string type = spec.is_string() ? spec.get<std::string>() : spec.value("type", std::string());
  int64_t dim = 2;
  if (spec.is_object() && spec.contains("dim")) {
    if (!spec["dim"].is_number_integer()) throw std::invalid_argument("manifold " + spec.dump() + ": 'dim' must be an integer");
    dim = spec["dim"].get<int64_t>();
  }
  if (type == "euclidean") return std::make_shared<EuclideanSpace>();
  if (type == "sphere") return std::make_shared<Sphere>(dim);
  if (type == "torus") return std::make_shared<FlatTorus>(dim);
  if (type == "product") {
    if (!spec.is_object() || !spec.contains("factors") || !spec["factors"].is_array()) {
      throw std::invalid_argument("product manifold " + spec.dump() + " needs 'factors': [...]");
    }
    std::vector<std::shared_ptr<const Manifold>> factors;
    for (const auto& f : spec["factors"]) factors.push_back(make_manifold(f));
    return std::make_shared<ProductManifold>(factors);
  }
  if (type == "mean-free") {
    auto count = [&](const char* key) {
      if (!spec.is_object() || !spec.contains(key) || !spec[key].is_number_integer()) {
        throw std::invalid_argument("mean-free manifold " + spec.dump() + " needs integer '" + key + "'");
      }
      return spec[key].get<int64_t>();
    };
    return std::make_shared<MeanFreeSpace>(count("particles"), count("particle_dim"));
  }
  throw std::invalid_argument("unknown manifold '" + type + "' (expected: euclidean, sphere, torus, product, mean-free)");
}

}  // namespace flowmatch
