// The straight conditional path: endpoints, velocity as the time derivative, smoothing noise.
#include <cmath>

#include "flowmatch/paths.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(CondOTPath, EndpointsAndVelocity) {
  auto g = fmtest::generator(0);
  at::Tensor x0 = at::randn({64, 3}, g, at::kDouble), x1 = at::randn({64, 3}, g, at::kDouble);
  fm::CondOTPath path;
  auto s0 = path.sample(x0, x1, at::zeros({64}, at::kDouble));
  auto s1 = path.sample(x0, x1, at::ones({64}, at::kDouble));
  EXPECT_TRUE(fmtest::AllClose(s0.x_t, x0, 0, 1e-15));
  EXPECT_TRUE(fmtest::AllClose(s1.x_t, x1, 0, 1e-15));
  EXPECT_TRUE(fmtest::AllClose(s0.velocity, x1 - x0, 0, 1e-15));
  // The velocity is d/dt x_t: central differences at random times.
  at::Tensor t = at::rand({64}, g, at::kDouble) * 0.8 + 0.1;
  const double h = 1e-6;
  at::Tensor fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h);
  EXPECT_TRUE(fmtest::AllClose(fd, path.sample(x0, x1, t).velocity, 0, 1e-8));
}

TEST(CondOTPath, SmoothingAddsGaussianNoiseOfStdSigma) {
  const double sigma = 0.3;
  fm::CondOTPath path(fm::CondOTPathOptions().sigma(sigma));
  const int64_t n = 100000;
  at::Tensor x0 = at::zeros({n, 2}, at::kDouble), x1 = at::ones({n, 2}, at::kDouble);
  at::Tensor t = at::full({n}, 0.25, at::kDouble);
  auto s = path.sample(x0, x1, t, fmtest::generator(1));
  at::Tensor noise = s.x_t - 0.25;
  // Mean 0 (se σ/√n), variance σ² (se σ²√(2/n)), velocity unaffected.
  EXPECT_LT(noise.mean(0).abs().max().item<double>(), 6 * sigma / std::sqrt(n));
  EXPECT_LT((noise.var(0) - sigma * sigma).abs().max().item<double>(), 6 * sigma * sigma * std::sqrt(2.0 / n));
  EXPECT_TRUE(fmtest::AllClose(s.velocity, x1 - x0, 0, 0));
  // The same generator state gives the same noise.
  auto again = path.sample(x0, x1, t, fmtest::generator(1));
  EXPECT_TRUE(at::equal(s.x_t, again.x_t));
}

TEST(CondOTPath, RejectsBadInput) {
  EXPECT_THROW(fm::CondOTPath(fm::CondOTPathOptions().sigma(-0.1)), std::invalid_argument);
  EXPECT_THROW(fm::CondOTPath(fm::CondOTPathOptions().sigma(NAN)), std::invalid_argument);
  fm::CondOTPath path;
  EXPECT_THROW(path.sample(at::zeros({4, 2}), at::zeros({4, 3}), at::zeros({4})), c10::Error);
  EXPECT_THROW(path.sample(at::zeros({4, 2}), at::zeros({4, 2}), at::zeros({5})), c10::Error);
}

TEST(CondOTPath, SpecRoundTrip) {
  fm::CondOTPath path(fm::CondOTPathOptions().sigma(0.1));
  auto rebuilt = fm::make_path(path.spec());
  EXPECT_EQ(rebuilt->spec(), path.spec());
  EXPECT_THROW(fm::make_path(nlohmann::json{{"type", "zigzag"}}), std::invalid_argument);
}

TEST(AffinePath, CondOTMarginalOfGaussianTargetMatchesClosedForm) {
  // Source N(0, I), target N(μ, Σ): x_t ~ N(tμ, (1 − t)²I + t²Σ). Check 10⁶ draws at three times
  // within six standard errors (mean: √(C_ii/n); covariance: √((C_ii C_jj + C_ij²)/n)).
  const int64_t n = 1000000;
  at::Tensor mu = at::tensor({2.0, -1.0}, at::kDouble);
  at::Tensor chol = at::tensor({1.5, 0.0, 0.6, 0.4}, at::kDouble).view({2, 2});
  at::Tensor sigma = chol.matmul(chol.t());
  auto g = fmtest::generator(11);
  fm::AffinePath path(fm::make_scheduler("condot"));
  for (double tv : {0.2, 0.5, 0.8}) {
    SCOPED_TRACE(tv);
    at::Tensor x0 = at::randn({n, 2}, g, at::kDouble);
    at::Tensor x1 = mu + at::randn({n, 2}, g, at::kDouble).matmul(chol.t());
    at::Tensor xt = path.sample(x0, x1, at::full({n}, tv, at::kDouble)).x_t;
    at::Tensor c = (1 - tv) * (1 - tv) * at::eye(2, at::kDouble) + tv * tv * sigma;
    at::Tensor mean = xt.mean(0);
    at::Tensor centred = xt - mean;
    at::Tensor cov = centred.t().matmul(centred) / (n - 1);
    at::Tensor diag = c.diagonal();
    EXPECT_TRUE((((mean - tv * mu).abs()) < 6 * at::sqrt(diag / n)).all().item<bool>()) << mean;
    at::Tensor cov_se = at::sqrt((diag.unsqueeze(1) * diag.unsqueeze(0) + c * c) / n);
    EXPECT_TRUE((((cov - c).abs()) < 6 * cov_se).all().item<bool>()) << cov << " vs " << c;
  }
}

