// The Euler–Maruyama sampler keeps the flow's marginals: on the closed-form velocity of a Gaussian
// target its samples have the target's mean and covariance at every time, for several noise levels.
#include <cmath>

#include "flowmatch/prediction.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/sde.h"
#include "flowmatch/solvers.h"
#include "gaussian_field.h"
#include "test_util.h"

namespace fm = flowmatch;


TEST(SDE, KeepsTheGaussianMarginalsForAnyNoiseLevel) {
  at::Tensor mu = at::tensor({2.0, -1.0}, at::kDouble);
  const double c = 0.5;
  const int64_t n = 20000, steps = 400;
  for (const char* name : {"condot", "vp"}) {
    auto s = fm::make_scheduler(name);
    auto field = fmtest::gaussian_marginal_velocity(s, mu, c);
    for (double scale : {0.5, 1.0, 2.0}) {
      SCOPED_TRACE(std::string(name) + ", noise scale " + std::to_string(scale));
      auto g = fmtest::generator(7);
      at::Tensor x0 = at::randn({n, 2}, g, at::kDouble);
      auto r = fm::solve_sde(field, *s, x0, fm::SDEOptions().steps(steps).noise_scale(scale).record_trajectory(true), g);
      EXPECT_EQ(r.nfe, steps);
      ASSERT_EQ(r.trajectory.size(), static_cast<size_t>(steps + 1));
      // At t = 0.5 and t = 1: mean αμ, variance α²c² + σ² per coordinate. Tolerance: 6 standard errors
      // plus 0.02 for Euler–Maruyama's O(h) weak error (h = 1/400).
      for (size_t k : {static_cast<size_t>(steps / 2), static_cast<size_t>(steps)}) {
        const double t = r.times[k];
        auto v = (*s)(at::full({}, t, at::kDouble));
        const double a = v.alpha.item<double>(), sg = v.sigma.item<double>();
        const double var = a * a * c * c + sg * sg;
        at::Tensor x = r.trajectory[k];
        EXPECT_TRUE(fmtest::AllClose(x.mean(0), a * mu, 0, 6 * std::sqrt(var / n) + 0.02)) << "t = " << t;
        EXPECT_TRUE(fmtest::AllClose(x.var(0), at::full({2}, var, at::kDouble), 0, 6 * var * std::sqrt(2.0 / n) + 0.02))
            << "t = " << t << ": " << x.var(0);
      }
    }
  }
}

TEST(SDE, ZeroNoiseIsEulerAndTheScoreMustMatchThePath) {
  at::Tensor mu = at::tensor({2.0, -1.0}, at::kDouble);
  auto s = fm::make_scheduler("condot");
  auto field = fmtest::gaussian_marginal_velocity(s, mu, 0.5);
  auto g = fmtest::generator(8);
  at::Tensor x0 = at::randn({20000, 2}, g, at::kDouble);
  // Zero noise is exactly Euler's method on the same grid.
  auto sde = fm::solve_sde(field, *s, x0, fm::SDEOptions().steps(50).noise_scale(0), g);
  auto ode = fm::solve_ode(field, x0, fm::SolverOptions().steps(50));
  EXPECT_TRUE(fmtest::AllClose(sde.x, ode.x, 1e-12, 1e-12));
  // The score must come from the field's own path: converting through VP's scheduler a field made
  // on CondOT gives the wrong drift, and the final variance (0.25) is visibly off.
  auto wrong = fm::solve_sde(field, *fm::make_scheduler("vp"), x0, fm::SDEOptions().steps(400), g);
  EXPECT_GT((wrong.x.var(0) - 0.25).abs().max().item<double>(), 0.05) << wrong.x.var(0);
  // A constant diffusion with the score term keeps the target variance (up to t1 = 0.99, σ ≥ 0.01).
  auto constant = fm::solve_sde(field, *s, x0, fm::SDEOptions().steps(400).t1(0.99).diffusion([](double) { return 0.3; }), g);
  auto v = (*s)(at::full({}, 0.99, at::kDouble));
  const double var = std::pow(v.alpha.item<double>() * 0.5, 2) + std::pow(v.sigma.item<double>(), 2);
  EXPECT_TRUE(fmtest::AllClose(constant.x.var(0), at::full({2}, var, at::kDouble), 0, 6 * var * std::sqrt(2.0 / 20000) + 0.03))
      << constant.x.var(0);
  // In-place updates (gradient mode off) give the same numbers as the out-of-place ones.
  auto g1 = fmtest::generator(9), g2 = fmtest::generator(9);
  auto with_grad = fm::solve_sde(field, *s, x0, fm::SDEOptions().steps(20), g1);
  at::Tensor in_place;
  {
    at::NoGradGuard no_grad;
    in_place = fm::solve_sde(field, *s, x0, fm::SDEOptions().steps(20), g2).x;
  }
  EXPECT_TRUE(fmtest::AllClose(in_place, with_grad.x, 1e-12, 1e-12));
  EXPECT_THROW(fm::solve_sde(field, *s, x0, fm::SDEOptions().steps(0), g), std::invalid_argument);
  EXPECT_THROW(fm::solve_sde(field, *s, x0, fm::SDEOptions().t0(0.5).t1(0.5), g), std::invalid_argument);
  EXPECT_THROW(fm::solve_sde(field, *s, x0, fm::SDEOptions().noise_scale(-1), g), std::invalid_argument);
}

