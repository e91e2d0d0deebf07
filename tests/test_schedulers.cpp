// Schedulers: derivatives against finite differences, boundary values, the SNR inverse, and the
// schedule transform against the closed-form marginal velocity of a Gaussian target.
#include <cmath>

#include "flowmatch/schedulers.h"
#include "flowmatch/prediction.h"
#include "gaussian_field.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {

std::vector<std::shared_ptr<fm::Scheduler>> all_schedulers() {
  return {std::make_shared<fm::CondOTScheduler>(),
          std::make_shared<fm::CondOTScheduler>(fm::CondOTSchedulerOptions().sigma_min(0.05)),
          std::make_shared<fm::PolynomialScheduler>(fm::PolynomialSchedulerOptions().exponent(3)),
          std::make_shared<fm::CosineScheduler>(),
          std::make_shared<fm::VPScheduler>(),
          std::make_shared<fm::LinearVPScheduler>(),
          std::make_shared<fm::VEScheduler>()};
}

at::Tensor interior_times() { return at::linspace(0.02, 0.98, 49, at::kDouble); }

}  // namespace

TEST(Schedulers, DerivativesMatchCentralDifferences) {
  const double h = 1e-6;
  at::Tensor t = interior_times();
  for (const auto& s : all_schedulers()) {
    SCOPED_TRACE(s->spec().dump());
    auto v = (*s)(t), plus = (*s)(t + h), minus = (*s)(t - h);
    // Central differences err by h²/6·f''' (≤ 1e-9 here) plus rounding ~1e-16/h·|f| (VE's σ is ≤ 10).
    EXPECT_TRUE(fmtest::AllClose((plus.alpha - minus.alpha) / (2 * h), v.d_alpha, 1e-7, 1e-8));
    EXPECT_TRUE(fmtest::AllClose((plus.sigma - minus.sigma) / (2 * h), v.d_sigma, 1e-7, 1e-8));
  }
}

TEST(Schedulers, BoundaryValues) {
  auto at_t = [](const fm::Scheduler& s, double t) { return s(at::full({}, t, at::kDouble)); };
  auto value = [](const at::Tensor& x) { return x.item<double>(); };
  for (const char* name : {"condot", "polynomial", "cosine", "linear-vp"}) {
    SCOPED_TRACE(name);
    auto s = fm::make_scheduler(name);
    EXPECT_NEAR(value(at_t(*s, 0).alpha), 0, 1e-15);
    EXPECT_NEAR(value(at_t(*s, 0).sigma), 1, 1e-15);
    EXPECT_NEAR(value(at_t(*s, 1).alpha), 1, 1e-15);
    EXPECT_NEAR(value(at_t(*s, 1).sigma), 0, 1e-15);
  }
  fm::CondOTScheduler lipman(fm::CondOTSchedulerOptions().sigma_min(0.05));
  EXPECT_NEAR(value(at_t(lipman, 1).sigma), 0.05, 1e-15);
  // VP: α₀ = exp(−(β_min + β_max)/4), σ² = 1 − α² at every t, α₁ = 1.
  fm::VPScheduler vp;
  EXPECT_NEAR(value(at_t(vp, 0).alpha), std::exp(-(0.1 + 20) / 4), 1e-15);
  EXPECT_NEAR(value(at_t(vp, 1).alpha), 1, 1e-15);
  auto v = vp(interior_times());
  EXPECT_TRUE(fmtest::AllClose(v.alpha * v.alpha + v.sigma * v.sigma, at::ones_like(v.alpha), 0, 1e-14));
  // VE: α ≡ 1, σ from σ_max to σ_min.
  fm::VEScheduler ve(fm::VESchedulerOptions().sigma_min(0.01).sigma_max(10));
  EXPECT_NEAR(value(at_t(ve, 0).sigma), 10, 1e-12);
  EXPECT_NEAR(value(at_t(ve, 1).sigma), 0.01, 1e-15);
  EXPECT_NEAR(value(at_t(ve, 0.3).alpha), 1, 0);
}

TEST(Schedulers, TimeAtSnrInvertsTheSnr) {
  at::Tensor t = interior_times();
  for (const auto& s : all_schedulers()) {
    SCOPED_TRACE(s->spec().dump());
    auto v = (*s)(t);
    EXPECT_TRUE(fmtest::AllClose(s->time_at_snr(v.alpha / v.sigma), t, 0, 1e-9));
  }
  // Out-of-range ratios clamp to the ends.
  fm::CosineScheduler cosine;
  EXPECT_NEAR(cosine.time_at_snr(at::full({}, INFINITY, at::kDouble)).item<double>(), 1, 1e-15);
  EXPECT_NEAR(cosine.time_at_snr(at::zeros({}, at::kDouble)).item<double>(), 0, 1e-15);
  fm::VEScheduler ve;
  EXPECT_EQ(ve.time_at_snr(at::full({}, 1e-6, at::kDouble)).item<double>(), 0);
}

