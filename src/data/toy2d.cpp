#include "flowmatch/data/toy2d.h"

#include <array>
#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>

namespace flowmatch::data {

namespace {

constexpr double kPi = 3.14159265358979323846;

at::Tensor randn(int64_t n, int64_t d, at::Generator& g) { return at::randn({n, d}, g, at::kFloat); }
at::Tensor rand(at::IntArrayRef shape, at::Generator& g) { return at::rand(shape, g, at::kFloat); }
at::Tensor shuffle(const at::Tensor& x, at::Generator& g) {
  return x.index_select(0, at::randperm(x.size(0), g, at::kLong));
}

at::Tensor gaussian(int64_t n, at::Generator& g) { return randn(n, 2, g); }

// 8 centres 5·(cos kπ/4, sin kπ/4), chosen uniformly; std 0.1^(1/4) (covariance √0.1·I). The two
// random draws are ATen's; the rest is one loop (the 2-D benchmarks draw a batch every step).
at::Tensor eight_gaussians(int64_t n, at::Generator& g) {
  static const std::array<float, 16> centres = [] {
    std::array<float, 16> c{};
    for (int k = 0; k < 8; ++k) {
      c[2 * k] = static_cast<float>(5.0 * std::cos(k * kPi / 4));
      c[2 * k + 1] = static_cast<float>(5.0 * std::sin(k * kPi / 4));
    }
    return c;
  }();
  const at::Tensor index = at::randint(0, 8, {n}, g, at::TensorOptions().dtype(at::kLong));
  at::Tensor x = randn(n, 2, g);
  const float std_dev = static_cast<float>(std::sqrt(std::sqrt(0.1)));
  float* p = x.data_ptr<float>();
  const int64_t* k = index.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    p[2 * i] = centres[2 * k[i]] + p[2 * i] * std_dev;
    p[2 * i + 1] = centres[2 * k[i] + 1] + p[2 * i + 1] * std_dev;
  }
  return x;
}

// Two deterministic half circles (n/2 and n − n/2 evenly spaced angles in [0, π]), a uniform
// [0, 0.2) shift per point added to both coordinates, ×3 − 1, shuffled. Random draws by ATen, the
// rest in one loop.
at::Tensor moons(int64_t n, at::Generator& g) {
  const int64_t n_out = n / 2, n_in = n - n_out;
  const at::Tensor shift = rand({n}, g);
  const at::Tensor order = at::randperm(n, g, at::TensorOptions().dtype(at::kLong));
  at::Tensor x = at::empty({n, 2}, at::kFloat);
  float* p = x.data_ptr<float>();
  const float* u = shift.data_ptr<float>();
  const int64_t* perm = order.data_ptr<int64_t>();
  auto angle = [](int64_t i, int64_t count) { return count > 1 ? kPi * static_cast<double>(i) / static_cast<double>(count - 1) : 0.0; };
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = perm[k];
    double px, py;
    if (i < n_out) {
      const double a = angle(i, n_out);
      px = std::cos(a);
      py = std::sin(a);
    } else {
      const double b = angle(i - n_out, n_in);
      px = 1 - std::cos(b);
      py = 1 - std::sin(b) - 0.5;
    }
    const double s = 0.2 * static_cast<double>(u[i]);
    p[2 * k] = static_cast<float>((px + s) * 3 - 1);
    p[2 * k + 1] = static_cast<float>((py + s) * 3 - 1);
  }
  return x;
}

// Meta flow_matching's checkerboard: x1 ~ U[−2, 2]; x2 = U[0,1) − 2·B + (⌊x1⌋ mod 2); / 0.45.
at::Tensor checkerboard(int64_t n, at::Generator& g) {
  at::Tensor x1 = rand({n}, g) * 4 - 2;
  at::Tensor x2 = rand({n}, g) - at::randint(0, 2, {n}, g, at::kLong).to(at::kFloat) * 2;
  x2 = x2 + at::remainder(at::floor(x1), 2);
  return at::stack({x1, x2}, 1) / 0.45;
}

// Two concentric circles, radii 1 and 0.5, angles evenly spaced (endpoint excluded),
// Gaussian noise 0.08, ×3, shuffled (FFJORD's "circles": scikit-learn make_circles(factor 0.5)).
at::Tensor circles(int64_t n, at::Generator& g) {
  const int64_t n_out = n / 2, n_in = n - n_out;
  auto ring = [](int64_t k, double radius) {
    at::Tensor a = at::arange(k, at::kDouble) * (2 * kPi / static_cast<double>(k));
    return (at::stack({at::cos(a), at::sin(a)}, 1) * radius).to(at::kFloat);
  };
  at::Tensor x = at::cat({ring(n_out, 1.0), ring(n_in, 0.5)}) + randn(n, 2, g) * 0.08;
  return shuffle(x * 3, g);
}

