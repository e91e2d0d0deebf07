// Discrete flow matching (discrete_path.h): the mixture path, the generalized KL, the likelihood
// bound, the CTMC Euler sampler, the checkerboard's true posterior and the posterior network.
// References: closed forms (the one-token posterior), midpoint quadrature in t with exact sums over
// x_t, and the issue's figures (−ELBO for q = (1/2, 1/4, 1/8, 1/8), the checkerboard's loss 5.43).
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "flowmatch/data/discrete_checkerboard.h"
#include "flowmatch/discrete_path.h"
#include "flowmatch/models/discrete_mlp.h"
#include "flowmatch/solvers.h"

namespace fm = flowmatch;

namespace {

const std::vector<double> kQ = {0.5, 0.25, 0.125, 0.125};

std::shared_ptr<fm::MixtureDiscretePath> one_token_path(fm::DiscreteSource source, const std::string& kappa = "poly:2") {
  return std::make_shared<fm::MixtureDiscretePath>(fm::make_kappa_scheduler(kappa), source, 4);
}

// The true posterior of a single token with prior q: logits (B, 1, 4) of
// p(x₁ = y | x_t) ∝ q(y)·(κ δ(x_t, y) + (1 − κ) p₀(x_t)).
fm::PosteriorField exact_one_token_posterior(std::shared_ptr<fm::MixtureDiscretePath> path) {
  return [path](const at::Tensor& x_t, const at::Tensor& t) {
    at::Tensor q = at::tensor(kQ, at::kDouble);
    at::Tensor kappa = path->kappa_at(t).first.reshape({-1, 1});
    at::Tensor p0 = path->source_probabilities().index_select(0, x_t.reshape({-1}));
    at::Tensor delta = (x_t.reshape({-1, 1}) == at::arange(4, at::kLong).unsqueeze(0)).to(at::kDouble);
    at::Tensor w = q.unsqueeze(0) * (kappa * delta + (1 - kappa) * p0.unsqueeze(1));
    return (w / w.sum(1, true)).log().unsqueeze(1);
  };
}

// −ELBO of one token y by quadrature: midpoint rule in t, the exact sum over x_t.
double quadrature_negative_elbo(const fm::MixtureDiscretePath& path, const fm::PosteriorField& posterior, int64_t y, int64_t points) {
  const int64_t states = path.input_vocabulary();
  at::Tensor t = ((at::arange(points, at::kDouble) + 0.5) / points).repeat_interleave(states);
  at::Tensor x_t = at::arange(states, at::kLong).repeat({points}).reshape({-1, 1});
  at::Tensor x1 = at::full({points * states, 1}, y, at::kLong);
  at::Tensor kappa = path.kappa_at(t).first;
  at::Tensor p0 = path.source_probabilities().index_select(0, x_t.reshape({-1}));
  at::Tensor prob = kappa * (x_t.reshape({-1}) == y).to(at::kDouble) + (1 - kappa) * p0;  // p_t(x_t | x₁ = y)
  at::Tensor loss = fm::generalized_kl(posterior(x_t, t.to(at::kFloat)).to(at::kDouble), x1, x_t, t, path).reshape({-1});
  return (prob * at::where(prob > 0, loss, at::zeros_like(loss))).sum().item<double>() / points;
}

}  // namespace

