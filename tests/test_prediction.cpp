// Prediction targets: exact round trips between velocity, data, noise and score; agreement with the
// closed-form posterior of a Gaussian target; regression targets; and the flow-matching gradient
// theorem (the FM loss with the true marginal velocity and the CFM loss have equal expected gradients).
#include <cmath>

#include <torch/autograd.h>

#include "flowmatch/models/mlp.h"
#include "flowmatch/paths.h"
#include "flowmatch/prediction.h"
#include "test_util.h"

namespace fm = flowmatch;
using fm::PredictionTarget;

namespace {

const std::vector<PredictionTarget> kTargets = {PredictionTarget::Velocity, PredictionTarget::Data,
                                                PredictionTarget::Noise, PredictionTarget::Score};

}  // namespace

TEST(Prediction, ConversionsRoundTripForEveryPathAndTime) {
  auto g = fmtest::generator(0);
  const int64_t n = 64;
  at::Tensor x = at::randn({n, 3}, g, at::kDouble);
  at::Tensor value = at::randn({n, 3}, g, at::kDouble);
  at::Tensor t = at::rand({n}, g, at::kDouble) * 0.98 + 0.01;  // α, σ > 0 inside
  for (const auto& name : fm::scheduler_names()) {
    auto s = fm::make_scheduler(name);
    for (auto from : kTargets) {
      for (auto to : kTargets) {
        SCOPED_TRACE(name + ": " + fm::to_string(from) + " -> " + fm::to_string(to));
        at::Tensor there = fm::convert_prediction(value, from, to, x, t, *s);
        at::Tensor back = fm::convert_prediction(there, to, from, x, t, *s);
        EXPECT_TRUE(fmtest::AllClose(back, value, 1e-6, 1e-6));
      }
    }
  }
}

TEST(Prediction, ConversionsOfTheGaussianVelocityGiveTheClosedFormPosterior) {
  // Source N(0, I), target N(μ, c²I): with v = α²c² + σ², E[x₁|x] = μ + αc²/v·(x − αμ),
  // E[x₀|x] = σ/v·(x − αμ), score = −(x − αμ)/v, u = α̇E[x₁|x] + σ̇E[x₀|x].
  at::Tensor mu = at::tensor({1.0, -2.0}, at::kDouble);
  const double c = 0.5;
  at::Tensor x = at::randn({32, 2}, fmtest::generator(4), at::kDouble) * 1.5;
  for (const auto& name : fm::scheduler_names()) {
    SCOPED_TRACE(name);
    auto s = fm::make_scheduler(name);
    for (double tv : {0.1, 0.5, 0.9}) {
      at::Tensor t = at::full({}, tv, at::kDouble);
      auto v = (*s)(t);
      at::Tensor var = v.alpha * v.alpha * c * c + v.sigma * v.sigma;
      at::Tensor centred = x - v.alpha * mu;
      at::Tensor data = mu + v.alpha * c * c / var * centred;
      at::Tensor noise = v.sigma / var * centred;
      at::Tensor score = -centred / var;
      at::Tensor velocity = v.d_alpha * data + v.d_sigma * noise;
      EXPECT_TRUE(fmtest::AllClose(fm::convert_prediction(velocity, PredictionTarget::Velocity, PredictionTarget::Data, x, t, *s), data, 1e-9, 1e-9));
      EXPECT_TRUE(fmtest::AllClose(fm::convert_prediction(velocity, PredictionTarget::Velocity, PredictionTarget::Noise, x, t, *s), noise, 1e-9, 1e-9));
      EXPECT_TRUE(fmtest::AllClose(fm::convert_prediction(velocity, PredictionTarget::Velocity, PredictionTarget::Score, x, t, *s), score, 1e-9, 1e-9));
      EXPECT_TRUE(fmtest::AllClose(fm::convert_prediction(score, PredictionTarget::Score, PredictionTarget::Velocity, x, t, *s), velocity, 1e-9, 1e-9));
    }
  }
}

TEST(Prediction, RegressionTargetsAndVelocityField) {
  auto g = fmtest::generator(5);
  at::Tensor x0 = at::randn({128, 2}, g, at::kDouble), x1 = at::randn({128, 2}, g, at::kDouble);
  at::Tensor t = at::rand({128}, g, at::kDouble) * 0.9 + 0.05;
  fm::AffinePath path(fm::make_scheduler("vp"));
  auto sample = path.sample(x0, x1, t);
  EXPECT_TRUE(at::equal(fm::regression_target(path, sample, PredictionTarget::Data), x1));
  EXPECT_TRUE(at::equal(fm::regression_target(path, sample, PredictionTarget::Noise), x0));
  at::Tensor score = fm::regression_target(path, sample, PredictionTarget::Score);
  // Every target converts to the path's velocity at (x_t, t).
  for (auto target : kTargets) {
    at::Tensor v = fm::convert_prediction(fm::regression_target(path, sample, target), target,
                                          PredictionTarget::Velocity, sample.x_t, t, *path.scheduler());
    EXPECT_TRUE(fmtest::AllClose(v, sample.velocity, 1e-9, 1e-9)) << fm::to_string(target);
  }
  // A field from a data predictor that returns the true x₁ reproduces the conditional velocity.
  at::Tensor row_t = at::full({}, 0.4, at::kDouble);
  auto one = path.sample(x0, x1, at::full({128}, 0.4, at::kDouble));
  auto field = fm::velocity_from_prediction([&](const at::Tensor&, const at::Tensor&) { return x1; },
                                            PredictionTarget::Data, path.scheduler());
  EXPECT_TRUE(fmtest::AllClose(field(one.x_t, row_t), one.velocity, 1e-9, 1e-9));
  // Noise on the path leaves only velocity well defined.
  fm::CondOTPath noisy(fm::CondOTPathOptions().sigma(0.1));
  auto ns = noisy.sample(x0, x1, t, fmtest::generator(1));
  EXPECT_THROW(fm::regression_target(noisy, ns, PredictionTarget::Data), std::invalid_argument);
  EXPECT_NO_THROW(fm::regression_target(noisy, ns, PredictionTarget::Velocity));
  EXPECT_THROW(fm::prediction_target_from_string("epsilon"), std::invalid_argument);
  EXPECT_THROW(fm::velocity_from_prediction(field, PredictionTarget::Noise, nullptr), std::invalid_argument);
}