// Two interleaved spirals (FFJORD): r = √U·540° in radians; (−cos r·r, sin r·r) + U[0,0.5)²
// and its point reflection; /3, then Gaussian noise 0.1.
at::Tensor two_spirals(int64_t n, at::Generator& g) {
  const int64_t half = n / 2, rest = n - half;
  auto arm = [&](int64_t k, double sign) {
    at::Tensor r = at::sqrt(rand({k}, g)) * (540.0 * 2 * kPi / 360.0);
    at::Tensor dx = -at::cos(r) * r + rand({k}, g) * 0.5;
    at::Tensor dy = at::sin(r) * r + rand({k}, g) * 0.5;
    return at::stack({dx, dy}, 1) * sign;
  };
  at::Tensor x = at::cat({arm(half, 1.0), arm(rest, -1.0)}) / 3.0 + randn(n, 2, g) * 0.1;
  return shuffle(x, g);
}

// Swiss roll (FFJORD): τ = 1.5π(1 + 2U); (τ cos τ, τ sin τ) + N(0, 1), then /5.
at::Tensor swissroll(int64_t n, at::Generator& g) {
  at::Tensor tau = (rand({n}, g) * 2 + 1) * (1.5 * kPi);
  at::Tensor x = at::stack({tau * at::cos(tau), tau * at::sin(tau)}, 1) + randn(n, 2, g);
  return x / 5.0;
}

// Pinwheel (FFJORD): 5 arms; f = (1 + 0.3 z₁, 0.1 z₂); angle = 2πk/5 + 0.25·exp(f₁);
// x = 2·R(angle)ᵀ f, arm k uniform.
at::Tensor pinwheel(int64_t n, at::Generator& g) {
  at::Tensor f = randn(n, 2, g) * at::tensor({0.3f, 0.1f});
  f.select(1, 0).add_(1.0);
  at::Tensor arm = at::randint(0, 5, {n}, g, at::kLong).to(at::kFloat);
  at::Tensor angle = arm * static_cast<float>(2 * kPi / 5) + 0.25 * at::exp(f.select(1, 0));
  at::Tensor c = at::cos(angle), s = at::sin(angle);
  at::Tensor f0 = f.select(1, 0), f1 = f.select(1, 1);
  return at::stack({f0 * c - f1 * s, f0 * s + f1 * c}, 1) * 2.0;
}

// S curve: τ = 3π(U − ½); (sin τ, sign(τ)(cos τ − 1)) + N(0, 0.1²), ×1.5 (scikit-learn's
// make_s_curve seen from the side).
at::Tensor scurve(int64_t n, at::Generator& g) {
  at::Tensor tau = (rand({n}, g) - 0.5) * (3 * kPi);
  at::Tensor x = at::stack({at::sin(tau), at::sign(tau) * (at::cos(tau) - 1)}, 1) + randn(n, 2, g) * 0.1;
  return x * 1.5;
}

using Fn = at::Tensor (*)(int64_t, at::Generator&);
Fn lookup(const std::string& name) {
  if (name == "gaussian") return gaussian;
  if (name == "8gaussians") return eight_gaussians;
  if (name == "moons") return moons;
  if (name == "checkerboard") return checkerboard;
  if (name == "circles") return circles;
  if (name == "2spirals") return two_spirals;
  if (name == "swissroll") return swissroll;
  if (name == "pinwheel") return pinwheel;
  if (name == "scurve") return scurve;
  return nullptr;
}

std::string unknown(const std::string& name) {
  std::string valid;
  for (const auto& n : toy2d_names()) valid += (valid.empty() ? "" : ", ") + n;
  return "unknown data set '" + name + "' (expected one of: " + valid + ")";
}

}  // namespace

const std::vector<std::string>& toy2d_names() {
  static const std::vector<std::string> names = {"gaussian", "8gaussians", "moons",   "checkerboard", "circles",
                                                 "2spirals", "swissroll",  "pinwheel", "scurve"};
  return names;
}

bool is_toy2d(const std::string& name) { return lookup(name) != nullptr; }

at::Tensor sample_toy2d(const std::string& name, int64_t n, at::Generator& generator) {
  Fn fn = lookup(name);
  if (fn == nullptr) throw std::invalid_argument(unknown(name));
  if (n < 1) throw std::invalid_argument("number of samples must be >= 1, got " + std::to_string(n));
  return fn(n, generator).contiguous();
}

PointSampler toy2d_sampler(const std::string& name) {
  Fn fn = lookup(name);
  if (fn == nullptr) throw std::invalid_argument(unknown(name));
  return [name](int64_t n, at::Generator& g) { return sample_toy2d(name, n, g); };
}

}  // namespace flowmatch::data
