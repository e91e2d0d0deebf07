#include "flowmatch/wrapped_normal.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace flowmatch {

namespace {
constexpr int kWindings = 8;  // the next winding's weight exp(−(2π·8)²/(2σ²)) is about 1e-137 for σ <= 2.
}

WrappedNormal::WrappedNormal(std::shared_ptr<const Manifold> manifold, double scale)
    : manifold_(std::move(manifold)), scale_(scale) {
  if (!manifold_) throw std::invalid_argument("WrappedNormal: no manifold");
  const std::string name = manifold_->name();
  if (name != "sphere" && name != "torus") {
    throw std::invalid_argument("the wrapped normal is defined on the sphere and the torus, not on '" + name + "'");
  }
  if (!(scale > 0) || !std::isfinite(scale) || scale > 2) {
    throw std::invalid_argument("wrapped normal scale " + std::to_string(scale) + ": expected a number in (0, 2]");
  }
  sphere_ = name == "sphere";
}

double WrappedNormal::notebook_scale(const Manifold& manifold) { return manifold.name() == "sphere" ? 0.5 : 1.0; }

at::Tensor WrappedNormal::base(const at::TensorOptions& options) const {
  at::Tensor b = at::zeros({1, manifold_->coordinates()}, options);
  if (sphere_) b.select(1, manifold_->coordinates() - 1).fill_(1.0);
  return b;
}

at::Tensor WrappedNormal::sample(int64_t n, at::Generator& generator, const at::TensorOptions& options) const {
  if (n < 1) throw std::invalid_argument("number of samples must be >= 1, got " + std::to_string(n));
  const int64_t d = manifold_->dimension();
  // Drawn with the (CPU) generator, then moved to the device `options` name.
  at::Tensor z = at::randn({n, d}, generator, options.device(at::kCPU)).to(options.device()).mul_(scale_);
  if (!sphere_) return manifold_->expmap(at::zeros_like(z), z);
  // The tangent plane at the north pole: the first d coordinates.
  at::Tensor v = at::cat({z, at::zeros({n, 1}, options)}, 1);
  return manifold_->expmap(base(options).expand({n, d + 1}), v);
}

at::Tensor WrappedNormal::log_density(const at::Tensor& x) const {
  const int64_t d = manifold_->dimension();
  if (x.dim() != 2 || x.size(1) != manifold_->coordinates()) {
    throw std::invalid_argument("wrapped normal: expected points (B, " + std::to_string(manifold_->coordinates()) + ")");
  }
  at::Tensor xd = x.to(at::kDouble);
  const double s2 = scale_ * scale_;
  const double log_norm1 = -0.5 * std::log(2 * M_PI * s2);  // of a 1-D N(0, σ²)
  std::vector<at::Tensor> terms;
  if (!sphere_) {
    at::Tensor theta = wrap_angle(xd);
    for (int k = -kWindings; k <= kWindings; ++k) terms.push_back((theta + 2 * M_PI * k).square().mul(-0.5 / s2));
    return (at::logsumexp(at::stack(terms, 0), 0) + log_norm1).sum(1).to(x.scalar_type());
  }
  // Geodesic distance from the pole, and log(sin r) kept finite at the pole and the antipode.
  // atan2 keeps r accurate near the pole (acos of a height near 1 would round small r to 0). sin r is
  // floored at 1e-12: the density is infinite at the antipode, and at the pole through the far windings
  // (by N(2π/σ), about 5e-35 for σ = 1/2); the floor keeps both finite and leaves every other point exact.
  at::Tensor r = at::atan2(xd.narrow(1, 0, d).norm(2, 1), xd.select(1, d));
  at::Tensor log_sin = at::log(at::sin(r).clamp_min(1e-12));
  // s / sin r for s = r, stable near the pole.
  at::Tensor log_ratio0 = at::where(r < 1e-4, (r.square() / 6), at::log(r) - log_sin);
  for (int k = 0; k <= kWindings; ++k) {
    for (int side = 0; side < 2; ++side) {
      at::Tensor s = side == 0 ? r + 2 * M_PI * k : 2 * M_PI * (k + 1) - r;
      at::Tensor log_jac = (side == 0 && k == 0) ? log_ratio0 : at::log(s) - log_sin;
      terms.push_back(s.square().mul(-0.5 / s2) + (d - 1) * log_jac);
    }
  }
  return (at::logsumexp(at::stack(terms, 0), 0) + d * log_norm1).to(x.scalar_type());
}

}  // namespace flowmatch
