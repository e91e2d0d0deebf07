// Exact and entropic transport plans: enumeration, exact marginals, the entropic gap bound.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "flowmatch/assignment.h"
#include "flowmatch/transport.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
// OT cost between uniform measures of n and k·n atoms: the best assignment of the k·n targets to
// the sources repeated k times (integral plans are optimal), by enumerating permutations.
double brute_force_cost(const at::Tensor& cost) {
  const int64_t n = cost.size(0), m = cost.size(1), k = m / n;
  at::Tensor c = cost.repeat({k, 1});
  std::vector<int64_t> p(m);
  std::iota(p.begin(), p.end(), 0);
  double best = 1e300;
  auto a = c.accessor<double, 2>();
  do {
    double total = 0;
    for (int64_t i = 0; i < m; ++i) total += a[i][p[i]];
    best = std::min(best, total);
  } while (std::next_permutation(p.begin(), p.end()));
  return best / static_cast<double>(m);
}

at::Tensor points(int64_t n, int64_t d, at::Generator& g) { return at::randn({n, d}, g, at::kDouble); }

double exact_marginal_error(const at::Tensor& plan) {
  const double n = plan.size(0), m = plan.size(1);
  return (plan.sum(1) - 1 / n).abs().max().item<double>() + (plan.sum(0) - 1 / m).abs().max().item<double>();
}
}  // namespace

TEST(ExactTransport, EqualSizesMatchEnumerationAndArePermutations) {
  auto g = fmtest::generator(1);
  for (int64_t n = 1; n <= 8; ++n) {
    for (int trial = 0; trial < 4; ++trial) {
      at::Tensor cost = fm::squared_distances(points(n, 2, g), points(n, 2, g) + 1.5);
      auto plan = fm::exact_transport(cost);
      EXPECT_NEAR(plan.cost, brute_force_cost(cost), 1e-9) << "n=" << n;
      EXPECT_NEAR((plan.plan * cost).sum().item<double>(), plan.cost, 1e-12);
      EXPECT_LE(exact_marginal_error(plan.plan), 1e-15);
      // A permutation: exactly one entry 1/n per row and per column.
      EXPECT_TRUE(at::equal((plan.plan > 0).sum(1), at::ones({n}, at::kLong)));
      EXPECT_TRUE(at::equal((plan.plan > 0).sum(0), at::ones({n}, at::kLong)));
    }
  }
}

TEST(ExactTransport, UnequalSizesMatchEnumerationWithExactMarginals) {
  auto g = fmtest::generator(2);
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 5}, {2, 3}, {2, 4}, {3, 2}, {4, 2}}) {
    at::Tensor cost = fm::squared_distances(points(n, 3, g), points(n * k, 3, g));
    auto plan = fm::exact_transport(cost);
    EXPECT_NEAR(plan.cost, brute_force_cost(cost), 1e-9) << n << " x " << n * k;
    EXPECT_LE(exact_marginal_error(plan.plan), 1e-15);
    // The transpose is the same problem.
    EXPECT_NEAR(fm::exact_transport(cost.t()).cost, plan.cost, 1e-9);
  }
  // Sizes that do not divide: marginals stay exact and the plan is a vertex (≤ n + m − 1 non-zeros).
  at::Tensor cost = fm::squared_distances(points(7, 2, g), points(12, 2, g));
  auto plan = fm::exact_transport(cost);
  EXPECT_LE(exact_marginal_error(plan.plan), 1e-15);
  EXPECT_LE((plan.plan > 0).sum().item<int64_t>(), 7 + 12 - 1);
  EXPECT_EQ(plan.marginal_error < 1e-14, true);
}