// DDIM and DPM-Solver++(2M) (dpm_solver.h) on the closed-form Gaussian field: the exact flow is
// x_t = α_t μ + √(v_t/v_0)·(x_0 − α_0 μ), v_t = α_t²c² + σ_t²; DDIM converges at order 1, DPM-Solver++(2M)
// at order 2, and every registered ODE sampler reproduces the exact map at 200 steps.
TEST(ExponentialIntegrators, DDIMIsFirstOrderDPMSolverPlusPlusSecondOrderAndEverySamplerMatchesTheGaussianFlow) {
  at::Tensor mu = at::tensor({2.0, -1.0}, at::kDouble);
  const double c = 0.5;
  auto g = fmtest::generator(11);
  at::Tensor x0 = at::randn({200, 2}, g, at::kDouble);
  for (const char* name : {"condot", "cosine", "vp", "ddpm-linear", "ddpm-cosine"}) {
    SCOPED_TRACE(name);
    auto s = fm::make_scheduler(name);
    auto field = fmtest::gaussian_marginal_velocity(s, mu, c);
    auto v = (*s)(at::tensor({0.0, 1.0}, at::kDouble));
    const double a0 = v.alpha[0].item<double>(), a1 = v.alpha[1].item<double>();
    const double var0 = a0 * a0 * c * c + std::pow(v.sigma[0].item<double>(), 2), var1 = a1 * a1 * c * c + std::pow(v.sigma[1].item<double>(), 2);
    at::Tensor exact = mu * a1 + (x0 - mu * a0) * std::sqrt(var1 / var0);
    auto error = [&](const std::string& solver, int64_t steps) {
      auto r = fm::solve(solver, field, x0, fm::SolverOptions().steps(steps).scheduler(s));
      EXPECT_EQ(r.nfe, steps * fm::solver_info(solver).evaluations_per_step);
      return (r.x - exact).abs().max().item<double>();
    };
    // Orders from 64 to 256 steps (a factor 4): DDIM 1; DPM-Solver++(2M) near 2 (its error is not yet
    // monotone at 16-32 steps, where terms of both signs cancel).
    const double ddim64 = error("ddim", 64), ddim256 = error("ddim", 256);
    const double dpm64 = error("dpm-solver++", 64), dpm256 = error("dpm-solver++", 256);
    EXPECT_NEAR(std::log2(ddim64 / ddim256) / 2, 1.0, 0.15) << ddim64 << " " << ddim256;
    EXPECT_GT(std::log2(dpm64 / dpm256) / 2, 1.4) << dpm64 << " " << dpm256;
    EXPECT_LT(dpm256, ddim256 / 10);
    // Every ODE sampler at 200 steps (not on VP and DDPM's chain, whose σ̇ is −∞ at t = 1, where Heun,
    // RK4 and Dopri5 evaluate the field).
    if (std::string(name) != "condot" && std::string(name) != "cosine") continue;
    for (const auto& solver : fm::solver_names(/*stochastic=*/false)) {
      const auto info = fm::solver_info(solver);
      if (info.discrete) continue;
      auto r = fm::solve(solver, field, x0, fm::SolverOptions().steps(200).atol(1e-8).rtol(1e-8).scheduler(s));
      const bool first_order = solver == "euler" || solver == "ddim";
      EXPECT_LT((r.x - exact).abs().max().item<double>(), info.adaptive ? 1e-5 : first_order ? 0.02 : 2e-3) << solver;
    }
  }
  // One step from t = 0 on CondOT (α₀ = 0, σ₁ = 0) is the data prediction itself: D = (σv − σ̇x)/(α̇σ − σ̇α) = x + v.
  auto s = fm::make_scheduler("condot");
  auto field = fmtest::gaussian_marginal_velocity(s, mu, c);
  auto one = fm::solve("dpm-solver++", field, x0, fm::SolverOptions().steps(1).scheduler(s));
  EXPECT_LT((one.x - (x0 + field(x0, at::zeros({}, at::kDouble)))).abs().max().item<double>(), 1e-12);
  EXPECT_THROW(fm::solve("ddim", field, x0, fm::SolverOptions().steps(4)), std::invalid_argument);  // no scheduler
}