TEST(Discrete, MixturePathKeepsDataTokensWithProbabilityKappa) {
  auto path = one_token_path(fm::DiscreteSource::Mask);
  EXPECT_EQ(path->input_vocabulary(), 5);
  EXPECT_EQ(path->mask_token(), 4);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1);
  const int64_t n = 100000;
  at::Tensor x1 = at::randint(4, {n, 3}, g, at::kLong);
  at::Tensor x0 = path->sample_source(n, 3, g);
  EXPECT_TRUE((x0 == 4).all().item<bool>());
  at::Tensor t = at::full({n}, 0.6f);
  auto s = path->sample(x0, x1, t, g);
  const double kept = (s.x_t == x1).to(at::kDouble).mean().item<double>();
  // κ = 0.36; the mean of 300 000 Bernoulli draws is within 5 standard errors.
  EXPECT_NEAR(kept, 0.36, 5 * std::sqrt(0.36 * 0.64 / (3.0 * n)));
  EXPECT_TRUE(((s.x_t == x1) | (s.x_t == 4)).all().item<bool>());
  EXPECT_TRUE((path->sample(x0, x1, at::ones({n}), g).x_t == x1).all().item<bool>());
  EXPECT_TRUE((path->sample(x0, x1, at::zeros({n}), g).x_t == x0).all().item<bool>());
  // κ, κ̇ and κ⁻¹ of poly:2 and linear.
  at::Tensor times = at::tensor({0.0, 0.1, 0.5, 0.9, 1.0}, at::kDouble);
  auto [kappa, d_kappa] = path->kappa_at(times);
  EXPECT_TRUE(at::allclose(kappa, times.square(), 0, 1e-15));
  EXPECT_TRUE(at::allclose(d_kappa, 2 * times, 0, 1e-15));
  EXPECT_TRUE(at::allclose(path->kappa_inverse(kappa), times, 0, 1e-12));
  auto linear = one_token_path(fm::DiscreteSource::Uniform, "linear");
  EXPECT_TRUE(at::allclose(linear->kappa_at(times).first, times, 0, 1e-15));
  // The spec rebuilds the path.
  auto again = std::dynamic_pointer_cast<fm::MixtureDiscretePath>(fm::make_path(path->spec()));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->spec(), path->spec());
  EXPECT_THROW(fm::make_kappa_scheduler("poly:x"), std::invalid_argument);
  EXPECT_THROW(fm::make_kappa_scheduler("poly:0"), std::invalid_argument);
  EXPECT_THROW(fm::make_kappa_scheduler("poly:0.5"), std::invalid_argument);  // κ̇(0) would be infinite
  EXPECT_THROW(fm::make_kappa_scheduler("cubic"), std::invalid_argument);
  EXPECT_THROW(fm::MixtureDiscretePath(fm::make_scheduler("vp"), fm::DiscreteSource::Uniform, 4), std::invalid_argument);
}

TEST(Discrete, NegativeElboOfOneTokenMatchesTheQuadratureReferences) {
  // Mask source: −ELBO = −log q exactly (the bound is tight); uniform source: the issue's figures.
  const std::vector<double> uniform_reference = {0.9304, 1.7684, 2.6660, 2.6660};
  for (auto source : {fm::DiscreteSource::Mask, fm::DiscreteSource::Uniform}) {
    auto path = one_token_path(source);
    auto posterior = exact_one_token_posterior(path);
    for (int64_t y = 0; y < 4; ++y) {
      const double quad = quadrature_negative_elbo(*path, posterior, y, 20000);
      const double expected = source == fm::DiscreteSource::Mask ? -std::log(kQ[y]) : uniform_reference[y];
      EXPECT_NEAR(quad, expected, source == fm::DiscreteSource::Mask ? 1e-6 : 1e-4) << fm::to_string(source) << " y = " << y;
      EXPECT_GE(quad, -std::log(kQ[y]) - 1e-9);  // a bound
    }
    // The library's stratified Monte Carlo estimate agrees within 5 of its standard errors.
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
    const int64_t reps = 4000;
    at::Tensor x1 = at::arange(4, at::kLong).repeat({reps}).reshape({-1, 1});
    at::Tensor elbo =
        fm::discrete_negative_elbo(posterior, x1, *path, fm::DiscreteELBOOptions().time_points(16).epsilon(0), g).reshape({reps, 4});
    for (int64_t y = 0; y < 4; ++y) {
      at::Tensor col = elbo.select(1, y);
      const double se = col.std().item<double>() / std::sqrt(double(reps));
      EXPECT_NEAR(col.mean().item<double>(), quadrature_negative_elbo(*path, posterior, y, 20000), 5 * se + 1e-9)
          << fm::to_string(source) << " y = " << y;
    }
  }
}

