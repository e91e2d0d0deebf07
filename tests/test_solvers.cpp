// Fixed-step solvers on dx/dt = A x (exact solution exp(tA) x0): order of convergence, NFE.
#include <cmath>

#include "flowmatch/solvers.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
// A rotation with decay: exact flow x(t) = e^{-0.5 t} R(2t) x0.
at::Tensor matrix() { return at::tensor({-0.5, -2.0, 2.0, -0.5}, at::kDouble).view({2, 2}); }
fm::VelocityField linear_field() {
  at::Tensor a = matrix();
  return [a](const at::Tensor& x, const at::Tensor&) { return x.mm(a.t()); };
}
at::Tensor exact(const at::Tensor& x0, double t) {
  const double c = std::cos(2 * t), s = std::sin(2 * t), d = std::exp(-0.5 * t);
  at::Tensor r = at::tensor({c, -s, s, c}, at::kDouble).view({2, 2}) * d;
  return x0.mm(r.t());
}
double error(fm::SolverMethod method, int64_t steps) {
  at::Tensor x0 = at::tensor({1.0, 0.5, -0.3, 2.0}, at::kDouble).view({2, 2});
  auto r = fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(method).steps(steps).t1(2.0));
  return (r.x - exact(x0, 2.0)).abs().max().item<double>();
}
}  // namespace

TEST(Solvers, OrderOfConvergenceOnALinearODE) {
  const std::pair<fm::SolverMethod, double> cases[] = {{fm::SolverMethod::Euler, 1.0},
                                                       {fm::SolverMethod::Midpoint, 2.0},
                                                       {fm::SolverMethod::Heun, 2.0},
                                                       {fm::SolverMethod::RK4, 4.0}};
  for (const auto& [method, order] : cases) {
    // Least-squares slope of log error against log step over step counts 64..512.
    std::vector<double> lx, ly;
    for (int64_t steps : {64, 128, 256, 512}) {
      lx.push_back(std::log(2.0 / steps));
      ly.push_back(std::log(error(method, steps)));
    }
    double mx = 0, my = 0;
    for (size_t k = 0; k < lx.size(); ++k) mx += lx[k] / lx.size(), my += ly[k] / ly.size();
    double num = 0, den = 0;
    for (size_t k = 0; k < lx.size(); ++k) num += (lx[k] - mx) * (ly[k] - my), den += (lx[k] - mx) * (lx[k] - mx);
    EXPECT_NEAR(num / den, order, 0.2) << fm::to_string(method);
  }
}

TEST(Solvers, ReportedNFEEqualsTheCallsTheFieldSaw) {
  for (auto method : {fm::SolverMethod::Euler, fm::SolverMethod::Midpoint, fm::SolverMethod::Heun, fm::SolverMethod::RK4}) {
    fm::CountingVelocityField counter(linear_field());
    auto r = fm::solve_ode(counter.field(), at::ones({3, 2}, at::kDouble), fm::SolverOptions().method(method).steps(17));
    EXPECT_EQ(r.nfe, counter.calls());
    EXPECT_EQ(r.nfe, 17 * fm::evaluations_per_step(method));
    EXPECT_EQ(r.steps, 17);
  }
}

TEST(Solvers, EulerOneStepIsExactlyXPlusV) {
  at::Tensor x0 = at::tensor({1.0, 2.0}, at::kDouble).view({1, 2});
  auto r = fm::solve_ode(linear_field(), x0, fm::SolverOptions().steps(1));
  EXPECT_TRUE(fmtest::AllClose(r.x, x0 + x0.mm(matrix().t()), 0, 1e-15));
}

TEST(Solvers, ExplicitGridReverseTimeAndTrajectory) {
  at::Tensor x0 = at::tensor({1.0, 0.0}, at::kDouble).view({1, 2});
  auto forward = fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(fm::SolverMethod::RK4).steps(200));
  // Integrating back from t = 1 to 0 returns to the start (to RK4's accuracy).
  auto back = fm::solve_ode(linear_field(), forward.x, fm::SolverOptions().method(fm::SolverMethod::RK4).steps(200).t0(1).t1(0));
  EXPECT_TRUE(fmtest::AllClose(back.x, x0, 0, 1e-9));
  auto grid = fm::solve_ode(linear_field(), x0,
                            fm::SolverOptions().time_grid({0.0, 0.1, 0.5, 1.0}).record_trajectory(true));
  EXPECT_EQ(grid.steps, 3);
  ASSERT_EQ(grid.trajectory.size(), 4u);
  EXPECT_TRUE(at::equal(grid.trajectory.front(), x0));
  EXPECT_TRUE(at::equal(grid.trajectory.back(), grid.x));
  EXPECT_EQ(grid.times, (std::vector<double>{0.0, 0.1, 0.5, 1.0}));
}

