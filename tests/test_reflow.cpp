// Rectified flow: the pairs are the model's own ODE solutions; a reflow round straightens the flow
// and improves one-step sampling; distillation trains at t = 0.
#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "flowmatch/coupling.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/metrics.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/reflow.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(Reflow, PairsAreExactlyTheSolversOutput) {
  auto g = fmtest::generator(1);
  at::manual_seed(2);
  auto net = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(16).depth(2));
  auto field = fm::as_velocity_field(net);
  at::Tensor x0 = at::randn({1000, 2}, g);
  const auto solver = fm::SolverOptions().method(fm::SolverMethod::RK4).steps(7);
  auto pairs = fm::generate_reflow_pairs(field, x0, solver, /*chunk=*/300);
  at::Tensor direct;
  {
    at::NoGradGuard no_grad;
    direct = fm::solve_ode(field, x0, solver).x;
  }
  EXPECT_TRUE(at::equal(pairs.x0, x0));
  EXPECT_TRUE(fmtest::AllClose(pairs.x1, direct, 0, 1e-6));  // chunking may change BLAS blocking, not the math
  EXPECT_EQ(pairs.nfe, 28);
  EXPECT_FALSE(pairs.x1.requires_grad());
}

TEST(Reflow, StoredPairsAreValidatedAndDistillationTrainsAtTimeZero) {
  at::Tensor a = at::randn({10, 2}), b = at::randn({10, 2});
  EXPECT_THROW(fm::stored_pair_sampler({a, b.slice(0, 0, 9)}), std::invalid_argument);
  at::Tensor bad = b.clone();
  bad[4][1] = NAN;
  try {
    fm::stored_pair_sampler({a, bad});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("x1 row 4"), std::string::npos) << e.what();
  }
  auto g = fmtest::generator(3);
  auto batch = fm::stored_pair_sampler({a, b})(64, g);
  // Rows stay paired: x1 − x0 of each drawn row is one of the stored differences.
  at::Tensor diffs = b - a;
  for (int64_t k = 0; k < 64; ++k) {
    EXPECT_LT(((diffs - (batch.x1[k] - batch.x0[k])).abs().sum(1)).min().item<double>(), 1e-6);
  }
  auto problem = fm::distillation_problem({a, b});
  EXPECT_TRUE(at::equal(fm::sample_times(5, problem.time_sampling, g), at::zeros({5})));
  EXPECT_EQ(problem.path->spec()["sigma"], 0.0);
}

// On 8gaussians → moons: a 1-rectified flow (I-CFM), then one reflow round on 20 000 of its own
// pairs, initialised from it. The paths straighten and one Euler step gets much closer to the data.
TEST(Reflow, ASecondRoundIsStraighterAndBetterInOneStep) {
  auto options = [](int64_t steps) {
    return fm::TrainerOptions().steps(steps).batch_size(256).lr(2e-3).lr_schedule(fm::LRSchedule::Cosine).ema_decay(0.99).seed(5);
  };
  at::manual_seed(7);
  auto base = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(64).depth(3));
  fm::FlowMatchingProblem first{fm::data::toy2d_sampler("8gaussians"), fm::data::toy2d_sampler("moons"),
                                std::make_shared<fm::CondOTPath>(fm::CondOTPathOptions().sigma(0.0)),
                                std::make_shared<fm::IndependentCoupling>(), {}};
  fm::Trainer round1(base, first, options(2500));
  round1.train();
  auto model1 = round1.sampling_model();

  auto g = fmtest::generator(11);
  auto source = fm::data::toy2d_sampler("8gaussians"), target = fm::data::toy2d_sampler("moons");
  auto pairs = fm::generate_reflow_pairs(fm::as_velocity_field(model1), source(20000, g),
                                         fm::SolverOptions().method(fm::SolverMethod::RK4).steps(25));
  fm::Trainer round2(model1->clone_model(), fm::reflow_problem(pairs), options(2000));
  round2.train();
  auto model2 = round2.sampling_model();

  c10::InferenceMode guard;
  at::Tensor x0 = source(1000, g), reference = target(1000, g);
  auto m1 = fm::metrics::trajectory_metrics(fm::as_velocity_field(model1), x0, reference);
  auto m2 = fm::metrics::trajectory_metrics(fm::as_velocity_field(model2), x0, reference);
  auto one_step = [&](const std::shared_ptr<fm::models::VelocityModel>& m) {
    return fm::metrics::wasserstein2(fm::solve_ode(fm::as_velocity_field(m), x0, fm::SolverOptions().steps(1)).x, reference);
  };
  const double w1 = one_step(model1), w2 = one_step(model2);
  std::cout << "straightness " << m1.straightness << " -> " << m2.straightness << ", one-step W2 " << w1 << " -> " << w2 << "\n";
  EXPECT_LT(m2.straightness, 0.5 * m1.straightness);
  EXPECT_LT(w2, 0.7 * w1);
}