TEST(AffinePath, VelocityIsTheTimeDerivativeOnEveryScheduler) {
  auto g = fmtest::generator(12);
  at::Tensor x0 = at::randn({32, 2}, g, at::kDouble), x1 = at::randn({32, 2}, g, at::kDouble);
  at::Tensor t = at::rand({32}, g, at::kDouble) * 0.9 + 0.05;
  const double h = 1e-6;
  for (const auto& name : fm::scheduler_names()) {
    SCOPED_TRACE(name);
    fm::AffinePath path(fm::make_scheduler(name));
    at::Tensor fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h);
    EXPECT_TRUE(fmtest::AllClose(fd, path.sample(x0, x1, t).velocity, 1e-6, 1e-6));
    EXPECT_FALSE(path.has_interpolant_noise());
  }
}

TEST(AffinePath, BrownianBridgeNoiseAndItsVelocity) {
  // x_t = μ_t + s√(t(1−t))·z with z fixed by the generator: the velocity is d/dt x_t for that z.
  const double s = 0.5;
  fm::AffinePath path(fm::make_scheduler("condot"),
                      fm::AffinePathOptions().noise(fm::InterpolantNoise::BrownianBridge).noise_scale(s));
  auto g = fmtest::generator(13);
  at::Tensor x0 = at::randn({32, 2}, g, at::kDouble), x1 = at::randn({32, 2}, g, at::kDouble);
  at::Tensor t = at::rand({32}, g, at::kDouble) * 0.8 + 0.1;
  const double h = 1e-6;
  auto at_time = [&](const at::Tensor& tt) { return path.sample(x0, x1, tt, fmtest::generator(99)); };
  at::Tensor fd = (at_time(t + h).x_t - at_time(t - h).x_t) / (2 * h);
  EXPECT_TRUE(fmtest::AllClose(fd, at_time(t).velocity, 1e-6, 1e-6));
  // Its variance is s²t(1 − t) around the line; zero at the ends, where the velocity stays finite.
  const int64_t n = 200000;
  at::Tensor z0 = at::zeros({n, 1}, at::kDouble);
  at::Tensor mid = path.sample(z0, z0, at::full({n}, 0.3, at::kDouble), fmtest::generator(5)).x_t;
  EXPECT_NEAR(mid.var().item<double>(), s * s * 0.21, 6 * s * s * 0.21 * std::sqrt(2.0 / n));
  auto end = path.sample(x0, x1, at::zeros({32}, at::kDouble), fmtest::generator(6));
  EXPECT_TRUE(fmtest::AllClose(end.x_t, x0, 0, 1e-15));
  EXPECT_TRUE(at::isfinite(end.velocity).all().item<bool>());
  EXPECT_TRUE(path.has_interpolant_noise());
}

TEST(AffinePath, SpecsStartsAndLegacyRuns) {
  fm::AffinePath vp(fm::make_scheduler(nlohmann::json{{"type", "vp"}, {"beta_min", 0.2}, {"beta_max", 15.0}}),
                    fm::AffinePathOptions().noise(fm::InterpolantNoise::BrownianBridge).noise_scale(0.2));
  EXPECT_EQ(fm::make_path(vp.spec())->spec(), vp.spec());
  // Runs written before schedulers stored {"type": "condot", "sigma": s}.
  auto legacy = fm::make_path(nlohmann::json{{"type", "condot"}, {"sigma", 0.1}});
  EXPECT_EQ(legacy->spec(), fm::CondOTPath(fm::CondOTPathOptions().sigma(0.1)).spec());
  EXPECT_EQ(fm::make_path("cosine")->scheduler()->name(), "cosine");
  // Sampling starts at σ₀·x₀: VE starts at σ_max.
  at::Tensor x0 = at::ones({4, 2});
  fm::AffinePath ve(std::make_shared<fm::VEScheduler>(fm::VESchedulerOptions().sigma_max(20)));
  EXPECT_TRUE(fmtest::AllClose(ve.start(x0), x0 * 20, 1e-6, 0));
  EXPECT_TRUE(at::equal(fm::AffinePath(fm::make_scheduler("condot")).start(x0), x0));
  EXPECT_THROW(fm::make_path(nlohmann::json{{"type", "affine"}}), std::invalid_argument);
  EXPECT_THROW(fm::make_path(nlohmann::json{{"type", "affine"}, {"scheduler", "vp"}, {"noise", "pink"}}), std::invalid_argument);
  EXPECT_THROW(fm::AffinePath(nullptr), std::invalid_argument);
}
