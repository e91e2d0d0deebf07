// Time sampling: logit-normal and mode-scaled draws match their distributions; logit-normal loss
// weighting equals logit-normal sampling in expectation.
#include <cmath>

#include "flowmatch/time_sampling.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(TimeSampling, UniformAndLogitNormalMoments) {
  auto g = fmtest::generator(0);
  const int64_t n = 200000;
  at::Tensor u = fm::sample_times(n, fm::TimeSamplingOptions(), g).to(at::kDouble);
  EXPECT_GE(u.min().item<double>(), 0);
  EXPECT_LT(u.max().item<double>(), 1);
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 6 * std::sqrt(1.0 / 12 / n));
  const double m = 0.4, s = 1.3;
  auto o = fm::TimeSamplingOptions().distribution(fm::TimeDistribution::LogitNormal).location(m).scale(s);
  at::Tensor logit = at::logit(fm::sample_times(n, o, g).to(at::kDouble));
  EXPECT_NEAR(logit.mean().item<double>(), m, 6 * s / std::sqrt(n));
  EXPECT_NEAR(logit.std().item<double>(), s, 6 * s / std::sqrt(2.0 * n));
}

TEST(TimeSampling, ModeSamplingMatchesItsQuadratureMoments) {
  // t = f(u) with u uniform: E[t^k] = ∫₀¹ f(u)^k du, computed with the midpoint rule (error ~1e-11).
  const double scale = 1.29;
  const int64_t q = 200000;
  at::Tensor u = (at::arange(q, at::kDouble) + 0.5) / q;
  at::Tensor c = at::cos(u * (M_PI / 2));
  at::Tensor f = u + scale * (c * c - 1 + u);
  const double mean = f.mean().item<double>(), second = f.pow(2).mean().item<double>();
  auto g = fmtest::generator(1);
  const int64_t n = 200000;
  at::Tensor t = fm::sample_times(n, fm::TimeSamplingOptions().distribution(fm::TimeDistribution::ModeScaled).mode_scale(scale), g)
                     .to(at::kDouble);
  const double var = second - mean * mean;
  EXPECT_NEAR(t.mean().item<double>(), mean, 6 * std::sqrt(var / n));
  EXPECT_NEAR(t.pow(2).mean().item<double>(), second, 6 * std::sqrt((f.pow(4).mean().item<double>() - second * second) / n));
  // Mode sampling concentrates mass in the middle: its variance is below the uniform 1/12.
  EXPECT_LT(var, 1.0 / 12 - 0.01);
  // s = 0 is the uniform distribution.
  at::Tensor flat = fm::sample_times(n, fm::TimeSamplingOptions().distribution(fm::TimeDistribution::ModeScaled).mode_scale(0), g);
  EXPECT_NEAR(flat.to(at::kDouble).var().item<double>(), 1.0 / 12, 6 * std::sqrt(1.0 / 180 / n));
}

TEST(TimeSampling, LogitNormalWeightingEqualsLogitNormalSampling) {
  // For a loss L(t), E_uniform[w(t) L(t)] = E_logit-normal[L(t)] when w is the logit-normal density.
  auto loss = [](const at::Tensor& t) { return at::sin(3 * t) + t * t; };
  const double m = -0.3, s = 0.8;
  auto g = fmtest::generator(2);
  const int64_t n = 400000;
  auto weighted = fm::TimeSamplingOptions().weighting(fm::LossWeighting::LogitNormal).location(m).scale(s);
  at::Tensor tu = fm::sample_times(n, weighted, g).to(at::kDouble);
  at::Tensor a = fm::loss_weights(tu, weighted) * loss(tu);
  auto sampled = fm::TimeSamplingOptions().distribution(fm::TimeDistribution::LogitNormal).location(m).scale(s);
  at::Tensor b = loss(fm::sample_times(n, sampled, g).to(at::kDouble));
  const double se = std::sqrt(a.var().item<double>() / n + b.var().item<double>() / n);
  EXPECT_NEAR(a.mean().item<double>(), b.mean().item<double>(), 5 * se);
  // The density integrates to one (midpoint rule on a fine grid).
  const int64_t q = 1000000;
  at::Tensor grid = (at::arange(q, at::kDouble) + 0.5) / q;
  EXPECT_NEAR(fm::logit_normal_density(grid, m, s).mean().item<double>(), 1.0, 1e-6);
  EXPECT_FALSE(fm::loss_weights(grid, fm::TimeSamplingOptions()).defined());
}