// The ancestral sampler (DDIM with η; η = 1 is DDPM's) on the closed-form Gaussian field: the target's
// mean and standard deviation for η = 0.5 and 1 (6 standard errors plus 0.03 for 400 steps), and η = 0
// is DDIM exactly.
TEST(ExponentialIntegrators, AncestralSamplingReachesTheGaussianTargetAndEtaZeroIsDDIM) {
  at::Tensor mu = at::tensor({2.0, -1.0}, at::kDouble);
  const double c = 0.5;
  const int64_t n = 20000;
  for (const char* name : {"condot", "vp"}) {
    SCOPED_TRACE(name);
    auto s = fm::make_scheduler(name);
    auto field = fmtest::gaussian_marginal_velocity(s, mu, c);
    auto g = fmtest::generator(5);
    at::Tensor x0 = at::randn({n, 2}, g, at::kDouble);
    auto v = (*s)(at::tensor({0.0, 1.0}, at::kDouble));
    const double a0 = v.alpha[0].item<double>(), sd0 = std::sqrt(a0 * a0 * c * c + std::pow(v.sigma[0].item<double>(), 2));
    x0 = x0 * sd0 + mu * a0;  // the flow's t = 0 marginal (VP's α₀ is not 0)
    for (double eta : {0.5, 1.0}) {
      SCOPED_TRACE("eta " + std::to_string(eta));
      auto r = fm::solve("ancestral", field, x0, fm::SolverOptions().steps(400).scheduler(s).noise_scale(eta).generator(fmtest::generator(9)));
      EXPECT_EQ(r.nfe, 400);
      const double se_mean = c / std::sqrt(static_cast<double>(n)), se_sd = c / std::sqrt(2.0 * n);
      EXPECT_LT((r.x.mean(0) - mu).abs().max().item<double>(), 6 * se_mean + 0.03);
      EXPECT_LT((r.x.std(0) - c).abs().max().item<double>(), 6 * se_sd + 0.03);
    }
    auto ancestral0 = fm::solve("ancestral", field, x0.slice(0, 0, 50), fm::SolverOptions().steps(20).scheduler(s).noise_scale(0));
    auto ddim = fm::solve("ddim", field, x0.slice(0, 0, 50), fm::SolverOptions().steps(20).scheduler(s));
    EXPECT_LT((ancestral0.x - ddim.x).abs().max().item<double>(), 1e-10);
  }
}

