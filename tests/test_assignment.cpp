// Linear assignment against enumeration of all permutations.
#include <algorithm>
#include <numeric>
#include <set>

#include "flowmatch/assignment.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
// Minimum over all injective maps rows → cols, by enumerating permutations of the columns.
double brute_force(const at::Tensor& cost) {
  const int64_t n = cost.size(0), m = cost.size(1);
  std::vector<int64_t> cols(m);
  std::iota(cols.begin(), cols.end(), 0);
  double best = 1e300;
  auto c = cost.accessor<double, 2>();
  do {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += c[i][cols[i]];
    best = std::min(best, total);
  } while (std::next_permutation(cols.begin(), cols.end()));
  return best;
}
}  // namespace

TEST(Assignment, MatchesEnumerationForSquareProblemsUpTo8) {
  auto g = fmtest::generator(0);
  for (int64_t n = 1; n <= 8; ++n)
    for (int trial = 0; trial < 6; ++trial) {
      at::Tensor cost = at::rand({n, n}, g, at::kDouble) * 10;
      if (trial % 2) cost = cost.round();  // ties
      auto a = fm::solve_assignment(cost);
      EXPECT_NEAR(a.total_cost, brute_force(cost), 1e-9) << "n=" << n;
      std::set<int64_t> used(a.column_of_row.begin(), a.column_of_row.end());
      EXPECT_EQ(static_cast<int64_t>(used.size()), n) << "not a permutation";
    }
}

TEST(Assignment, MatchesEnumerationForRectangularProblems) {
  auto g = fmtest::generator(1);
  for (auto [n, m] : {std::pair<int64_t, int64_t>{2, 5}, {3, 7}, {4, 6}, {1, 8}})
    for (int trial = 0; trial < 5; ++trial) {
      at::Tensor cost = at::randn({n, m}, g, at::kDouble);
      auto a = fm::solve_assignment(cost);
      EXPECT_NEAR(a.total_cost, brute_force(cost), 1e-9);
      std::set<int64_t> used(a.column_of_row.begin(), a.column_of_row.end());
      EXPECT_EQ(static_cast<int64_t>(used.size()), n);
    }
}

TEST(Assignment, OneDimensionalSquaredCostPairsInSortedOrder) {
  auto g = fmtest::generator(2);
  const int64_t n = 1000;
  at::Tensor a = at::randn({n, 1}, g, at::kDouble), b = at::randn({n, 1}, g, at::kDouble) * 2 + 1;
  auto plan = fm::solve_assignment(fm::squared_distances(a, b));
  // For a convex cost in 1-D the optimal plan is monotone: rank i goes to rank i.
  at::Tensor ra = a.squeeze(1).argsort(), rb = b.squeeze(1).argsort();
  std::vector<int64_t> sorted_target(n);
  for (int64_t k = 0; k < n; ++k) sorted_target[ra[k].item<int64_t>()] = rb[k].item<int64_t>();
  EXPECT_EQ(plan.column_of_row, sorted_target);
  const double sorted_cost = (std::get<0>(a.squeeze(1).sort()) - std::get<0>(b.squeeze(1).sort())).square().sum().item<double>();
  EXPECT_NEAR(plan.total_cost, sorted_cost, 1e-9 * sorted_cost);
}

TEST(Assignment, RejectsBadInput) {
  EXPECT_THROW(fm::solve_assignment(at::zeros({3, 2}, at::kDouble)), std::invalid_argument);
  at::Tensor c = at::zeros({2, 2}, at::kDouble);
  c[0][1] = NAN;
  EXPECT_THROW(fm::solve_assignment(c), std::invalid_argument);
  EXPECT_THROW(fm::solve_assignment(at::zeros({4}, at::kDouble)), c10::Error);
}

TEST(SquaredDistances, AgreesWithTheDefinition) {
  auto g = fmtest::generator(3);
  at::Tensor a = at::randn({7, 3}, g, at::kDouble), b = at::randn({5, 3}, g, at::kDouble);
  at::Tensor direct = (a.unsqueeze(1) - b.unsqueeze(0)).square().sum(2);
  EXPECT_TRUE(fmtest::AllClose(fm::squared_distances(a, b), direct, 1e-12, 1e-12));
}

// Square problems start from Jonker–Volgenant's initialization (column reduction, reduction
// transfer, augmenting row reduction); rectangular ones do not. Adding a column that costs more
// than any full assignment makes the same problem rectangular: both must reach the same optimum,
// on random, integer (many ties) and geometric costs.
TEST(Assignment, InitializedSquareSolverAgreesWithThePlainShortestPaths) {
  auto g = fmtest::generator(7);
  for (int64_t n : {2, 3, 17, 64, 301}) {
    for (int kind = 0; kind < 3; ++kind) {
      at::Tensor cost;
      if (kind == 0) cost = at::rand({n, n}, g, at::kDouble);
      if (kind == 1) cost = at::randint(0, 4, {n, n}, g, at::kDouble);
      if (kind == 2) cost = fm::squared_distances(at::randn({n, 2}, g, at::kDouble), at::randn({n, 2}, g, at::kDouble) + 2);
      const double big = cost.sum().item<double>() + 1;
      at::Tensor padded = at::cat({cost, at::full({n, 1}, big, at::kDouble)}, 1);
      auto square = fm::solve_assignment(cost);
      auto plain = fm::solve_assignment(padded);
      EXPECT_NEAR(square.total_cost, plain.total_cost, 1e-9 * (1 + plain.total_cost)) << n << " kind " << kind;
      std::set<int64_t> used(square.column_of_row.begin(), square.column_of_row.end());
      EXPECT_EQ(static_cast<int64_t>(used.size()), n);
      double recomputed = 0;
      for (int64_t i = 0; i < n; ++i) recomputed += cost[i][square.column_of_row[i]].item<double>();
      EXPECT_NEAR(recomputed, square.total_cost, 1e-9 * (1 + recomputed));
    }
  }
}

TEST(Assignment, VectorizedAndPortableLoopsGiveTheSameAssignment) {
  // Same arithmetic per element and the same first-index rule for ties, so the two loops take the
  // same decisions: identical assignments, including on integer costs full of ties and on sizes
  // that are not a multiple of the vector width.
  auto g = fmtest::generator(9);
  for (int64_t n : {1, 5, 13, 64, 203}) {
    for (int kind = 0; kind < 3; ++kind) {
      at::Tensor cost;
      if (kind == 0) cost = at::rand({n, n + kind}, g, at::kDouble);
      if (kind == 1) cost = at::randint(0, 3, {n, n + 3}, g, at::kDouble);
      if (kind == 2) cost = fm::squared_distances(at::randn({n, 2}, g, at::kDouble) * 3, at::rand({n, 2}, g, at::kDouble));
      cost = cost.contiguous();
      const auto fast = fm::solve_assignment(cost.data_ptr<double>(), cost.size(0), cost.size(1), true);
      const auto portable = fm::solve_assignment(cost.data_ptr<double>(), cost.size(0), cost.size(1), false);
      EXPECT_EQ(fast.column_of_row, portable.column_of_row) << n << " kind " << kind;
      EXPECT_EQ(fast.total_cost, portable.total_cost);
    }
  }
}