TEST(Solvers, GradientsFlowThroughTheSolveWhenEnabled) {
  at::Tensor x0 = at::tensor({1.0, 0.5}, at::kDouble).view({1, 2}).requires_grad_();
  auto r = fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(fm::SolverMethod::Heun).steps(10));
  r.x.sum().backward();
  ASSERT_TRUE(x0.grad().defined());
  EXPECT_GT(x0.grad().abs().sum().item<double>(), 0);
}

TEST(Solvers, RejectsBadOptions) {
  at::Tensor x0 = at::zeros({1, 2}, at::kDouble);
  EXPECT_THROW(fm::solve_ode(linear_field(), x0, fm::SolverOptions().steps(0)), std::invalid_argument);
  EXPECT_THROW(fm::solve_ode(linear_field(), x0, fm::SolverOptions().t0(1).t1(1)), std::invalid_argument);
  EXPECT_THROW(fm::solve_ode(linear_field(), x0, fm::SolverOptions().time_grid({0.0, 0.5, 0.4})), std::invalid_argument);
  EXPECT_THROW(fm::solve_ode(fm::VelocityField(), x0, fm::SolverOptions()), std::invalid_argument);
  auto wrong = [](const at::Tensor& x, const at::Tensor&) { return x.sum(1); };
  EXPECT_THROW(fm::solve_ode(wrong, x0, fm::SolverOptions()), c10::Error);
  EXPECT_THROW(fm::solver_method_from_string("leapfrog"), std::invalid_argument);
}

TEST(Dopri5, MeetsItsToleranceAndTighterToleranceGivesSmallerError) {
  at::Tensor x0 = at::tensor({1.0, 0.5, -0.3, 2.0}, at::kDouble).view({2, 2});
  double previous = 1e300;
  for (double tol : {1e-4, 1e-6, 1e-8, 1e-10}) {
    auto r = fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(tol).rtol(tol).t1(2.0));
    const double err = (r.x - exact(x0, 2.0)).abs().max().item<double>();
    // Local error per step ≤ tol; over ~tens of steps the global error stays within 10·tol·|x|.
    EXPECT_LT(err, 10 * tol * 2.0) << "tol " << tol;
    EXPECT_LT(err, previous);
    previous = err;
  }
}

TEST(Dopri5, NFEIsExactlyCountedAndAccountedFor) {
  for (double h0 : {0.0, 0.05}) {
    fm::CountingVelocityField counter(linear_field());
    auto r = fm::solve_ode(counter.field(), at::ones({4, 2}, at::kDouble),
                           fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-9).rtol(1e-9).initial_step(h0));
    EXPECT_EQ(r.nfe, counter.calls());
    // One evaluation at the start, one more for the automatic first step, six per attempted step.
    EXPECT_EQ(r.nfe, 1 + (h0 == 0.0 ? 1 : 0) + 6 * (r.steps + r.rejected_steps));
    EXPECT_GT(r.steps, 3);
  }
  // A first step far too large must be rejected and shrunk.
  auto r = fm::solve_ode(linear_field(), at::ones({1, 2}, at::kDouble),
                         fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-10).rtol(1e-10).initial_step(1.0));
  EXPECT_GT(r.rejected_steps, 0);
}

TEST(Dopri5, LandsOnRequestedTimesForwardAndBackward) {
  at::Tensor x0 = at::tensor({1.0, -1.0}, at::kDouble).view({1, 2});
  auto r = fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-10).rtol(1e-10)
                                                 .time_grid({0.0, 0.3, 0.7, 1.5}).record_trajectory(true));
  ASSERT_EQ(r.times, (std::vector<double>{0.0, 0.3, 0.7, 1.5}));
  for (size_t k = 0; k < r.times.size(); ++k) EXPECT_TRUE(fmtest::AllClose(r.trajectory[k], exact(x0, r.times[k]), 0, 1e-8));
  auto back = fm::solve_ode(linear_field(), r.x, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-10).rtol(1e-10).t0(1.5).t1(0.0));
  EXPECT_TRUE(fmtest::AllClose(back.x, x0, 0, 1e-8));
}

TEST(Dopri5, GivesUpAfterMaxStepsAndRejectsBadTolerances) {
  at::Tensor x0 = at::ones({1, 2}, at::kDouble);
  EXPECT_THROW(fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-12).rtol(1e-12).max_steps(3)),
               std::runtime_error);
  EXPECT_THROW(fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(0)), std::invalid_argument);
  auto nan_field = [](const at::Tensor& x, const at::Tensor&) { return x * NAN; };
  EXPECT_THROW(fm::solve_ode(nan_field, x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5)), std::runtime_error);
}

