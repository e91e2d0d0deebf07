// Exact W2 against brute force, closed forms and symmetry.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "flowmatch/assignment.h"
#include "flowmatch/metrics.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
// W2² between uniform measures of n and k·n atoms = the best assignment of the k·n targets to
// the sources repeated k times (integral plans are optimal); enumerate every permutation.
double brute_force_w2(const at::Tensor& a, const at::Tensor& b) {
  const int64_t n = a.size(0), m = b.size(0), k = m / n;
  at::Tensor cost = fm::squared_distances(a.repeat({k, 1}), b);
  std::vector<int64_t> p(m);
  std::iota(p.begin(), p.end(), 0);
  double best = 1e300;
  auto c = cost.accessor<double, 2>();
  do {
    double total = 0;
    for (int64_t i = 0; i < m; ++i) total += c[i][p[i]];
    best = std::min(best, total);
  } while (std::next_permutation(p.begin(), p.end()));
  return std::sqrt(best / m);
}
}  // namespace

TEST(Wasserstein2, EqualSizesMatchBruteForce) {
  auto g = fmtest::generator(0);
  for (int64_t n = 1; n <= 8; ++n) {
    at::Tensor a = at::randn({n, 2}, g, at::kDouble), b = at::randn({n, 2}, g, at::kDouble) + 0.5;
    EXPECT_NEAR(fm::metrics::wasserstein2(a, b), brute_force_w2(a, b), 1e-9) << "n=" << n;
  }
}

TEST(Wasserstein2, UnequalSizesMatchBruteForce) {
  auto g = fmtest::generator(1);
  for (auto [n, m] : {std::pair<int64_t, int64_t>{1, 5}, {2, 4}, {2, 6}, {4, 8}, {3, 6}}) {
    at::Tensor a = at::randn({n, 3}, g, at::kDouble), b = at::randn({m, 3}, g, at::kDouble);
    EXPECT_NEAR(fm::metrics::wasserstein2(a, b), brute_force_w2(a, b), 1e-9) << n << " vs " << m;
    EXPECT_NEAR(fm::metrics::wasserstein2(b, a), fm::metrics::wasserstein2(a, b), 1e-9);
  }
}

TEST(Wasserstein2, ClosedForms) {
  auto g = fmtest::generator(2);
  at::Tensor a = at::randn({300, 2}, g, at::kDouble);
  EXPECT_NEAR(fm::metrics::wasserstein2(a, a), 0.0, 1e-12);
  // A translation by c moves every point by |c|, and no plan does better: W2 = |c|.
  at::Tensor c = at::tensor({3.0, -4.0}, at::kDouble);
  EXPECT_NEAR(fm::metrics::wasserstein2(a, a + c), 5.0, 1e-9);
  // Shuffling the reference changes nothing.
  EXPECT_NEAR(fm::metrics::wasserstein2(a, (a + c).index_select(0, at::randperm(300, g, at::kLong))), 5.0, 1e-9);
  // Float32 input is computed in float64.
  EXPECT_NEAR(fm::metrics::wasserstein2(a.to(at::kFloat), (a + c).to(at::kFloat)), 5.0, 1e-5);
}

TEST(Wasserstein2, RejectsBadInput) {
  EXPECT_THROW(fm::metrics::wasserstein2(at::zeros({3, 2}), at::zeros({3, 3})), c10::Error);
  EXPECT_THROW(fm::metrics::wasserstein2(at::zeros({3}), at::zeros({3})), c10::Error);
  at::Tensor bad = at::zeros({3, 2});
  bad[1][0] = NAN;
  EXPECT_THROW(fm::metrics::wasserstein2(bad, at::zeros({3, 2})), c10::Error);
}

// A constant field moves every point along a straight line: S = 0, energy ‖μ‖², and W2² between
// the points and their translates is ‖μ‖² (the identity pairing is optimal for a translation).
TEST(TrajectoryMetrics, ConstantFieldIsStraightWithZeroPathEnergyGap) {
  auto g = fmtest::generator(20);
  at::Tensor x0 = at::randn({500, 2}, g, at::kDouble);
  at::Tensor mu = at::tensor({3.0, -4.0}, at::kDouble);
  fm::VelocityField field = [&](const at::Tensor& x, const at::Tensor&) { return mu.expand_as(x).clone(); };
  auto m = fm::metrics::trajectory_metrics(field, x0, x0 + mu);
  EXPECT_NEAR(m.straightness, 0.0, 1e-12);
  EXPECT_NEAR(m.path_energy, 25.0, 1e-9);
  EXPECT_NEAR(m.w2_squared, 25.0, 1e-9);
  EXPECT_NEAR(m.normalized_path_energy, 0.0, 1e-10);
  EXPECT_EQ(m.nfe, 100 + 101);  // Euler 100 steps, then v at the 101 grid times
  EXPECT_TRUE(fmtest::AllClose(m.x1, x0 + mu, 0, 1e-12));
}

