// The core's extension points: the solver registry and solver state on a manifold, coupling costs,
// conditioning through VelocityModel and VelocityField, the regression objective (fused and autograd),
// TorchCFM's RBF MMD.

#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "flowmatch/assignment.h"
#include "flowmatch/coupling.h"
#include "flowmatch/metrics.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/objective.h"
#include "flowmatch/solvers.h"
#include "flowmatch/velocity_field.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {

// The unit sphere S² in R³: the retraction x/|x| and the tangent projection v − (v·x)x.
class UnitSphere : public fm::Manifold {
 public:
  std::string name() const override { return "sphere"; }
  at::Tensor project(const at::Tensor& x) const override { return x / x.norm(2, 1, true); }
  at::Tensor project_tangent(const at::Tensor& x, const at::Tensor& v) const override {
    const at::Tensor n = x / x.norm(2, 1, true);  // solver stages lie off the sphere
    return v - (v * n).sum(1, true) * n;
  }
};

// Rotation about the z axis at angular speed ω: v(x) = ω (−y, x, 0).
fm::VelocityField rotation(double omega) {
  return [omega](const at::Tensor& x, const at::Tensor&) {
    return at::stack({-omega * x.select(1, 1), omega * x.select(1, 0), at::zeros_like(x.select(1, 2))}, 1);
  };
}

}  // namespace