TEST(Discrete, GeneralizedKLIsNonNegativeAndMinimisedByTheTruePosterior) {
  auto path = one_token_path(fm::DiscreteSource::Uniform);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
  // Pointwise ℓ >= 0 for any logits, tokens and times.
  at::Tensor logits = at::randn({2000, 1, 4}, g, at::kDouble) * 3;
  at::Tensor x1 = at::randint(4, {2000, 1}, g, at::kLong), x_t = at::randint(4, {2000, 1}, g, at::kLong);
  at::Tensor t = at::rand({2000}, g, at::kDouble) * 0.999;
  EXPECT_GE(fm::generalized_kl(logits, x1, x_t, t, *path).min().item<double>(), 0.0);
  // The expected loss over x₁ ~ p(x₁ | x_t) as a function of the logits at one (x_t, t): its gradient
  // vanishes at the true posterior (central differences, K = 4) and every perturbation raises it.
  auto posterior = exact_one_token_posterior(path);
  for (int64_t xt : {0, 2}) {
    for (double time : {0.3, 0.8}) {
      at::Tensor state = at::full({1, 1}, xt, at::kLong);
      at::Tensor tt = at::full({1}, time, at::kDouble);
      at::Tensor truth = posterior(state, tt.to(at::kFloat)).reshape({4});
      auto expected_loss = [&](const at::Tensor& z) {
        double sum = 0;
        for (int64_t y = 0; y < 4; ++y) {
          const double weight = truth[y].exp().item<double>();
          sum += weight * fm::generalized_kl(z.reshape({1, 1, 4}), at::full({1, 1}, y, at::kLong), state, tt, *path).item<double>();
        }
        return sum;
      };
      const double at_truth = expected_loss(truth);
      for (int64_t k = 0; k < 4; ++k) {
        const double h = 1e-5;
        at::Tensor up = truth.clone(), down = truth.clone();
        up[k] += h, down[k] -= h;
        EXPECT_NEAR((expected_loss(up) - expected_loss(down)) / (2 * h), 0.0, 1e-6) << "x_t " << xt << " t " << time << " k " << k;
      }
      for (int trial = 0; trial < 20; ++trial) {
        at::Tensor other = truth + at::randn({4}, g, at::kDouble) * 0.5;
        EXPECT_GT(expected_loss(other), at_truth) << "x_t " << xt << " t " << time;
      }
    }
  }
}

TEST(Discrete, CtmcEulerWithTheTruePosteriorSamplesTheData) {
  // Mask source: exact at any number of steps (each token is unmasked once, to a draw from q).
  const int64_t n = 200000;
  for (int64_t steps : {1, 2, 7, 50}) {
    auto path = one_token_path(fm::DiscreteSource::Mask);
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(11 + steps);
    auto r = fm::solve("ctmc-euler", exact_one_token_posterior(path), path->sample_source(n, 1, g),
                       fm::SolverOptions().steps(steps).path(path).generator(g));
    EXPECT_EQ(r.nfe, steps);
    for (int64_t y = 0; y < 4; ++y) {
      const double share = (r.x == y).to(at::kDouble).mean().item<double>();
      EXPECT_NEAR(share, kQ[y], 5 * std::sqrt(kQ[y] * (1 - kQ[y]) / n)) << steps << " steps, token " << y;
    }
  }
  // Uniform source with the corrector: still q at 200 steps (the corrector keeps the marginals), within
  // the Euler error of 200 steps and 5 standard errors.
  auto path = one_token_path(fm::DiscreteSource::Uniform);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
  auto r = fm::solve("ctmc-euler", exact_one_token_posterior(path), path->sample_source(n, 1, g),
                     fm::SolverOptions().steps(200).path(path).generator(g).corrector([](double) { return 1.0; }).categorical_float64(true));
  for (int64_t y = 0; y < 4; ++y) {
    const double share = (r.x == y).to(at::kDouble).mean().item<double>();
    EXPECT_NEAR(share, kQ[y], 5 * std::sqrt(kQ[y] * (1 - kQ[y]) / n) + 0.01) << "corrector, token " << y;
  }
  EXPECT_THROW(fm::solve("ctmc-euler", exact_one_token_posterior(path), at::zeros({2, 1}, at::kLong), fm::SolverOptions()),
               std::invalid_argument);
}

