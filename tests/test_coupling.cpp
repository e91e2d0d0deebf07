// Couplings: exact OT reorders the targets into the optimal permutation, no pair repeated.
#include <set>

#include "flowmatch/assignment.h"
#include "flowmatch/coupling.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(ExactOTCoupling, PairsAreAnOptimalPermutation) {
  auto g = fmtest::generator(0);
  at::Tensor x0 = at::randn({64, 2}, g), x1 = at::randn({64, 2}, g) * 2 + 3;
  fm::ExactOTCoupling ot;
  auto paired = ot.pair(x0, x1);
  EXPECT_TRUE(at::equal(paired.x0, x0));
  // The paired targets are the same multiset as x1: each exactly once.
  std::set<std::pair<float, float>> before, after;
  for (int64_t i = 0; i < 64; ++i) {
    before.insert({x1[i][0].item<float>(), x1[i][1].item<float>()});
    after.insert({paired.x1[i][0].item<float>(), paired.x1[i][1].item<float>()});
  }
  EXPECT_EQ(before, after);
  const double cost = (paired.x0 - paired.x1).to(at::kDouble).square().sum().item<double>();
  const double optimum = fm::solve_assignment(fm::squared_distances(x0.to(at::kDouble), x1.to(at::kDouble))).total_cost;
  EXPECT_NEAR(cost, optimum, 1e-6 * optimum);
  // Optimal plans are cyclically monotone; in particular no swap of two pairs lowers the cost.
  at::Tensor c = fm::squared_distances(paired.x0.to(at::kDouble), paired.x1.to(at::kDouble));
  at::Tensor diag = c.diagonal();
  at::Tensor swapped = c + c.t() - diag.unsqueeze(1) - diag.unsqueeze(0);  // c_ij + c_ji − c_ii − c_jj
  EXPECT_GE(swapped.min().item<double>(), -1e-9);
}

TEST(IndependentCoupling, LeavesThePairsAsDrawn) {
  at::Tensor x0 = at::randn({8, 2}), x1 = at::randn({8, 2});
  auto p = fm::IndependentCoupling().pair(x0, x1);
  EXPECT_TRUE(at::equal(p.x0, x0));
  EXPECT_TRUE(at::equal(p.x1, x1));
}

TEST(Coupling, FactoryAndErrors) {
  EXPECT_EQ(fm::make_coupling("exact-ot")->spec()["type"], "exact-ot");
  EXPECT_EQ(fm::make_coupling(nlohmann::json{{"type", "independent"}})->spec()["type"], "independent");
  try {
    fm::make_coupling("hungarian");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("independent, exact-ot"), std::string::npos);
  }
  EXPECT_THROW(fm::ExactOTCoupling().pair(at::zeros({4, 2}), at::zeros({5, 2})), c10::Error);
  EXPECT_THROW(fm::ExactOTCoupling().pair(at::zeros({4, 2}), at::zeros({4, 3})), c10::Error);
}