TEST(ExactTransport, RejectsEmptyAndNonFiniteCosts) {
  EXPECT_THROW(fm::exact_transport(at::zeros({0, 3}, at::kDouble)), std::invalid_argument);
  at::Tensor c = at::zeros({3, 3}, at::kDouble);
  c[1][2] = NAN;
  try {
    fm::exact_transport(c);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("(1, 2)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fm::sinkhorn(c), std::invalid_argument);
}

// ⟨π_ε, C⟩ − ε H(π_ε) ≤ ⟨π*, C⟩ − ε H(π*) and log max(n, m) ≤ H(π) ≤ log n + log m give
// 0 ≤ ⟨π_ε, C⟩ − OT ≤ ε log min(n, m): the entropic cost tends to the exact one linearly in ε.
TEST(Sinkhorn, CostTendsToTheExactCostWithinTheEntropyBound) {
  auto g = fmtest::generator(5);
  for (auto [n, m] : std::vector<std::pair<int64_t, int64_t>>{{40, 40}, {30, 45}}) {
    at::Tensor cost = fm::squared_distances(points(n, 2, g), points(m, 2, g) + 3);  // costs up to ~60
    const double exact = fm::exact_transport(cost).cost;
    const double c_max = cost.max().item<double>();
    double previous_gap = INFINITY;
    for (double reg : {3.0, 1.0, 0.3, 0.1}) {
      auto plan = fm::sinkhorn(cost, fm::SinkhornOptions().reg(reg).tolerance(1e-6).max_iterations(50000));
      ASSERT_TRUE(plan.converged) << "reg " << reg << " after " << plan.iterations;
      EXPECT_TRUE(at::isfinite(plan.plan).all().item<bool>());
      EXPECT_LE(plan.marginal_error, 2e-6) << "reg " << reg;  // rows within the tolerance, columns exact
      const double gap = plan.cost - exact;
      const double slack = c_max * plan.marginal_error;  // the plan is feasible only to this
      EXPECT_GE(gap, -slack) << "reg " << reg;
      EXPECT_LE(gap, reg * std::log(static_cast<double>(std::min(n, m))) + slack) << "reg " << reg;
      EXPECT_LT(gap, previous_gap) << "reg " << reg;
      previous_gap = gap;
    }
    EXPECT_LT(previous_gap, 0.1 * std::log(30.0));
  }
}

// Costs of 10⁴ at ε = 10⁻³ are exp(−10⁷) in the plain kernel: the stabilized iterations must still
// give a finite plan on the exact optimum's support.
TEST(Sinkhorn, TinyRegularizationDoesNotOverflow) {
  auto g = fmtest::generator(6);
  at::Tensor x = points(20, 2, g) * 30, y = points(20, 2, g) * 30 + 50;
  at::Tensor cost = fm::squared_distances(x, y);
  auto exact = fm::exact_transport(cost);
  auto plan = fm::sinkhorn(cost, fm::SinkhornOptions().reg(1e-3).max_iterations(20000));
  EXPECT_TRUE(at::isfinite(plan.plan).all().item<bool>());
  EXPECT_TRUE(plan.converged) << plan.iterations << " " << plan.marginal_error;
  EXPECT_NEAR(plan.cost, exact.cost, 1e-3 * std::log(20.0) + cost.max().item<double>() * plan.marginal_error);
  // Without ε-scaling the iterations crawl at C/ε = 10⁷ (no convergence in this budget), but every
  // number stays finite: the log-domain fallback takes over where the kernel underflows.
  auto crawl = fm::sinkhorn(cost, fm::SinkhornOptions().reg(1e-3).epsilon_scaling(false).max_iterations(200));
  EXPECT_TRUE(at::isfinite(crawl.plan).all().item<bool>());
  EXPECT_TRUE(std::isfinite(crawl.cost));
}

TEST(Sinkhorn, EpsilonScalingReachesTheSameFixedPoint) {
  auto g = fmtest::generator(4);
  at::Tensor cost = fm::squared_distances(points(25, 2, g), points(25, 2, g) + 1);
  auto options = fm::SinkhornOptions().reg(0.5).tolerance(1e-12).max_iterations(100000);
  auto scaled = fm::sinkhorn(cost, options);
  auto plain = fm::sinkhorn(cost, options.epsilon_scaling(false));
  ASSERT_TRUE(scaled.converged && plain.converged);
  EXPECT_TRUE(fmtest::AllClose(scaled.plan, plain.plan, 1e-8, 1e-12));
  // A huge ε gives the independent (product) plan.
  auto flat = fm::sinkhorn(cost, fm::SinkhornOptions().reg(1e8));
  EXPECT_TRUE(fmtest::AllClose(flat.plan, at::full({25, 25}, 1.0 / 625, at::kDouble), 1e-6, 0));
}

TEST(Sinkhorn, ReportsNonConvergenceInsteadOfThrowing) {
  auto g = fmtest::generator(5);
  at::Tensor cost = fm::squared_distances(points(50, 2, g), points(50, 2, g));
  auto plan = fm::sinkhorn(cost, fm::SinkhornOptions().reg(1e-3).max_iterations(3).epsilon_scaling(false));
  EXPECT_FALSE(plan.converged);
  EXPECT_EQ(plan.iterations, 3);
  EXPECT_GT(plan.marginal_error, 1e-6);
  EXPECT_THROW(fm::sinkhorn(cost, fm::SinkhornOptions().reg(0)), std::invalid_argument);
  EXPECT_THROW(fm::sinkhorn(cost, fm::SinkhornOptions().reg(NAN)), std::invalid_argument);
  EXPECT_THROW(fm::sinkhorn(cost, fm::SinkhornOptions().max_iterations(0)), std::invalid_argument);
  EXPECT_THROW(fm::sinkhorn(cost, fm::SinkhornOptions().tolerance(-1)), std::invalid_argument);
}