TEST(Schedulers, SpecRoundTripAndBadParameters) {
  for (const auto& s : all_schedulers()) EXPECT_EQ(fm::make_scheduler(s->spec())->spec(), s->spec());
  for (const auto& name : fm::scheduler_names()) EXPECT_EQ(fm::make_scheduler(name)->name(), name);
  EXPECT_THROW(fm::make_scheduler("zigzag"), std::invalid_argument);
  EXPECT_THROW(fm::make_scheduler(nlohmann::json{{"type", "vp"}, {"beta_min", "x"}}), std::invalid_argument);
  EXPECT_THROW(fm::VPScheduler(fm::VPSchedulerOptions().beta_min(5).beta_max(1)), std::invalid_argument);
  EXPECT_THROW(fm::VEScheduler(fm::VESchedulerOptions().sigma_min(0)), std::invalid_argument);
  EXPECT_THROW(fm::PolynomialScheduler(fm::PolynomialSchedulerOptions().exponent(-1)), std::invalid_argument);
  EXPECT_THROW(fm::CondOTScheduler(fm::CondOTSchedulerOptions().sigma_min(1)), std::invalid_argument);
}

// DDPM's chain against a plain loop over its β's: ᾱ at every step (the linear chain ends at
// ᾱ_1000 = 4.04e-5), the cosine chain's ᾱ_n = f(n)/f(0) until β is clipped, the SNR inverse, and the
// derivatives of the interpolation between steps.
TEST(Schedulers, DDPMChainMatchesItsBetasStepByStep) {
  const int64_t n = 1000;
  fm::DDPMScheduler linear;
  std::vector<double> bar(n + 1, 1.0);
  for (int64_t i = 1; i <= n; ++i) bar[i] = bar[i - 1] * (1 - (1e-4 + (0.02 - 1e-4) * (i - 1) / 999.0));
  at::Tensor steps = at::arange(0, n + 1, at::kDouble);
  auto v = linear(fm::ddpm_time_of_step(steps, n));
  at::Tensor expected = at::tensor(bar, at::kDouble);
  EXPECT_TRUE(fmtest::AllClose(v.alpha.square(), expected, 1e-12, 1e-15));
  EXPECT_TRUE(fmtest::AllClose(v.sigma.square(), 1 - expected, 1e-12, 1e-15));
  EXPECT_NEAR(bar[n], 4.036e-5, 1e-8);
  EXPECT_TRUE(fmtest::AllClose(fm::ddpm_step_of_time(fm::ddpm_time_of_step(steps, n), n), steps, 0, 1e-9));

  fm::DDPMScheduler cosine(fm::DDPMSchedulerOptions().beta_schedule("cosine"));
  auto f = [&](double k) { return std::pow(std::cos((k / n + 0.008) / 1.008 * M_PI / 2), 2); };
  for (int64_t k : {1, 10, 500, 900, 980}) {
    EXPECT_NEAR(cosine.alpha_bar()[k].item<double>(), f(k) / f(0), 1e-12) << k;
  }
  EXPECT_NEAR(cosine.alpha_bar()[n].item<double>() / cosine.alpha_bar()[n - 1].item<double>(), 1 - 0.999, 1e-12);  // β_N clipped

  for (fm::DDPMScheduler* s : {&linear, &cosine}) {
    SCOPED_TRACE(s->spec().dump());
    at::Tensor t = at::linspace(0.001, 0.999, 97, at::kDouble);
    auto at_t = (*s)(t);
    EXPECT_TRUE(fmtest::AllClose(s->time_at_snr(at_t.alpha / at_t.sigma), t, 0, 1e-9));
    // log ᾱ is a C¹ cubic between steps: central differences (h = 1e-8, a step is 1e-3) agree inside
    // the steps and across them, where the second derivative jumps (error ~ h·jump ≈ 1e-7).
    at::Tensor across = at::cat({t, at::arange(1, n, 37, at::kDouble) / n});
    const double h = 1e-8;
    auto a = (*s)(across), plus = (*s)(across + h), minus = (*s)(across - h);
    EXPECT_TRUE(fmtest::AllClose((plus.alpha - minus.alpha) / (2 * h), a.d_alpha, 1e-5, 1e-6));
    EXPECT_TRUE(fmtest::AllClose((plus.sigma - minus.sigma) / (2 * h), a.d_sigma, 1e-5, 1e-6));
    EXPECT_EQ(fm::make_scheduler(s->spec())->spec(), s->spec());
  }
  EXPECT_THROW(fm::DDPMScheduler(fm::DDPMSchedulerOptions().beta_schedule("sigmoid")), std::invalid_argument);
  EXPECT_THROW(fm::DDPMScheduler(fm::DDPMSchedulerOptions().steps(1)), std::invalid_argument);
  EXPECT_THROW(fm::DDPMScheduler(fm::DDPMSchedulerOptions().beta_end(1.5)), std::invalid_argument);
}

