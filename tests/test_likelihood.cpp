// Likelihoods by the continuity equation against closed forms (Gaussian → Gaussian).
#include <cmath>

#include "flowmatch/likelihood.h"
#include "flowmatch/models/mlp.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
// The CondOT marginal field from N(0, I) to N(μ, diag(s²)): per dimension σ_t² = (1−t)² + t²s²,
// u_t(x) = μ + (σ_t σ_t' / σ_t²)(x − tμ) with σ_t σ_t' = t s² − (1 − t). It carries N(0, I) to N(μ, s²).
fm::VelocityField gaussian_field(const at::Tensor& mu, const at::Tensor& s) {
  return [mu, s](const at::Tensor& x, const at::Tensor& t) {
    const double tt = t.item<double>();
    at::Tensor var = (1 - tt) * (1 - tt) + tt * tt * s.square();
    at::Tensor rate = (tt * s.square() - (1 - tt)) / var;
    return mu + rate * (x - tt * mu);
  };
}
at::Tensor gaussian_log_density(const at::Tensor& x, const at::Tensor& mu, const at::Tensor& s) {
  return (-0.5 * ((x - mu) / s).square() - s.log() - 0.5 * std::log(2 * M_PI)).sum(1);
}
fm::LikelihoodOptions tight() {
  return fm::LikelihoodOptions().solver(fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-10).rtol(1e-10));
}
}  // namespace

TEST(Likelihood, ExactLogDensityOfAGaussianFlowIn2DAnd10D) {
  auto g = fmtest::generator(0);
  for (int64_t d : {2, 10}) {
    at::Tensor mu = at::randn({d}, g, at::kDouble), s = at::rand({d}, g, at::kDouble) + 0.5;
    at::Tensor x = mu + s * at::randn({64, d}, g, at::kDouble);
    auto r = fm::log_likelihood(gaussian_field(mu, s), x, tight());
    EXPECT_TRUE(fmtest::AllClose(r.log_prob, gaussian_log_density(x, mu, s), 0, 1e-4)) << "D=" << d;
    // The noise-side points are the inverse map (x − μ)/s.
    EXPECT_TRUE(fmtest::AllClose(r.x0, (x - mu) / s, 0, 1e-6));
  }
}

TEST(Likelihood, JointSamplingGivesTheSameLogDensityAsTheReverseSolve) {
  at::manual_seed(3);
  auto net = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(16).depth(2));
  net->to(at::kDouble);
  auto field = fm::as_velocity_field(net);
  at::Tensor x0 = at::randn({32, 2}, at::kDouble);
  auto opts = fm::LikelihoodOptions().solver(fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-8).rtol(1e-8));
  auto joint = fm::sample_with_log_likelihood(field, x0, opts);
  auto reverse = fm::log_likelihood(field, joint.x1, opts);
  EXPECT_TRUE(fmtest::AllClose(joint.log_prob, reverse.log_prob, 0, 1e-3));
  EXPECT_TRUE(fmtest::AllClose(reverse.x0, x0, 0, 1e-5));
}

TEST(Likelihood, HutchinsonIsUnbiased) {
  at::manual_seed(4);
  auto net = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(3).width(16).depth(2));
  net->to(at::kDouble);
  auto field = fm::as_velocity_field(net);
  at::Tensor x = at::randn({4, 3}, at::kDouble), t = at::scalar_tensor(0.3, at::kDouble);
  at::Tensor exact = fm::divergence_exact(field, x, t);
  auto g = fmtest::generator(5);
  const int64_t k = 4000;
  for (bool gaussian : {false, true}) {
    at::Tensor probes = gaussian ? at::randn({k, 4, 3}, g, at::kDouble)
                                 : at::randint(0, 2, {k, 4, 3}, g, at::kDouble).mul_(2).sub_(1);
    // Per-probe estimates: their mean is within 6 standard errors of the exact divergence.
    at::Tensor est = at::stack([&] {
      std::vector<at::Tensor> v;
      for (int64_t p = 0; p < k; ++p) v.push_back(fm::divergence_hutchinson(field, x, t, probes.slice(0, p, p + 1)));
      return v;
    }());
    at::Tensor mean = est.mean(0), se = est.std(0) / std::sqrt(static_cast<double>(k));
    EXPECT_TRUE(((mean - exact).abs() <= 6 * se + 1e-12).all().item<bool>()) << (gaussian ? "gaussian" : "rademacher");
    // The batched call equals the mean of single probes.
    EXPECT_TRUE(fmtest::AllClose(fm::divergence_hutchinson(field, x, t, probes), mean, 0, 1e-10));
  }
}