TEST(TimeSampling, RejectsBadOptionsAndRoundTripsJson) {
  EXPECT_THROW(fm::validate(fm::TimeSamplingOptions().scale(0)), std::invalid_argument);
  EXPECT_THROW(fm::validate(fm::TimeSamplingOptions().mode_scale(2.0)), std::invalid_argument);
  EXPECT_THROW(fm::time_distribution_from_string("beta"), std::invalid_argument);
  EXPECT_THROW(fm::loss_weighting_from_string("snr"), std::invalid_argument);
  auto o = fm::TimeSamplingOptions().distribution(fm::TimeDistribution::ModeScaled).mode_scale(0.5).location(0.2);
  EXPECT_EQ(fm::to_json(fm::time_sampling_from_json(fm::to_json(o))), fm::to_json(o));
  EXPECT_THROW(fm::time_sampling_from_json(nlohmann::json{{"scale", -1.0}}), std::invalid_argument);
}

TEST(TimeSampling, SD3ShiftedGridSpendsStepsNearTheNoise) {
  const auto uniform = fm::shifted_time_grid(4, 1.0);
  for (int k = 0; k <= 4; ++k) EXPECT_NEAR(uniform[k], k / 4.0, 1e-15);
  // s = 3: sigma 1/2 becomes 3/4 (t 1/4); sigma 1/4 becomes 1/2.
  const auto shifted = fm::shifted_time_grid(4, 3.0);
  EXPECT_EQ(shifted.size(), 5u);
  EXPECT_EQ(shifted.front(), 0.0);
  EXPECT_EQ(shifted.back(), 1.0);
  EXPECT_NEAR(shifted[2], 0.25, 1e-15);
  EXPECT_NEAR(shifted[3], 0.5, 1e-15);
  for (int k = 0; k < 4; ++k) EXPECT_LT(shifted[k], shifted[k + 1]);
  // s and 1/s mirror each other: t'(s) = 1 − t'(1/s) at the mirrored step.
  const auto inverse = fm::shifted_time_grid(4, 1.0 / 3.0);
  for (int k = 0; k <= 4; ++k) EXPECT_NEAR(shifted[k], 1 - inverse[4 - k], 1e-12);
  EXPECT_THROW(fm::shifted_time_grid(0, 2.0), std::invalid_argument);
  EXPECT_THROW(fm::shifted_time_grid(4, 0.0), std::invalid_argument);
  EXPECT_THROW(fm::shifted_time_grid(4, std::nan("")), std::invalid_argument);
}

// DDPM's training draws: t = 1 − n/N with n uniform in {1, …, N}: every value on the grid, the
// counts uniform by Pearson's χ² (N − 1 = 9 degrees of freedom: P(χ² > 27.9) = 1e-3).
TEST(TimeSampling, DiscreteDrawsAreTheChainsStepsUniformly) {
  auto g = fmtest::generator(3);
  const int64_t steps = 10, n = 50000;
  auto o = fm::TimeSamplingOptions().distribution(fm::TimeDistribution::Discrete).discrete_steps(steps);
  at::Tensor t = fm::sample_times(n, o, g).to(at::kDouble);
  at::Tensor k = (1 - t) * steps;  // the step index n
  EXPECT_LT((k - k.round()).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(k.round().min().item<double>(), 1);
  EXPECT_EQ(k.round().max().item<double>(), steps);
  at::Tensor counts = at::bincount(k.round().to(at::kLong) - 1, {}, steps).to(at::kDouble);
  const double expected = static_cast<double>(n) / steps;
  EXPECT_LT(((counts - expected).square() / expected).sum().item<double>(), 27.9) << counts;
  EXPECT_EQ(fm::time_sampling_from_json(fm::to_json(o)).discrete_steps(), steps);
  EXPECT_THROW(fm::validate(fm::TimeSamplingOptions().discrete_steps(0)), std::invalid_argument);
}