TEST(Dopri5, AFieldReturningItsInputIsNotCorruptedByBufferReuse) {
  // dx/dt = x written as `return x`: the stage buffers must not alias the stored stages.
  auto identity = [](const at::Tensor& x, const at::Tensor&) { return x; };
  at::NoGradGuard no_grad;
  auto r = fm::solve_ode(identity, at::ones({2, 2}, at::kDouble),
                         fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-10).rtol(1e-10));
  EXPECT_TRUE(fmtest::AllClose(r.x, at::full({2, 2}, std::exp(1.0), at::kDouble), 0, 1e-8));
}

// States at requested times: exactly those times, in the direction of integration, at the accuracy of
// the method (the step containing an output time is split, costing one more step's evaluations).
TEST(Solvers, StatesAtRequestedTimes) {
  at::Tensor x0 = at::tensor({1.0, -0.5, 0.3, 2.0}, at::kDouble).view({2, 2});
  const std::vector<double> wanted = {0.8, 0.305, 1.0, 0.5};  // any order; 0.305 is inside a step
  fm::CountingVelocityField counter(linear_field());
  auto r = fm::solve_ode(counter.field(), x0, fm::SolverOptions().method(fm::SolverMethod::RK4).steps(100).output_times(wanted));
  ASSERT_EQ(r.times, (std::vector<double>{0.305, 0.5, 0.8, 1.0}));
  ASSERT_EQ(r.trajectory.size(), 4u);
  // RK4, h = 0.01, |λ| ≈ 2.06: local error ≈ (λh)⁵/120 ≈ 3e-11 per step, ≈ 3e-9 over 100 steps.
  for (size_t k = 0; k < 4; ++k) EXPECT_TRUE(fmtest::AllClose(r.trajectory[k], exact(x0, r.times[k]), 0, 1e-8)) << r.times[k];
  EXPECT_EQ(r.steps, 101);  // one step split in two
  EXPECT_EQ(r.nfe, 4 * 101);
  EXPECT_EQ(counter.calls(), r.nfe);
  EXPECT_TRUE(at::equal(r.trajectory.back(), r.x));
  // Reverse time: listed from the start backwards.
  auto back = fm::solve_ode(linear_field(), r.x, fm::SolverOptions().method(fm::SolverMethod::Heun).steps(400).t0(1).t1(0)
                                                     .output_times({0.25, 0.75}));
  ASSERT_EQ(back.times, (std::vector<double>{0.75, 0.25}));
  EXPECT_TRUE(fmtest::AllClose(back.trajectory[1], exact(x0, 0.25), 0, 1e-4));
  // Dopri5 lands on them.
  auto adaptive = fm::solve_ode(linear_field(), x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-10).rtol(1e-10)
                                                        .output_times({0.0, 0.3, 0.61}));
  ASSERT_EQ(adaptive.times, (std::vector<double>{0.0, 0.3, 0.61}));
  for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(fmtest::AllClose(adaptive.trajectory[k], exact(x0, adaptive.times[k]), 0, 1e-8));
  EXPECT_TRUE(fmtest::AllClose(adaptive.x, exact(x0, 1.0), 0, 1e-8));
  EXPECT_THROW(fm::solve_ode(linear_field(), x0, fm::SolverOptions().output_times({1.5})), std::invalid_argument);
  EXPECT_THROW(fm::solve_ode(linear_field(), x0, fm::SolverOptions().output_times({NAN})), std::invalid_argument);
}

// Dopri5's batch RMS norm (torchdiffeq's) against the per-sample one on a batch where one sample moves
// much faster than the rest: the batch norm averages that sample's error away and spends fewer steps;
// the per-sample norm keeps it within the tolerance.
TEST(Solvers, BatchErrorNormSpendsFewerStepsAndLetsTheWorstSampleErrMore) {
  // dx/dt = a·x per sample, exact x0·e^a; rates 0.1 for 99 samples and 8 for one.
  at::Tensor rates = at::full({100, 1}, 0.1, at::kDouble);
  rates[0] = 8.0;
  fm::VelocityField field = [&](const at::Tensor& x, const at::Tensor&) { return rates * x; };
  at::Tensor x0 = at::ones({100, 1}, at::kDouble);
  at::Tensor exact = at::exp(rates);
  auto options = fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-6).rtol(1e-6);
  auto per_sample = fm::solve_ode(field, x0, options);
  auto batch = fm::solve_ode(field, x0, fm::SolverOptions(options).error_norm(fm::ErrorNorm::Batch));
  EXPECT_LT(batch.nfe, per_sample.nfe);
  const double worst_sample = ((per_sample.x - exact).abs() / exact).max().item<double>();
  const double worst_batch = ((batch.x - exact).abs() / exact).max().item<double>();
  EXPECT_LT(worst_sample, worst_batch);
  EXPECT_LT(worst_sample, 1e-4);
  EXPECT_EQ(fm::error_norm_from_string("batch"), fm::ErrorNorm::Batch);
  EXPECT_THROW(fm::error_norm_from_string("max"), std::invalid_argument);
}