TEST(Likelihood, HutchinsonLikelihoodOfTheGaussianFlowIsExact) {
  // A diagonal Jacobian: Rademacher probes give the exact divergence (εᵢ² = 1).
  at::Tensor mu = at::tensor({1.0, -2.0}, at::kDouble), s = at::tensor({0.5, 2.0}, at::kDouble);
  at::Tensor x = at::randn({16, 2}, at::kDouble) * s + mu;
  auto r = fm::log_likelihood(gaussian_field(mu, s), x, tight().divergence(fm::DivergenceMethod::Hutchinson).probes(3),
                              fmtest::generator(1));
  EXPECT_TRUE(fmtest::AllClose(r.log_prob, gaussian_log_density(x, mu, s), 0, 1e-4));
}

TEST(Likelihood, DifferentiableWhenAskedAndBitsPerDimension) {
  at::manual_seed(6);
  auto net = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(8).depth(1));
  net->to(at::kDouble);
  auto r = fm::log_likelihood(fm::as_velocity_field(net), at::randn({8, 2}, at::kDouble),
                              fm::LikelihoodOptions().create_graph(true).solver(fm::SolverOptions().method(fm::SolverMethod::RK4).steps(4)));
  (-r.log_prob.mean()).backward();
  double total = 0;
  for (auto& p : net->parameters()) total += p.grad().abs().sum().item<double>();
  EXPECT_GT(total, 0);
  EXPECT_NEAR(fm::bits_per_dimension(784 * std::log(2.0), 784), 9.0, 1e-12);
  EXPECT_NEAR(fm::bits_per_dimension(0, 10, true), 7.0, 1e-12);
  EXPECT_THROW(fm::log_likelihood(fm::as_velocity_field(net), at::randn({2, 2}, at::kDouble), fm::LikelihoodOptions().probes(0)),
               std::invalid_argument);
}

// A source N(0, s₀² I) (VE paths start at σ_max): under v = c·x the points grow by e^c, so the data
// density is N(0, (s₀ e^c)² I) exactly.
TEST(Likelihood, ScaledSourceDensity) {
  auto g = fmtest::generator(9);
  const double s0 = 3.0, c = -0.7;
  fm::VelocityField field = [c](const at::Tensor& x, const at::Tensor&) { return x * c; };
  at::Tensor x = at::randn({50, 3}, g, at::kDouble) * (s0 * std::exp(c));
  auto r = fm::log_likelihood(field, x, tight().source_scale(s0));
  at::Tensor s = at::full({3}, s0 * std::exp(c), at::kDouble);
  EXPECT_TRUE(fmtest::AllClose(r.log_prob, gaussian_log_density(x, at::zeros({3}, at::kDouble), s), 0, 1e-8));
  EXPECT_TRUE(fmtest::AllClose(fm::normal_log_density(x, 1.0), fm::standard_normal_log_density(x), 0, 0));
  EXPECT_THROW(fm::normal_log_density(x, 0.0), std::invalid_argument);
}

// A network's own divergence (the MLP's forward mode) in the likelihood solve: the same log-density as
// autograd's on a fixed grid, and it is the one used (a doubled divergence changes the result).
TEST(Likelihood, AFieldWithItsOwnDivergenceGivesAutogradsResult) {
  at::manual_seed(2);
  auto mlp = std::make_shared<flowmatch::models::MLPImpl>(flowmatch::models::MLPOptions(2));
  mlp->to(at::kDouble);
  auto field = [&](const at::Tensor& x, const at::Tensor& t) { return mlp->forward(x, t); };
  auto g = fmtest::generator(6);
  at::Tensor x1 = at::randn({64, 2}, g, at::kDouble);
  auto options = fm::LikelihoodOptions().solver(fm::SolverOptions().method(fm::SolverMethod::RK4).steps(20));
  torch::NoGradGuard no_grad;
  const auto autograd = fm::log_likelihood(field, x1, options);
  const auto own = fm::log_likelihood(field, x1, fm::LikelihoodOptions(options).field_with_divergence(
                                                    [&](const at::Tensor& x, const at::Tensor& t) { return mlp->forward_with_divergence(x, t); }));
  EXPECT_EQ(own.nfe, autograd.nfe);
  EXPECT_TRUE(fmtest::AllClose(own.log_prob, autograd.log_prob, 0, 1e-10));
  const auto doubled = fm::log_likelihood(field, x1, fm::LikelihoodOptions(options).field_with_divergence([&](const at::Tensor& x, const at::Tensor& t) {
    auto [v, div] = mlp->forward_with_divergence(x, t);
    return std::make_pair(v, 2 * div);
  }));
  EXPECT_GT((doubled.log_prob - autograd.log_prob).abs().max().item<double>(), 1e-3);
}