TEST(SolverRegistry, NamesEveryBuiltInAndSolvesByName) {
  const auto names = fm::solver_names();
  for (const char* name : {"euler", "midpoint", "heun", "rk4", "dopri5", "sde"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
  const auto ode = fm::solver_names(false);
  EXPECT_EQ(std::find(ode.begin(), ode.end(), "sde"), ode.end());
  EXPECT_EQ(fm::solver_info("rk4").evaluations_per_step, 4);
  EXPECT_TRUE(fm::solver_info("dopri5").adaptive);
  EXPECT_TRUE(fm::solver_info("sde").stochastic);
  try {
    fm::solver_info("leapfrog");
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown solver 'leapfrog' (expected one of: euler"), std::string::npos);
  }
  // By name equals the direct call, NFE included.
  at::Tensor x0 = at::randn({8, 3}, fmtest::generator(0), at::kDouble);
  auto field = rotation(1.0);
  auto a = fm::solve("midpoint", field, x0, fm::SolverOptions().steps(7));
  auto b = fm::solve_ode(field, x0, fm::SolverOptions().method(fm::SolverMethod::Midpoint).steps(7));
  EXPECT_TRUE(a.x.equal(b.x));
  EXPECT_EQ(a.nfe, 14);
  // The SDE under the registry needs the scheduler, and says so.
  EXPECT_THROW(fm::solve("sde", field, x0, fm::SolverOptions().steps(3)), std::invalid_argument);
  // A new solver is one registration: Euler with half steps, NFE counted by the field.
  fm::register_solver({"test-half-euler", 1, false, false, "Euler on a grid of steps/2"},
                      [](const fm::VelocityField& f, const at::Tensor& x, const fm::SolverOptions& o) {
                        return fm::solve_ode(f, x, fm::SolverOptions(o).method(fm::SolverMethod::Euler).steps(std::max<int64_t>(1, o.steps() / 2)));
                      });
  const auto with_new = fm::solver_names();
  EXPECT_EQ(with_new.back(), "test-half-euler");
  fm::CountingVelocityField counted(field);
  EXPECT_EQ(fm::solve("test-half-euler", counted.field(), x0, fm::SolverOptions().steps(10)).nfe, 5);
  EXPECT_EQ(counted.calls(), 5);
}

TEST(SolverManifold, StatesStayOnTheSphereAndRotationMatchesItsClosedForm) {
  // 1000 Euler steps of a rotation: without the manifold the norm grows like (1 + h²ω²)^(n/2); with it
  // every state is on the sphere to rounding, and the angle matches ωT to first order in h.
  const double omega = 2.0;
  auto gen = fmtest::generator(3);
  at::Tensor x0 = at::randn({64, 3}, gen, at::kDouble);
  x0 = x0 / x0.norm(2, 1, true);
  auto sphere = std::make_shared<UnitSphere>();
  auto options = fm::SolverOptions().steps(1000).record_trajectory(true).manifold(sphere);
  auto on = fm::solve("euler", rotation(omega), x0, options);
  for (const auto& state : on.trajectory) {
    EXPECT_LT((state.norm(2, 1) - 1).abs().max().item<double>(), 1e-6);
  }
  auto off = fm::solve("euler", rotation(omega), x0, fm::SolverOptions().steps(1000));
  EXPECT_GT((off.x.norm(2, 1) - 1).abs().max().item<double>(), 1e-3);  // the projection is doing the work
  // Closed form: rotation by ωT = 2 rad about z. Euler with projection is first order: each step
  // shrinks z by 1/sqrt(1 + h²ω²ρ²), so after T/h steps z has drifted by about T·h·ω²·ρ²·|z|/2 < T·h·ω²
  // (4e-3 here), and halving h halves the error.
  const double angle = omega * 1.0;
  at::Tensor expected = at::stack({x0.select(1, 0) * std::cos(angle) - x0.select(1, 1) * std::sin(angle),
                                   x0.select(1, 0) * std::sin(angle) + x0.select(1, 1) * std::cos(angle), x0.select(1, 2)},
                                  1);
  const double error_1000 = (on.x - expected).abs().max().item<double>();
  EXPECT_LT(error_1000, 1.0 * 1e-3 * omega * omega);
  const double error_2000 = (fm::solve("euler", rotation(omega), x0, fm::SolverOptions().steps(2000).manifold(sphere)).x - expected)
                                .abs().max().item<double>();
  EXPECT_NEAR(error_1000 / error_2000, 2.0, 0.2);
  // Dopri5 with the projected state: on the sphere and within its tolerance of the closed form.
  auto dp = fm::solve("dopri5", rotation(omega), x0, fm::SolverOptions().atol(1e-8).rtol(1e-8).manifold(sphere));
  EXPECT_LT((dp.x.norm(2, 1) - 1).abs().max().item<double>(), 1e-12);
  EXPECT_LT((dp.x - expected).abs().max().item<double>(), 1e-6);
  // A field with a normal component: its tangent part alone moves the state (the normal part is removed).
  auto radial = [omega](const at::Tensor& x, const at::Tensor& t) { return rotation(omega)(x, t) + 5.0 * x; };
  auto with_radial = fm::solve("rk4", radial, x0, fm::SolverOptions().steps(50).manifold(sphere));
  auto without = fm::solve("rk4", rotation(omega), x0, fm::SolverOptions().steps(50).manifold(sphere));
  EXPECT_TRUE(fmtest::AllClose(with_radial.x, without.x, 0, 1e-12));
}

TEST(CouplingCost, ExactOTMinimisesTheGivenCost) {
  auto gen = fmtest::generator(5);
  at::Tensor x0 = at::randn({40, 3}, gen, at::kDouble), x1 = at::randn({40, 3}, gen, at::kDouble);
  fm::ExactOTCoupling coupling;
  // Cost: L1 distance (not the default squared Euclidean).
  coupling.set_cost([](const at::Tensor& a, const at::Tensor& b) { return at::cdist(a, b, 1.0); });
  auto pairs = coupling.pair(x0, x1);
  const double got = (pairs.x0 - pairs.x1).abs().sum().item<double>();
  const double best = fm::solve_assignment(at::cdist(x0, x1, 1.0)).total_cost;
  EXPECT_NEAR(got, best, 1e-9 * best);
  // The default cost's optimum is worse under the L1 cost (a different pairing), never better.
  auto euclidean = fm::ExactOTCoupling().pair(x0, x1);
  EXPECT_GE((euclidean.x0 - euclidean.x1).abs().sum().item<double>(), got - 1e-9);
  EXPECT_TRUE(coupling.cost_matrix(x0, x1).equal(at::cdist(x0, x1, 1.0)));
  // A cost of the wrong shape or with NaN is named.
  coupling.set_cost([](const at::Tensor& a, const at::Tensor&) { return at::zeros({a.size(0), 2}, at::kDouble); });
  EXPECT_THROW(coupling.pair(x0, x1), c10::Error);
  coupling.set_cost([](const at::Tensor& a, const at::Tensor& b) { return at::full({a.size(0), b.size(0)}, NAN, at::kDouble); });
  EXPECT_THROW(coupling.pair(x0, x1), c10::Error);
}

TEST(Conditioning, ModelsAndFieldsTakeOneConditioningStruct) {
  at::manual_seed(0);
  auto mlp = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(8).depth(1));
  at::Tensor x = at::randn({5, 2}), t = at::full({}, 0.3);
  EXPECT_TRUE(mlp->forward_with(x, t, {}).equal(mlp->forward(x, t)));
  EXPECT_TRUE(fm::as_velocity_field(mlp, {})(x, t).equal(mlp->forward(x, t)));
  fm::models::Conditioning context;
  context.context = at::zeros({5, 3, 4});
  EXPECT_THROW(mlp->forward_with(x, t, context), std::invalid_argument);  // the MLP takes no context
  fm::models::Conditioning labels;
  labels.labels = at::zeros({5}, at::kLong);
  EXPECT_THROW(fm::as_velocity_field(mlp, labels)(x, t), std::invalid_argument);  // nor labels
  // narrow/to keep every member's rows together.
  fm::models::Conditioning both;
  both.labels = at::arange(5);
  both.mask = at::ones({5, 2}, at::kBool);
  auto part = both.narrow(1, 3);
  EXPECT_TRUE(part.labels.equal(at::arange(1, 4)));
  EXPECT_EQ(part.mask.size(0), 3);
  EXPECT_FALSE(part.context.defined());
  EXPECT_EQ(mlp->sample_shape(), (std::vector<int64_t>{2}));
}

TEST(Objective, RegressionEqualsTheLossAndItsFusedGradientsEqualAutograd) {
  at::manual_seed(1);
  auto a = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(16).depth(2));
  a->to(at::kDouble);
  auto b = std::dynamic_pointer_cast<fm::models::MLPImpl>(a->clone_model());
  b->to(at::kDouble);
  auto gen = fmtest::generator(2);
  fm::TrainingBatch batch;
  batch.x_t = at::randn({32, 2}, gen, at::kDouble);
  batch.t = at::rand({32}, gen, at::kDouble);
  batch.target = at::randn({32, 2}, gen, at::kDouble);
  batch.weight = at::rand({32}, gen, at::kDouble);
  fm::RegressionObjective objective;
  const double fused = objective.loss_and_gradients(*a, batch, /*allow_fused=*/true).item<double>();
  const double autograd = objective.loss_and_gradients(*b, batch, /*allow_fused=*/false).item<double>();
  EXPECT_NEAR(fused, autograd, 1e-12);
  const double direct = (batch.weight.unsqueeze(1) * (b->forward(batch.x_t, batch.t) - batch.target).square()).mean().item<double>();
  EXPECT_NEAR(autograd, direct, 1e-12);
  const auto pa = a->parameters(), pb = b->parameters();
  for (size_t k = 0; k < pa.size(); ++k) EXPECT_TRUE(fmtest::AllClose(pa[k].grad(), pb[k].grad(), 1e-9, 1e-12)) << k;
  // The registry knows it by name.
  EXPECT_EQ(fm::make_objective("regression")->spec(), (nlohmann::json{{"type", "regression"}}));
  EXPECT_THROW(fm::make_objective("hinge"), std::invalid_argument);
}

TEST(Metrics, RbfMmdMatchesTheDoubleSum) {
  auto gen = fmtest::generator(7);
  at::Tensor a = at::randn({30, 2}, gen, at::kDouble), b = at::randn({20, 2}, gen, at::kDouble) + 0.5;
  const std::vector<double> sigmas = {0.1, 1, 10};
  auto k = [&](const at::Tensor& p, const at::Tensor& q) {
    double total = 0;
    for (int64_t i = 0; i < p.size(0); ++i)
      for (int64_t j = 0; j < q.size(0); ++j) {
        const double d2 = (p[i] - q[j]).square().sum().item<double>();
        for (double s : sigmas) total += std::exp(-d2 / (2 * s * s));
      }
    return total / static_cast<double>(p.size(0) * q.size(0));
  };
  EXPECT_NEAR(fm::metrics::rbf_mmd2(a, b, sigmas), k(a, a) + k(b, b) - 2 * k(a, b), 1e-12);
  EXPECT_NEAR(fm::metrics::rbf_mmd2(a, a), 0.0, 1e-12);
  EXPECT_GT(fm::metrics::rbf_mmd2(a, b), 0.0);
  EXPECT_THROW(fm::metrics::rbf_mmd2(a, at::randn({5, 3})), std::invalid_argument);
}
