// The toy samplers against their definitions (docs/DATASETS.md): moments, exact supports, seeding.
#include <cmath>

#include "flowmatch/data/toy2d.h"
#include "test_util.h"

namespace fm = flowmatch;
using fmtest::generator;

namespace {
constexpr int64_t kN = 200000;
// 6 standard errors: a correct sampler fails with probability ~2e-9 per check.
double bound(double variance, int64_t n) { return 6.0 * std::sqrt(variance / static_cast<double>(n)); }
}  // namespace

TEST(Toy2D, EverySamplerGivesFiniteFloat32PointsAndIsSeeded) {
  for (const auto& name : fm::data::toy2d_names()) {
    auto g1 = generator(7), g2 = generator(7), g3 = generator(8);
    at::Tensor a = fm::data::sample_toy2d(name, 1001, g1);
    EXPECT_EQ(a.sizes(), (at::IntArrayRef{1001, 2})) << name;
    EXPECT_EQ(a.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(at::isfinite(a).all().item<bool>()) << name;
    EXPECT_TRUE(at::equal(a, fm::data::sample_toy2d(name, 1001, g2))) << name << " is not reproducible";
    EXPECT_FALSE(at::equal(a, fm::data::sample_toy2d(name, 1001, g3))) << name << " ignores the seed";
  }
}

TEST(Toy2D, UnknownNameListsTheValidOnes) {
  auto g = generator(0);
  try {
    fm::data::sample_toy2d("9gaussians", 10, g);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("9gaussians"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("8gaussians, moons"), std::string::npos);
  }
  EXPECT_THROW(fm::data::toy2d_sampler("nope"), std::invalid_argument);
  EXPECT_THROW(fm::data::sample_toy2d("moons", 0, g), std::invalid_argument);
}

TEST(Toy2D, GaussianHasZeroMeanAndIdentityCovariance) {
  auto g = generator(1);
  at::Tensor x = fm::data::sample_toy2d("gaussian", kN, g).to(at::kDouble);
  at::Tensor mean = x.mean(0);
  at::Tensor cov = (x - mean).t().mm(x - mean) / (kN - 1);
  EXPECT_LT(mean.abs().max().item<double>(), bound(1.0, kN));
  EXPECT_LT((cov - at::eye(2, at::kDouble)).abs().max().item<double>(), bound(2.0, kN));
}

TEST(Toy2D, EightGaussiansMomentsAndClusters) {
  auto g = generator(2);
  at::Tensor x = fm::data::sample_toy2d("8gaussians", kN, g).to(at::kDouble);
  const double var_noise = std::sqrt(0.1);  // covariance √0.1·I
  // E[x] = 0; E[x_k²] = 25/2 (centres) + √0.1 (noise).
  EXPECT_LT(x.mean(0).abs().max().item<double>(), bound(12.5 + var_noise, kN));
  const double second = 12.5 + var_noise;
  at::Tensor m2 = x.square().mean(0);
  EXPECT_LT((m2 - second).abs().max().item<double>(), bound(2 * 25.0 * 25.0 / 8 + 4 * second, kN));
  // Distance to the nearest centre over the noise std is chi with 2 dof: P(> 4) = e^-8.
  at::Tensor angles = at::arange(8, at::kDouble) * (M_PI / 4);
  at::Tensor centres = at::stack({at::cos(angles), at::sin(angles)}, 1) * 5.0;
  at::Tensor d = at::cdist(x, centres).amin(1) / std::sqrt(var_noise);
  const double far = (d > 4.0).to(at::kDouble).mean().item<double>();
  EXPECT_LT(far, std::exp(-8.0) + bound(std::exp(-8.0), kN));
  // Each cluster is chosen with probability 1/8.
  at::Tensor counts = at::bincount(at::cdist(x, centres).argmin(1), {}, 8).to(at::kDouble) / kN;
  EXPECT_LT((counts - 0.125).abs().max().item<double>(), bound(0.125 * 0.875, kN));
}

TEST(Toy2D, MoonsLieOnTheirShiftedHalfCircles) {
  auto g = generator(3);
  const int64_t n = 20001;
  at::Tensor x = fm::data::sample_toy2d("moons", n, g).to(at::kDouble);
  // Undo ×3 − 1: p = point + u(1, 1) with u ∈ [0, 0.2). For centre c and radius 1 solve
  // |p − c − u·1| = 1 for u: 2u² − 2u·s + (|q|² − 1) = 0 with q = p − c, s = q₁ + q₂.
  at::Tensor p = (x + 1) / 3;
  auto fits = [&](double cx, double cy, bool upper) {
    at::Tensor q1 = p.select(1, 0) - cx, q2 = p.select(1, 1) - cy;
    at::Tensor s = q1 + q2, c = q1.square() + q2.square() - 1;
    at::Tensor disc = (s.square() - 2 * c).clamp_min(0).sqrt();
    at::Tensor ok = at::zeros({n}, at::kBool);
    for (double sign : {-1.0, 1.0}) {
      at::Tensor u = (s + sign * disc) / 2;
      at::Tensor residual = ((q1 - u).square() + (q2 - u).square()).sqrt() - 1;
      at::Tensor side = upper ? (q2 - u >= -1e-6) : (q2 - u <= 1e-6);
      ok = ok | ((u >= -1e-6) & (u < 0.2 + 1e-6) & (residual.abs() < 1e-5) & side);
    }
    return ok;
  };
  at::Tensor outer = fits(0.0, 0.0, true), inner = fits(1.0, 0.5, false);
  EXPECT_TRUE((outer | inner).all().item<bool>()) << "points off both moons: "
                                                  << (~(outer | inner)).sum().item<int64_t>();
  EXPECT_NEAR(outer.to(at::kDouble).mean().item<double>(), 0.5, 0.01);
  // Mean: outer (0, 2/π), inner (1, 0.5 − 2/π), plus E[u] = 0.1, then ×3 − 1 → (0.8, 0.05).
  at::Tensor mean = x.mean(0);
  EXPECT_NEAR(mean[0].item<double>(), 0.8, 0.01);
  EXPECT_NEAR(mean[1].item<double>(), 0.05, 0.01);
}

TEST(Toy2D, CheckerboardFillsTheEvenSquaresUniformly) {
  auto g = generator(4);
  at::Tensor x = fm::data::sample_toy2d("checkerboard", kN, g).to(at::kDouble) * 0.45;
  EXPECT_GE(x.min().item<double>(), -2.0 - 1e-6);
  EXPECT_LT(x.max().item<double>(), 2.0 + 1e-6);
  at::Tensor f = at::floor(x);
  EXPECT_TRUE((at::remainder(f.select(1, 0) + f.select(1, 1), 2) == 0).all().item<bool>());
  at::Tensor cell = (f.select(1, 0) + 2) * 4 + (f.select(1, 1) + 2);
  at::Tensor counts = at::bincount(cell.to(at::kLong), {}, 16).to(at::kDouble) / kN;
  at::Tensor used = counts.index({counts > 0});
  EXPECT_EQ(used.numel(), 8);
  EXPECT_LT((used - 0.125).abs().max().item<double>(), bound(0.125 * 0.875, kN));
}

TEST(Toy2D, CirclesHaveTwoRadii) {
  auto g = generator(5);
  at::Tensor r = fm::data::sample_toy2d("circles", kN, g).to(at::kDouble).norm(2, 1) / 3;
  at::Tensor outer = r > 0.75;
  EXPECT_NEAR(outer.to(at::kDouble).mean().item<double>(), 0.5, 0.01);
  // Noise 0.08 per coordinate: the radius deviates by ≈ N(0, 0.08²) to first order.
  EXPECT_NEAR(r.index({outer}).mean().item<double>(), 1.0, 0.01);
  EXPECT_NEAR(r.index({~outer}).mean().item<double>(), 0.5, 0.01);
}

TEST(Toy2D, SymmetricSetsHaveZeroMean) {
  // 2spirals (point reflection), pinwheel (5-fold rotation), scurve (odd in τ) are centred.
  for (const char* name : {"2spirals", "pinwheel", "scurve"}) {
    auto g = generator(6);
    at::Tensor x = fm::data::sample_toy2d(name, kN, g).to(at::kDouble);
    const double var = x.var(0).max().item<double>();
    EXPECT_LT(x.mean(0).abs().max().item<double>(), bound(var, kN)) << name;
  }
}

TEST(Toy2D, SwissrollRadiusFollowsItsAngle) {
  auto g = generator(9);
  at::Tensor x = fm::data::sample_toy2d("swissroll", kN, g).to(at::kDouble) * 5;
  // Without noise |x| = τ ∈ [1.5π, 4.5π]; the N(0, I) noise moves it by at most ~5.
  at::Tensor r = x.norm(2, 1);
  EXPECT_GT(r.min().item<double>(), 1.5 * M_PI - 6);
  EXPECT_LT(r.max().item<double>(), 4.5 * M_PI + 6);
  EXPECT_NEAR(r.mean().item<double>(), 3 * M_PI, 0.1);
}