TEST(Discrete, CheckerboardTruePosteriorSamplesTheCellsAndHasTheIssuesLoss) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(2);
  at::Tensor cells = fm::data::sample_discrete_checkerboard(100000, g);
  EXPECT_TRUE(fm::data::on_discrete_checkerboard(cells).all().item<bool>());
  EXPECT_GE(cells.min().item<int64_t>(), 0);
  EXPECT_LT(cells.max().item<int64_t>(), 128);
  // 8192 cells, each about as frequent: every 32 x 32 block that is kept gets 1/8 of the draws.
  at::Tensor blocks = cells.div(32, "floor");
  at::Tensor index = blocks.select(1, 0) * 4 + blocks.select(1, 1);
  at::Tensor counts = at::bincount(index, {}, 16).to(at::kDouble) / 100000;
  for (int64_t b = 0; b < 16; ++b) {
    const bool kept = ((b / 4) + (b % 4)) % 2 == 0;
    EXPECT_NEAR(counts[b].item<double>(), kept ? 0.125 : 0.0, kept ? 5 * std::sqrt(0.125 * 0.875 / 100000) : 0.0) << "block " << b;
  }
  auto path = std::make_shared<fm::MixtureDiscretePath>(fm::make_kappa_scheduler("poly:2"), fm::DiscreteSource::Uniform, 128);
  fm::PosteriorField exact = [path](const at::Tensor& x_t, const at::Tensor& t) {
    return fm::data::discrete_checkerboard_posterior_logits(x_t, t, *path);
  };
  // CTMC Euler is first order: the share off the checkerboard falls about 4x from 64 to 256 steps
  // (measured 3.0 % and 0.8 %); at 256 steps at least 99 % of the cells are kept ones.
  auto off = [&](int64_t steps) {
    auto r = fm::solve("ctmc-euler", exact, path->sample_source(20000, 2, g), fm::SolverOptions().steps(steps).path(path).generator(g));
    return 1 - fm::data::on_discrete_checkerboard(r.x).to(at::kDouble).mean().item<double>();
  };
  const double off64 = off(64), off256 = off(256);
  EXPECT_LE(off256, 0.01);
  EXPECT_GT(off64 / std::max(off256, 1e-9), 2.5) << off64 << " then " << off256;
  // The mean generalized KL of the true posterior, t in [0, 1 − 10⁻³): the issue's 5.43 per token.
  const int64_t m = 200000;
  at::Tensor x1 = fm::data::sample_discrete_checkerboard(m, g);
  at::Tensor t = at::rand({m}, g, at::kDouble) * 0.999;
  at::Tensor x_t = path->sample(path->sample_source(m, 2, g), x1, t.to(at::kFloat), g).x_t;
  at::Tensor loss = fm::generalized_kl(exact(x_t, t.to(at::kFloat)), x1, x_t, t, *path);
  const double se = loss.std().item<double>() / std::sqrt(double(loss.numel()));
  EXPECT_NEAR(loss.mean().item<double>(), 5.43, 5 * se + 0.005) << "standard error " << se;
}

TEST(Discrete, PosteriorNetworkShapesAndDescription) {
  auto spec = fm::models::model_registration("discrete-mlp").describe({2}, 0, {{"vocabulary", 128}, {"input_vocabulary", 129}, {"width", 32}});
  auto net = fm::models::make_model(spec);
  at::Tensor x = at::randint(129, {5, 2}, at::kLong);
  at::Tensor logits = net->forward(x, at::rand({5}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{5, 2, 128}));
  EXPECT_EQ(net->spec(), spec);
  EXPECT_THROW(net->forward(at::full({1, 2}, 129, at::kLong), at::rand({1})), c10::Error);
  EXPECT_THROW(fm::models::model_registration("discrete-mlp").describe({2}, 0, {{"width", 32}}), std::invalid_argument);
  EXPECT_THROW(fm::models::model_registration("discrete-mlp").describe({2}, 0, {{"vocabulary", 8}, {"depth", 0}}), std::invalid_argument);
}

TEST(Discrete, CorrectorScheduleParsesAndRefusesBadValues) {
  EXPECT_DOUBLE_EQ(fm::corrector_schedule("2")(0.3), 2.0);
  EXPECT_DOUBLE_EQ(fm::corrector_schedule("2:1")(0.3), 0.6);
  EXPECT_NEAR(fm::corrector_schedule("10:0.25:0.25")(0.5), 10 * std::pow(0.5, 0.5), 1e-15);
  EXPECT_DOUBLE_EQ(fm::corrector_schedule("1:1:1")(1.0), 0.0);
  for (const char* bad : {"", "x", "-1", "1:", "1:2:3:4", "1:-2", "nan", "1e400"}) {
    try {
      fm::corrector_schedule(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("expected"), std::string::npos) << e.what();
    }
  }
}
