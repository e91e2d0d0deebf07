// Couplings: exact OT reorders the targets into the optimal permutation, no pair repeated;
// plan-based pairs follow the plan; class-conditional pairs never cross labels.
#include <algorithm>
#include <map>
#include <numeric>
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
    EXPECT_NE(std::string(e.what()).find("independent, exact-ot, sinkhorn, schrodinger-bridge"), std::string::npos);
  }
  EXPECT_THROW(fm::ExactOTCoupling().pair(at::zeros({4, 2}), at::zeros({4, 3})), c10::Error);
  EXPECT_THROW(fm::ExactOTCoupling().pair(at::zeros({0, 2}), at::zeros({0, 2})), c10::Error);
  auto sb = fm::make_coupling(nlohmann::json{{"type", "schrodinger-bridge"}, {"sigma", 0.5}});
  EXPECT_DOUBLE_EQ(sb->spec()["reg"].get<double>(), 0.5);  // 2 sigma^2
  EXPECT_EQ(fm::make_coupling(sb->spec())->spec(), sb->spec());
  auto sk = fm::make_coupling(nlohmann::json{{"type", "sinkhorn"}, {"reg", 0.2}, {"max_iterations", 50}});
  EXPECT_EQ(sk->spec()["max_iterations"], 50);
  EXPECT_EQ(fm::make_coupling(sk->spec())->spec(), sk->spec());
  EXPECT_THROW(fm::make_coupling("schrodinger-bridge"), std::invalid_argument);  // needs sigma
  EXPECT_THROW(fm::SchrodingerBridgeCoupling(0.0), std::invalid_argument);
  EXPECT_THROW(fm::make_coupling(nlohmann::json{{"type", "sinkhorn"}, {"reg", -1}}), std::invalid_argument);
}

namespace {
double brute_force_pairing_cost(const at::Tensor& a, const at::Tensor& b) {
  const int64_t n = a.size(0);
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  double best = 1e300;
  do {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += (a[i] - b[p[i]]).square().sum().item<double>();
    best = std::min(best, total);
  } while (std::next_permutation(p.begin(), p.end()));
  return best;
}
}  // namespace

TEST(ExactOTCoupling, MatchesEnumerationUpTo8) {
  auto g = fmtest::generator(10);
  for (int64_t n = 1; n <= 8; ++n) {
    at::Tensor x0 = at::randn({n, 3}, g, at::kDouble), x1 = at::randn({n, 3}, g, at::kDouble) + 1;
    auto p = fm::ExactOTCoupling().pair(x0, x1);
    EXPECT_NEAR((p.x0 - p.x1).square().sum().item<double>(), brute_force_pairing_cost(x0, x1), 1e-9) << n;
  }
}

TEST(ExactOTCoupling, InOneDimensionIsTheSortedPairing) {
  auto g = fmtest::generator(11);
  at::Tensor x0 = at::randn({1000, 1}, g, at::kDouble), x1 = at::rand({1000, 1}, g, at::kDouble) * 6 - 1;
  auto p = fm::ExactOTCoupling().pair(x0, x1);
  // The i-th smallest source goes with the i-th smallest target (monotone rearrangement).
  at::Tensor order = std::get<1>(p.x0.squeeze(1).sort());
  at::Tensor paired_targets = p.x1.squeeze(1).index_select(0, order);
  EXPECT_TRUE(at::equal(paired_targets, std::get<0>(x1.squeeze(1).sort())));
}

TEST(ExactOTCoupling, UnequalSizesFollowTheExactPlan) {
  auto g = fmtest::generator(12);
  // 6 sources, 12 targets: each target receives one unit from a single source and each source
  // sends two, so every target appears once and every source exactly twice.
  at::Tensor x0 = at::randn({6, 2}, g, at::kDouble), x1 = at::randn({12, 2}, g, at::kDouble) * 2;
  auto p = fm::ExactOTCoupling().pair(x0, x1, g);
  ASSERT_EQ(p.x0.size(0), 12);
  EXPECT_TRUE(at::equal(p.x1, x1));
  const double cost = (p.x0 - p.x1).square().sum().item<double>() / 12;
  EXPECT_NEAR(cost, fm::exact_transport(fm::squared_distances(x0, x1)).cost, 1e-12);
  std::map<double, int> uses;
  for (int64_t i = 0; i < 12; ++i) ++uses[p.x0[i][0].item<double>()];
  EXPECT_EQ(uses.size(), 6u);
  for (const auto& [value, count] : uses) EXPECT_EQ(count, 2) << value;
  // 12 sources, 8 targets: every source once, its partner in the support of the plan.
  at::Tensor y0 = at::randn({12, 2}, g, at::kDouble), y1 = at::randn({8, 2}, g, at::kDouble);
  at::Tensor plan = fm::exact_transport(fm::squared_distances(y0, y1)).plan;
  auto [i0, i1] = fm::draw_pairs_from_plan(plan, g);
  EXPECT_TRUE(at::equal(i0, at::arange(12, at::kLong)));
  for (int64_t k = 0; k < 12; ++k) EXPECT_GT(plan[i0[k]][i1[k]].item<double>(), 0);
}