namespace {

// The marginal velocity of p_t = (1/K) Σ_k N(α p_k, σ²I) (targets p_k, source N(0, I)):
// u_t(x) = Σ_k w_k(x)·(α̇ p_k + σ̇ (x − α p_k)/σ), w = softmax_k(−‖x − α p_k‖²/(2σ²)).
at::Tensor marginal_velocity(const at::Tensor& x, const at::Tensor& t, const at::Tensor& points, const fm::Scheduler& s) {
  auto v = s(t.unsqueeze(1).unsqueeze(2));                        // (B, 1, 1)
  at::Tensor means = v.alpha * points.unsqueeze(0);               // (B, K, D)
  at::Tensor diff = x.unsqueeze(1) - means;                       // (B, K, D)
  at::Tensor w = at::softmax(-diff.pow(2).sum(2) / (2 * v.sigma.squeeze(2).pow(2)), 1);  // (B, K)
  at::Tensor conditional = v.d_alpha * points.unsqueeze(0) + v.d_sigma * diff / v.sigma;  // (B, K, D)
  return (w.unsqueeze(2) * conditional).sum(1);
}

// Per-batch gradients of mean(‖v − u_marginal‖² − ‖v − u_conditional‖²): zero in expectation when
// u_marginal is right. Returns the largest |z| and the mean z² over parameters.
std::pair<double, double> gradient_gap(const fm::Scheduler& s, const fm::Scheduler& marginal_scheduler, uint64_t seed) {
  torch::manual_seed(seed);
  fm::models::MLP net(fm::models::MLPOptions(2).width(16).depth(2));
  net->to(at::kDouble);
  auto params = net->parameters();
  at::Tensor points = at::tensor({-1.0, 0.5, 1.5, 1.0, 0.0, -1.5, 2.0, -0.5, -2.0, -1.0}, at::kDouble).view({5, 2});
  auto g = fmtest::generator(seed);
  const int64_t batches = 40, b = 2500;
  std::vector<at::Tensor> gaps;
  for (int64_t k = 0; k < batches; ++k) {
    at::Tensor x1 = points.index_select(0, at::randint(5, {b}, g, at::kLong));
    at::Tensor x0 = at::randn({b, 2}, g, at::kDouble);
    at::Tensor t = at::rand({b}, g, at::kDouble) * 0.9 + 0.05;
    auto v = s(t.unsqueeze(1));
    at::Tensor xt = v.alpha * x1 + v.sigma * x0;
    at::Tensor u_conditional = v.d_alpha * x1 + v.d_sigma * x0;
    at::Tensor u_marginal = marginal_velocity(xt, t, points, marginal_scheduler);
    at::Tensor pred = net->forward(xt, t);
    at::Tensor gap = ((pred - u_marginal).pow(2).sum(1) - (pred - u_conditional).pow(2).sum(1)).mean();
    auto grads = torch::autograd::grad({gap}, params);
    std::vector<at::Tensor> flat;
    for (auto& gr : grads) flat.push_back(gr.reshape(-1));
    gaps.push_back(at::cat(flat));
  }
  at::Tensor all = at::stack(gaps);  // (batches, P)
  at::Tensor z = all.mean(0) / (all.std(0) / std::sqrt(static_cast<double>(batches)));
  return {z.abs().max().item<double>(), z.pow(2).mean().item<double>()};
}

}  // namespace

TEST(Prediction, FlowMatchingAndConditionalFlowMatchingGradientsAgree) {
  for (const char* name : {"condot", "cosine", "vp"}) {
    SCOPED_TRACE(name);
    auto s = fm::make_scheduler(name);
    auto [max_z, mean_z2] = gradient_gap(*s, *s, 7);
    // ~370 parameters, each a t-statistic with 39 degrees of freedom: E z² = 39/37, and
    // P(|z| > 5.5) ≈ 3e-6 per parameter.
    EXPECT_LT(max_z, 5.5);
    EXPECT_LT(mean_z2, 1.5);
  }
  // The test has power: the marginal velocity of another path gives gradients that differ.
  auto condot = fm::make_scheduler("condot"), cosine = fm::make_scheduler("cosine");
  auto [max_z, mean_z2] = gradient_gap(*condot, *cosine, 7);
  EXPECT_GT(mean_z2, 10.0);
  EXPECT_GT(max_z, 10.0);
}