// DDPM's sampler (Ho et al. 2020, Algorithm 2) written out over its own β's, against the ancestral
// sampler (η = 1) on the ddpm-linear scheduler with 1000 steps, on the same noise: equal path by path.
// The ε-prediction is the exact one of a Gaussian target, E[ε | x_n] = √(1 − ᾱ)(x − √ᾱ μ)/(ᾱc² + 1 − ᾱ),
// turned into a velocity as a trained ε-network is. The samples then have the target's moments.
TEST(ExponentialIntegrators, AncestralSamplerOnTheDDPMChainIsDDPMsAlgorithm) {
  const double mu = 1.5, c = 0.4;
  const int64_t N = 1000, n = 4000;
  auto scheduler = std::make_shared<fm::DDPMScheduler>();
  const at::Tensor bar = scheduler->alpha_bar();
  auto epsilon_at = [&](const at::Tensor& x, double alpha_bar) {
    return std::sqrt(1 - alpha_bar) * (x - std::sqrt(alpha_bar) * mu) / (alpha_bar * c * c + 1 - alpha_bar);
  };
  fm::VelocityField epsilon_network = [&](const at::Tensor& x, const at::Tensor& t) {
    auto v = (*scheduler)(t.to(at::kDouble));
    const double a = v.alpha.item<double>();
    return epsilon_at(x, a * a);
  };
  auto velocity = fm::velocity_from_prediction(epsilon_network, fm::PredictionTarget::Noise, scheduler);
  auto g = fmtest::generator(21);
  at::Tensor x_start = at::randn({n, 1}, g, at::kDouble);
  auto r = fm::solve("ancestral", velocity, x_start, fm::SolverOptions().steps(N).scheduler(scheduler).noise_scale(1.0).generator(fmtest::generator(8)));
  EXPECT_EQ(r.nfe, N);

  at::Generator noise = fmtest::generator(8);
  at::Tensor x = x_start.clone();
  for (int64_t k = N; k >= 1; --k) {
    const double ab = bar[k].item<double>(), ab_prev = bar[k - 1].item<double>();
    const double beta = 1 - ab / ab_prev;
    x = (x - beta / std::sqrt(1 - ab) * epsilon_at(x, ab)) / std::sqrt(1 - beta);
    if (k > 1) x = x + std::sqrt((1 - ab_prev) / (1 - ab) * beta) * at::randn({n, 1}, noise, at::kDouble);
  }
  EXPECT_LT((r.x - x).abs().max().item<double>(), 1e-8);
  EXPECT_NEAR(x.mean().item<double>(), mu, 6 * c / std::sqrt(static_cast<double>(n)));
  EXPECT_NEAR(x.std().item<double>(), c, 6 * c / std::sqrt(2.0 * n));
}

// DDPM's reverse SDE on any affine path, dX = [v + w·s]dt + √(2w)dW with w = σ²·d/dt log(α/σ)
// ((1 − t)/t on CondOT): from the path's t = 0 marginal to the Gaussian target's mean and standard
// deviation (6 standard errors plus 0.03 for Euler–Maruyama at 400 steps), on CondOT, VP and DDPM's chain.
TEST(SDE, ReverseSDEReachesTheGaussianTargetOnEveryPath) {
  at::Tensor mu = at::tensor({2.0, -1.0}, at::kDouble);
  const double c = 0.5;
  const int64_t n = 20000;
  for (const char* name : {"condot", "vp", "ddpm-linear"}) {
    SCOPED_TRACE(name);
    auto s = fm::make_scheduler(name);
    auto field = fmtest::gaussian_marginal_velocity(s, mu, c);
    auto g = fmtest::generator(5);
    auto v = (*s)(at::tensor({0.0}, at::kDouble));
    const double a0 = v.alpha[0].item<double>(), sd0 = std::sqrt(a0 * a0 * c * c + std::pow(v.sigma[0].item<double>(), 2));
    at::Tensor x0 = at::randn({n, 2}, g, at::kDouble) * sd0 + mu * a0;
    auto r = fm::solve("reverse-sde", field, x0, fm::SolverOptions().steps(400).scheduler(s).generator(fmtest::generator(3)));
    EXPECT_EQ(r.nfe, 400);
    EXPECT_LT((r.x.mean(0) - mu).abs().max().item<double>(), 6 * c / std::sqrt(static_cast<double>(n)) + 0.03);
    EXPECT_LT((r.x.std(0) - c).abs().max().item<double>(), 6 * c / std::sqrt(2.0 * n) + 0.03);
  }
  EXPECT_THROW(fm::solve("reverse-sde", fmtest::gaussian_marginal_velocity(fm::make_scheduler("condot"), mu, c),
                         at::zeros({2, 2}, at::kDouble), fm::SolverOptions().steps(4)),
               std::invalid_argument);  // no scheduler
}