TEST(PlanSampling, PairFrequenciesFollowThePlansConditionals) {
  auto g = fmtest::generator(13);
  at::Tensor plan = at::rand({4, 4}, g, at::kDouble) + 0.05;
  plan = plan / plan.sum();
  const int draws = 20000;
  at::Tensor counts = at::zeros({4, 4}, at::kDouble);
  for (int d = 0; d < draws; ++d) {
    auto [i0, i1] = fm::draw_pairs_from_plan(plan, g);
    EXPECT_TRUE(at::equal(i0, at::arange(4, at::kLong)));  // each source row exactly once
    for (int64_t k = 0; k < 4; ++k) counts[i0[k]][i1[k]] += 1;
  }
  at::Tensor conditional = plan / plan.sum(1, true);
  at::Tensor frequency = counts / draws;
  // Each entry is a binomial proportion: 5 standard errors.
  at::Tensor tolerance = 5 * (conditional * (1 - conditional) / draws).sqrt();
  EXPECT_TRUE(((frequency - conditional).abs() <= tolerance).all().item<bool>()) << frequency << conditional;
  EXPECT_THROW(fm::draw_pairs_from_plan(at::zeros({2, 2}, at::kDouble)), c10::Error);
}

TEST(SinkhornCoupling, SmallRegularizationPairsLikeExactOT) {
  auto g = fmtest::generator(14);
  at::Tensor x0 = at::randn({64, 2}, g), x1 = at::randn({64, 2}, g) * 2 + 3;
  auto exact = fm::ExactOTCoupling().pair(x0, x1);
  // Costs are O(10); at ε = 1e-3 the plan is the permutation to many digits: the same pairs.
  auto entropic = fm::SinkhornCoupling(fm::SinkhornOptions().reg(1e-3).max_iterations(20000)).pair(x0, x1, g);
  EXPECT_TRUE(at::equal(entropic.x0, x0));
  EXPECT_TRUE(at::equal(entropic.x1, exact.x1));
  // A large ε mixes the pairs: the cost rises well above the optimum.
  auto blurred = fm::SinkhornCoupling(fm::SinkhornOptions().reg(100)).pair(x0, x1, g);
  EXPECT_GT((blurred.x0 - blurred.x1).square().sum().item<double>(),
            1.2 * (exact.x0 - exact.x1).square().sum().item<double>());
}

TEST(IndependentCoupling, UnequalSizesRepeatTheSmallerSideEvenly) {
  auto g = fmtest::generator(15);
  at::Tensor x0 = at::arange(3, at::kFloat).unsqueeze(1), x1 = at::arange(10, at::kFloat).unsqueeze(1);
  auto p = fm::IndependentCoupling().pair(x0, x1, g);
  ASSERT_EQ(p.x0.size(0), 10);
  EXPECT_TRUE(at::equal(p.x1, x1));
  at::Tensor counts = at::bincount(p.x0.squeeze(1).to(at::kLong));
  EXPECT_GE(counts.min().item<int64_t>(), 3);
  EXPECT_LE(counts.max().item<int64_t>(), 4);
}

TEST(ClassConditionalCoupling, NeverPairsAcrossLabelsAndIsOptimalWithinEach) {
  auto g = fmtest::generator(16);
  const int64_t n = 90;
  at::Tensor x0 = at::randn({n, 2}, g, at::kDouble), x1 = at::randn({n, 2}, g, at::kDouble) * 3;
  at::Tensor y1 = at::randint(0, 3, {n}, g, at::kLong);
  at::Tensor y0 = y1.index_select(0, at::randperm(n, g, at::kLong));  // same counts, other rows
  // Tag each row with its index in a third column to trace the pairs (the cost sees it too, so
  // scale it away: only the first two columns matter).
  auto tagged = [](const at::Tensor& x) { return at::cat({x, at::arange(x.size(0), at::kDouble).unsqueeze(1) * 1e-9}, 1); };
  fm::ExactOTCoupling ot;
  auto p = ot.pair_within_labels(tagged(x0), y0, tagged(x1), y1);
  ASSERT_EQ(p.x0.size(0), n);
  double total = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = std::llround(p.x0[k][2].item<double>() * 1e9), j = std::llround(p.x1[k][2].item<double>() * 1e9);
    EXPECT_EQ(y0[i].item<int64_t>(), p.labels[k].item<int64_t>());
    EXPECT_EQ(y1[j].item<int64_t>(), p.labels[k].item<int64_t>());
  }
  for (int64_t c = 0; c < 3; ++c) {
    at::Tensor a = x0.index_select(0, (y0 == c).nonzero().squeeze(1));
    at::Tensor b = x1.index_select(0, (y1 == c).nonzero().squeeze(1));
    total += fm::exact_transport(fm::squared_distances(a, b)).cost * static_cast<double>(a.size(0));
  }
  EXPECT_NEAR((p.x0 - p.x1).slice(1, 0, 2).square().sum().item<double>(), total, 1e-6);
  // Unlabeled noise: takes the target labels' counts; pairs still within a label.
  auto q = ot.pair_within_labels(x0, at::Tensor(), x1, y1);
  at::Tensor pair_counts = at::bincount(q.labels), target_counts = at::bincount(y1);
  EXPECT_TRUE(at::equal(pair_counts, target_counts));
  // Unequal class counts go through the unequal-size plan; a label on one side only is an error.
  at::Tensor y0_skewed = at::randint(0, 3, {n}, g, at::kLong);
  auto r = ot.pair_within_labels(x0, y0_skewed, x1, y1, g);
  for (int64_t c = 0; c < 3; ++c) {
    const int64_t expected = std::max((y0_skewed == c).sum().item<int64_t>(), (y1 == c).sum().item<int64_t>());
    EXPECT_EQ((r.labels == c).sum().item<int64_t>(), expected);
  }
  try {
    ot.pair_within_labels(x0, at::zeros({n}, at::kLong), x1, y1);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("label 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ot.pair_within_labels(x0, at::Tensor(), x1, y1.slice(0, 0, 10)), c10::Error);
  EXPECT_THROW(ot.pair_within_labels(x0, at::Tensor(), x1, y1.to(at::kFloat)), c10::Error);
}
