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