TEST(ScheduleTransform, MovesTheGaussianMarginalVelocityExactly) {
  at::Tensor mu = at::tensor({1.5, -0.5}, at::kDouble);
  const double c = 0.7;
  auto g = fmtest::generator(3);
  at::Tensor x = at::randn({256, 2}, g, at::kDouble) * 2;
  std::vector<std::pair<const char*, const char*>> pairs = {
      {"condot", "cosine"}, {"cosine", "condot"}, {"condot", "vp"}, {"vp", "condot"}, {"vp", "linear-vp"},
      {"polynomial", "cosine"}, {"condot", "ve"}, {"linear-vp", "polynomial"}};
  for (const auto& [from, to] : pairs) {
    SCOPED_TRACE(std::string(from) + " -> " + to);
    auto trained = fm::make_scheduler(from), wanted = fm::make_scheduler(to);
    auto moved = fm::schedule_transformed_field(fmtest::gaussian_marginal_velocity(trained, mu, c), trained, wanted);
    auto truth = fmtest::gaussian_marginal_velocity(wanted, mu, c);
    // Times where both SNR ranges overlap (VP's α₀ > 0 starts it at a positive SNR).
    for (double r : {0.1, 0.3, 0.5, 0.7, 0.9}) {
      at::Tensor rt = at::full({}, r, at::kDouble);
      EXPECT_TRUE(fmtest::AllClose(moved(x, rt), truth(x, rt), 1e-8, 1e-8)) << "at r = " << r;
    }
  }
}

TEST(ScheduleTransform, SameSchedulerIsTheIdentityAndNullsAreRejected) {
  auto s = fm::make_scheduler("cosine");
  auto field = fmtest::gaussian_marginal_velocity(s, at::tensor({0.3, 0.2}, at::kDouble), 0.5);
  auto moved = fm::schedule_transformed_field(field, s, s);
  at::Tensor x = at::randn({16, 2}, fmtest::generator(1), at::kDouble);
  at::Tensor t = at::full({}, 0.4, at::kDouble);
  EXPECT_TRUE(fmtest::AllClose(moved(x, t), field(x, t), 1e-12, 1e-12));
  EXPECT_THROW(fm::schedule_transformed_field(nullptr, s, s), std::invalid_argument);
  EXPECT_THROW(fm::schedule_transformed_field(field, nullptr, s), std::invalid_argument);
}

TEST(ScheduleTransform, PerSampleTimesGiveEachSamplesScalarTimeResult) {
  // Python's ScheduleTransformedModel (flow_matching's) is called with one time per sample: row b of the
  // batched result equals the transform evaluated on row b alone at its own time.
  auto trained = fm::make_scheduler("condot"), wanted = fm::make_scheduler("vp");
  auto gaussian = fmtest::gaussian_marginal_velocity(trained, at::tensor({1.5, -0.5}, at::kDouble), 0.7);
  fm::VelocityField field = [gaussian](const at::Tensor& x, const at::Tensor& t) { return gaussian(x, t.dim() == 1 ? t.unsqueeze(1) : t); };
  auto moved = fm::schedule_transformed_field(field, trained, wanted);
  at::Tensor x = at::randn({6, 2}, fmtest::generator(2), at::kDouble);
  at::Tensor t = at::tensor({0.1, 0.25, 0.4, 0.55, 0.7, 0.95}, at::kDouble);
  at::Tensor batched = moved(x, t);
  for (int64_t b = 0; b < 6; ++b) {
    EXPECT_TRUE(fmtest::AllClose(batched[b], moved(x.slice(0, b, b + 1), t[b]).squeeze(0), 1e-14, 1e-14)) << b;
  }
  EXPECT_THROW(moved(x, t.slice(0, 0, 4)), c10::Error);  // neither one time nor one per sample
}