// A rotation v = ωJx bends every path into an arc: X_t = R(ωt)X₀, ‖v‖² = ω²‖X₀‖², and since
// ∫₀¹ ωJR(ωs) ds = R(ω) − I, S = (ω² − 2 + 2 cos ω)·E‖X₀‖² and energy = S + E‖X₁ − X₀‖².
TEST(TrajectoryMetrics, RotationMatchesTheClosedForm) {
  auto g = fmtest::generator(21);
  at::Tensor x0 = at::randn({400, 2}, g, at::kDouble);
  const double omega = 1.3;
  fm::VelocityField field = [&](const at::Tensor& x, const at::Tensor&) {
    return at::stack({-x.select(1, 1), x.select(1, 0)}, 1) * omega;
  };
  auto m = fm::metrics::trajectory_metrics(field, x0, x0 * 2,
                                           fm::metrics::TrajectoryMetricsOptions().method(fm::SolverMethod::RK4).steps(200));
  const double second_moment = x0.square().sum(1).mean().item<double>();
  const double expected_s = (omega * omega - 2 + 2 * std::cos(omega)) * second_moment;
  // Trapezoidal rule, h = 1/200: relative error ~ h²·ω²/12 ≈ 4e-6 on smooth integrands.
  EXPECT_NEAR(m.straightness, expected_s, 1e-4 * expected_s);
  EXPECT_NEAR(m.path_energy, omega * omega * second_moment, 1e-4 * second_moment);
  const double chord = (m.x1 - x0).square().sum(1).mean().item<double>();
  EXPECT_NEAR(chord, (2 - 2 * std::cos(omega)) * second_moment, 1e-8 * second_moment);
  EXPECT_NEAR(m.path_energy, m.straightness + chord, 1e-4 * second_moment);
  EXPECT_THROW(fm::metrics::trajectory_metrics(field, x0, x0, fm::metrics::TrajectoryMetricsOptions().method(fm::SolverMethod::Dopri5)),
               std::invalid_argument);
  EXPECT_THROW(fm::metrics::trajectory_metrics(field, x0, x0, fm::metrics::TrajectoryMetricsOptions().steps(0)),
               std::invalid_argument);
}

TEST(FrechetDistance, ClosedFormForCovariancesSharingEigenvectors) {
  // Σ₁ = R diag(a) Rᵀ, Σ₂ = R diag(b) Rᵀ commute, so FD = ‖μ₁ − μ₂‖² + Σ (√a − √b)².
  auto gen = fmtest::generator(1);
  auto [q, r] = at::linalg_qr(at::randn({5, 5}, gen, at::kDouble));
  at::Tensor a = at::tensor({0.5, 1.0, 2.0, 3.0, 0.1}, at::kDouble), b = at::tensor({1.0, 1.0, 0.5, 4.0, 0.2}, at::kDouble);
  flowmatch::metrics::GaussianStatistics s1{at::randn({5}, gen, at::kDouble), q.mm(at::diag(a)).mm(q.t())};
  flowmatch::metrics::GaussianStatistics s2{at::randn({5}, gen, at::kDouble), q.mm(at::diag(b)).mm(q.t())};
  const double expected = (s1.mean - s2.mean).pow(2).sum().item<double>() + (a.sqrt() - b.sqrt()).pow(2).sum().item<double>();
  EXPECT_NEAR(flowmatch::metrics::frechet_distance(s1, s2), expected, 1e-9);
  EXPECT_NEAR(flowmatch::metrics::frechet_distance(s1, s1), 0.0, 1e-9);
  // Symmetric even when the covariances do not commute.
  flowmatch::metrics::GaussianStatistics s3{s2.mean, at::eye(5, at::kDouble) + 0.3 * at::ones({5, 5}, at::kDouble)};
  EXPECT_NEAR(flowmatch::metrics::frechet_distance(s1, s3), flowmatch::metrics::frechet_distance(s3, s1), 1e-9);
}

TEST(FrechetDistance, FromSamplesApproachesTheGaussianValue) {
  // N(0, I) vs N(m, 4 I) in 3-D: FD = ‖m‖² + 3 (2 − 1)² = ‖m‖² + 3; with 200 000 samples the
  // estimate is within a few hundredths.
  auto gen = fmtest::generator(2);
  at::Tensor m = at::tensor({1.0, -1.0, 0.5}, at::kDouble);
  at::Tensor x = at::randn({200000, 3}, gen, at::kDouble), y = m + 2.0 * at::randn({200000, 3}, gen, at::kDouble);
  EXPECT_NEAR(flowmatch::metrics::frechet_distance(x, y), 2.25 + 3.0, 0.05);
  auto stats = flowmatch::metrics::gaussian_statistics(y);
  EXPECT_TRUE(fmtest::AllClose(stats.covariance, 4.0 * at::eye(3, at::kDouble), 0, 0.05));
  EXPECT_THROW(flowmatch::metrics::gaussian_statistics(at::randn({1, 3})), c10::Error);
  EXPECT_THROW(flowmatch::metrics::frechet_distance(at::randn({10, 3}), at::randn({10, 4})), c10::Error);
  at::Tensor bad = at::randn({10, 3});
  bad[4][1] = std::nan("");
  EXPECT_THROW(flowmatch::metrics::gaussian_statistics(bad), c10::Error);
}
