// The MLP velocity network: shapes, time encodings, rebuild from description, gradients.
#include "flowmatch/likelihood.h"
#include "flowmatch/loss.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/selu.h"
#include "flowmatch/policy.h"
#include "test_util.h"

namespace fm = flowmatch;
using fm::models::MLP;
using fm::models::MLPOptions;

TEST(MLP, ShapesForEveryConfiguration) {
  for (auto act : {fm::models::Activation::SELU, fm::models::Activation::SiLU, fm::models::Activation::ReLU,
                   fm::models::Activation::GELU}) {
    for (auto enc : {fm::models::TimeEncoding::Plain, fm::models::TimeEncoding::Sinusoidal}) {
      MLP net(MLPOptions(3).width(16).depth(2).activation(act).time_encoding(enc).time_features(8));
      at::Tensor x = at::randn({7, 3});
      EXPECT_EQ(net->forward(x, at::rand({7})).sizes(), x.sizes());
      EXPECT_EQ(net->forward(x, at::scalar_tensor(0.5)).sizes(), x.sizes());
    }
  }
}

TEST(MLP, OneTimeForTheBatchEqualsThePerSampleTimes) {
  at::manual_seed(0);
  MLP net(MLPOptions(2).time_encoding(fm::models::TimeEncoding::Sinusoidal));
  at::Tensor x = at::randn({5, 2});
  EXPECT_TRUE(fmtest::AllClose(net->forward(x, at::scalar_tensor(0.3)), net->forward(x, at::full({5}, 0.3)), 0, 1e-6));
  EXPECT_FALSE(at::allclose(net->forward(x, at::scalar_tensor(0.3)), net->forward(x, at::scalar_tensor(0.7))));
}

TEST(MLP, TorchCFMSizeHasTheExpectedParameterCount) {
  MLP net(MLPOptions(2).width(64).depth(3));
  // (2+1)·64+64 + 2·(64·64+64) + 64·2+2
  EXPECT_EQ(fm::models::parameter_count(*net), 3 * 64 + 64 + 2 * (64 * 64 + 64) + 64 * 2 + 2);
}

TEST(MLP, RebuiltFromItsDescriptionComputesTheSame) {
  at::manual_seed(1);
  MLP net(MLPOptions(2).width(32).depth(2).activation(fm::models::Activation::GELU));
  auto copy = net->clone_model();
  EXPECT_EQ(copy->spec(), net->spec());
  at::Tensor x = at::randn({9, 2}), t = at::rand({9});
  EXPECT_TRUE(at::equal(copy->forward(x, t), net->forward(x, t)));
  EXPECT_THROW(fm::models::make_model({{"type", "transformer"}}), std::invalid_argument);
  EXPECT_THROW(fm::models::make_model({{"type", "mlp"}, {"options", {{"activation", "tanhh"}}}}), std::invalid_argument);
}

TEST(MLP, RejectsBadOptionsAndShapes) {
  EXPECT_THROW(MLP(MLPOptions(2).width(0)), c10::Error);
  EXPECT_THROW(MLP(MLPOptions(2).time_encoding(fm::models::TimeEncoding::Sinusoidal).time_features(3)), c10::Error);
  MLP net(MLPOptions(2));
  EXPECT_THROW(net->forward(at::randn({4, 3}), at::rand({4})), c10::Error);
  EXPECT_THROW(net->forward(at::randn({4, 2}), at::rand({5})), c10::Error);
}

TEST(MLP, InputGradientMatchesFiniteDifferences) {
  at::manual_seed(2);
  MLP net(MLPOptions(2).width(16).depth(2).time_encoding(fm::models::TimeEncoding::Sinusoidal));
  net->to(at::kDouble);
  at::Tensor x = at::randn({3, 2}, at::kDouble).requires_grad_();
  at::Tensor t = at::rand({3}, at::kDouble);
  net->forward(x, t).select(1, 0).sum().backward();
  const double h = 1e-6;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 2; ++j) {
      at::Tensor xp = x.detach().clone(), xm = x.detach().clone();
      xp[i][j] += h;
      xm[i][j] -= h;
      const double fd = (net->forward(xp, t).select(1, 0).sum() - net->forward(xm, t).select(1, 0).sum()).item<double>() / (2 * h);
      EXPECT_NEAR(x.grad()[i][j].item<double>(), fd, 1e-7);
    }
}

// The hand-written backward equals autograd on the same loss, for every activation and time
// encoding, weighted or not (float64: agreement to rounding, 1e-10 relative).
TEST(MLP, HandWrittenLossGradientsEqualAutograd) {
  auto g = fmtest::generator(7);
  for (auto activation : {fm::models::Activation::SELU, fm::models::Activation::SiLU, fm::models::Activation::ReLU,
                          fm::models::Activation::GELU}) {
    for (auto encoding : {fm::models::TimeEncoding::Plain, fm::models::TimeEncoding::Sinusoidal}) {
      for (bool weighted : {false, true}) {
        at::manual_seed(3);
        fm::models::MLPImpl mlp(fm::models::MLPOptions(3).width(16).depth(3).activation(activation).time_encoding(encoding));
        mlp.to(at::kDouble);
        at::Tensor x = at::randn({32, 3}, g, at::kDouble), t = at::rand({32}, g, at::kDouble);
        at::Tensor target = at::randn({32, 3}, g, at::kDouble);
        at::Tensor w = weighted ? at::rand({32}, g, at::kDouble) + 0.5 : at::Tensor();
        mlp.zero_grad();
        at::Tensor loss = fm::flow_matching_loss(mlp.forward(x, t), target, w);
        loss.backward();
        std::vector<at::Tensor> expected;
        for (auto& p : mlp.parameters()) expected.push_back(p.grad().clone());
        for (auto& p : mlp.parameters()) p.mutable_grad().fill_(123.0);  // must be replaced, not accumulated
        const double value = mlp.loss_and_gradients(x, t, target, w);
        EXPECT_NEAR(value, loss.item<double>(), 1e-12 * std::abs(loss.item<double>()));
        auto params = mlp.parameters();
        for (size_t k = 0; k < params.size(); ++k) {
          EXPECT_TRUE(fmtest::AllClose(params[k].grad(), expected[k], 1e-10, 1e-13))
              << fm::models::to_string(activation) << " " << fm::models::to_string(encoding) << " weighted " << weighted
              << " parameter " << k;
        }
      }
    }
  }
}

// Dropout (MLPOptions::dropout): the hand-written backward draws its masks as forward() does (the same
// draws from the default generator, layer by layer), so under the same seed it is the gradient of the
// same masked network: equal to autograd's to rounding, for every activation, weighted or not.
TEST(MLP, DropoutHandWrittenGradientsEqualAutogradUnderTheSameMasks) {
  auto g = fmtest::generator(8);
  for (auto activation : {fm::models::Activation::SELU, fm::models::Activation::SiLU, fm::models::Activation::ReLU,
                          fm::models::Activation::GELU}) {
    for (bool weighted : {false, true}) {
      at::manual_seed(4);
      fm::models::MLPImpl mlp(fm::models::MLPOptions(3).width(16).depth(3).activation(activation).dropout(0.3));
      mlp.to(at::kDouble);
      at::Tensor x = at::randn({32, 3}, g, at::kDouble), t = at::rand({32}, g, at::kDouble);
      at::Tensor target = at::randn({32, 3}, g, at::kDouble);
      at::Tensor w = weighted ? at::rand({32}, g, at::kDouble) + 0.5 : at::Tensor();
      mlp.zero_grad();
      at::manual_seed(11);
      at::Tensor loss = fm::flow_matching_loss(mlp.forward(x, t), target, w);
      loss.backward();
      std::vector<at::Tensor> expected;
      for (auto& p : mlp.parameters()) expected.push_back(p.grad().clone());
      at::manual_seed(11);
      const double value = mlp.loss_and_gradients(x, t, target, w);
      EXPECT_NEAR(value, loss.item<double>(), 1e-12 * std::abs(loss.item<double>()));
      auto params = mlp.parameters();
      for (size_t k = 0; k < params.size(); ++k) {
        EXPECT_TRUE(fmtest::AllClose(params[k].grad(), expected[k], 1e-10, 1e-13))
            << fm::models::to_string(activation) << " weighted " << weighted << " parameter " << k;
      }
      // Another draw of the masks is another network: another loss.
      at::manual_seed(12);
      EXPECT_GT(std::abs(mlp.loss_and_gradients(x, t, target, w) - value), 1e-6 * value);
      // Without dropout in eval mode the loss is the whole network's.
      mlp.eval();
      mlp.zero_grad();
      const double whole = fm::flow_matching_loss(mlp.forward(x, t), target, w).item<double>();
      EXPECT_NEAR(mlp.loss_and_gradients(x, t, target, w), whole, 1e-12 * whole);
    }
  }
}

// In eval mode a network with dropout computes what the same weights without it compute; in training
// mode, with one hidden layer, the output is linear in the mask, so its mean over draws is the eval
// output (inverted dropout is unbiased). Each output's variance over draws is Σ_k W_jk² a_k² p/(1 − p),
// which sets the tolerance: 6 standard errors of the mean of N draws.
TEST(MLP, DropoutActsInTrainingOnlyAndIsUnbiased) {
  at::manual_seed(5);
  const double p = 0.25;
  MLP net(MLPOptions(2).width(32).depth(1).activation(fm::models::Activation::SiLU).dropout(p));
  net->to(at::kDouble);
  auto plain = fm::models::make_model({{"type", "mlp"}, {"options", {{"dim", 2}, {"width", 32}, {"depth", 1}, {"activation", "silu"}}}});
  plain->to(at::kDouble);
  fm::models::copy_parameters(*net, *plain);
  at::Tensor x = at::randn({5, 2}, at::kDouble), t = at::rand({5}, at::kDouble);
  at::NoGradGuard no_grad;
  net->eval();
  const at::Tensor whole = net->forward(x, t);
  EXPECT_TRUE(at::equal(whole, plain->forward(x, t)));
  net->train();
  EXPECT_FALSE(at::allclose(net->forward(x, t), whole));
  const int64_t draws = 4000;
  at::Tensor mean = at::zeros_like(whole);
  for (int64_t k = 0; k < draws; ++k) mean += net->forward(x, t);
  mean /= static_cast<double>(draws);
  // a_k: the hidden activations, from the whole network's first layer.
  const at::Tensor w1 = net->named_parameters()["layers.0.weight"], b1 = net->named_parameters()["layers.0.bias"];
  const at::Tensor w2 = net->named_parameters()["layers.1.weight"];
  const at::Tensor a = at::silu(at::addmm(b1, at::cat({x, t.unsqueeze(1)}, 1), w1.t()));     // (5, 32)
  const at::Tensor variance = at::mm(a.square(), w2.square().t()) * (p / (1 - p));           // (5, 2)
  EXPECT_TRUE(at::allclose(a.mm(w2.t()) + net->named_parameters()["layers.1.bias"], whole, 1e-12, 1e-12));
  const at::Tensor bound = (variance / static_cast<double>(draws)).sqrt() * 6;
  EXPECT_TRUE(((mean - whole).abs() <= bound).all().item<bool>()) << (mean - whole).abs() / bound;
}

// The mask drops each unit with probability p (rounded to 2^-16) and scales the rest by 1/(1 − p): over
// n units the dropped count is binomial, within 6 of its standard deviations sqrt(n p (1 − p)). Odd
// sizes, float64 and p = 0.99 included.
TEST(MLP, DropoutMaskDropsTheFractionPAndScalesTheRest) {
  at::manual_seed(9);
  for (double p : {0.1, 0.5, 0.99}) {
    for (auto dtype : {at::kFloat, at::kDouble}) {
      MLP net(MLPOptions(2).dropout(p));
      const at::Tensor mask = net->dropout_mask(at::empty({999, 301}, dtype));
      ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{999, 301}));
      ASSERT_EQ(mask.scalar_type(), dtype);
      const double n = static_cast<double>(mask.numel());
      const double rounded = std::round(p * 65536) / 65536;
      const double dropped = mask.eq(0).sum().item<double>();
      EXPECT_NEAR(dropped, n * rounded, 6 * std::sqrt(n * rounded * (1 - rounded))) << "p " << p;
      const at::Tensor kept = mask.masked_select(mask.ne(0));
      EXPECT_TRUE(at::allclose(kept, at::full_like(kept, 1 / (1 - rounded)), 1e-6, 0)) << "p " << p;
      // The units are independent: neighbours (the two halves of one 32-bit draw among them) are both
      // dropped with probability p². The m overlapping pairs' count has variance m p²(1 − p²) +
      // 2(m − 1)(p³ − p⁴) (adjacent pairs share a unit); within 6 of its standard deviations.
      const at::Tensor flat = mask.reshape({-1}).eq(0);
      const at::Tensor pairs = flat.narrow(0, 0, flat.numel() - 1).logical_and(flat.narrow(0, 1, flat.numel() - 1));
      const double both = pairs.sum().item<double>(), m = static_cast<double>(pairs.numel()), r = rounded;
      const double variance = m * r * r * (1 - r * r) + 2 * (m - 1) * (r * r * r - r * r * r * r);
      EXPECT_NEAR(both, m * r * r, 6 * std::sqrt(variance)) << "p " << p;
    }
  }
}

TEST(MLP, DropoutIsPartOfTheDescriptionAndItsRangeIsChecked) {
  MLP net(MLPOptions(2).width(8).dropout(0.1));
  EXPECT_DOUBLE_EQ(net->spec()["options"]["dropout"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(fm::models::make_model(net->spec())->spec()["options"]["dropout"].get<double>(), 0.1);
  // Without dropout the description is as before (older runs' descriptions compare equal).
  EXPECT_FALSE(MLP(MLPOptions(2))->spec()["options"].contains("dropout"));
  EXPECT_DOUBLE_EQ(fm::models::model_registration("mlp").describe({2}, 0, {{"dropout", 0.2}})["options"]["dropout"].get<double>(), 0.2);
  for (double bad : {-0.1, 0.995, 1.0, 2.0}) {
    try {
      fm::models::model_registration("mlp").describe({2}, 0, {{"dropout", bad}});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("dropout"), std::string::npos) << e.what();
    }
    EXPECT_THROW(MLP(MLPOptions(2).dropout(bad)), c10::Error);
  }
  // The divergence is the whole network's: refused in training mode with dropout, given in eval mode.
  MLP square(MLPOptions(2).width(8).dropout(0.5));
  EXPECT_THROW(square->forward_with_divergence(at::randn({3, 2}), at::rand({3})), c10::Error);
  square->eval();
  EXPECT_EQ(square->forward_with_divergence(at::randn({3, 2}), at::rand({3})).second.sizes(), (std::vector<int64_t>{3}));
}

TEST(SELU, InPlaceKernelAgreesWithATen) {
  // The kernel's exp is within a few float ulps (2^-24 relative each) of ATen's, and the negative
  // branch multiplies (e^x − 1) by λα ≈ 1.76: at most about 1.76 · 3 · 2^-24 ≈ 3.2e-7 apart there;
  // the positive branch is the same single product λx.
  auto g = fmtest::generator(5);
  at::Tensor x = at::cat({at::linspace(-100, 100, 20001), at::randn({4099}, g) * 3,
                          at::tensor({0.0f, -0.0f, 1e-30f, -1e-30f, -87.3f, -88.0f, -1e-8f, 1e-8f, 1e30f, -1e30f})});
  x = x.to(at::kFloat).contiguous();
  at::Tensor expected = at::selu(x);
  at::Tensor y = x.clone();
  fm::models::selu_in_place(y);
  at::Tensor positive = x > 0;
  EXPECT_TRUE(at::equal(y.masked_select(positive), expected.masked_select(positive)));
  EXPECT_LE((y - expected).abs().max().item<double>(), 4e-7);
  // Not NaN-hiding: NaN in, NaN out.
  at::Tensor with_nan = at::tensor({-1.0f, NAN, 2.0f, -3.0f, 0.5f, -0.5f, 1.0f, NAN, -2.0f});
  fm::models::selu_in_place(with_nan);
  EXPECT_TRUE(std::isnan(with_nan[1].item<float>()) && std::isnan(with_nan[7].item<float>()));
  EXPECT_FALSE(std::isnan(with_nan[0].item<float>()));
  // Other dtypes and strided tensors take ATen's path: bit-identical.
  at::Tensor d = at::randn({37}, g, at::kDouble);
  at::Tensor d_copy = d.clone();
  fm::models::selu_in_place(d);
  EXPECT_TRUE(at::equal(d, at::selu(d_copy)));
  at::Tensor strided = at::randn({8, 8}, g).t();
  at::Tensor strided_expected = at::selu(strided);
  fm::models::selu_in_place(strided);
  EXPECT_TRUE(at::equal(strided, strided_expected));
}

TEST(MLP, ForwardWithoutGradientsEqualsTheAutogradForward) {
  // The no-gradient path works in row blocks, folds one time into the first bias and applies the
  // activation in place: the same function up to float rounding (and the SELU kernel's few ulps).
  at::manual_seed(6);
  auto g = fmtest::generator(6);
  for (auto act : {fm::models::Activation::SELU, fm::models::Activation::SiLU, fm::models::Activation::GELU}) {
    for (auto enc : {fm::models::TimeEncoding::Plain, fm::models::TimeEncoding::Sinusoidal}) {
      MLP net(MLPOptions(3).width(48).depth(3).activation(act).time_encoding(enc).time_features(8));
      for (int64_t batch : {1, 7, 683, 2500}) {
        at::Tensor x = at::randn({batch, 3}, g);
        for (const at::Tensor& t : {at::scalar_tensor(0.37), at::rand({batch}, g)}) {
          const at::Tensor reference = net->forward(x, t);  // autograd on
          ASSERT_TRUE(reference.requires_grad());
          at::Tensor fast;
          {
            at::NoGradGuard no_grad;
            fast = net->forward(x, t);
          }
          EXPECT_FALSE(fast.requires_grad());
          EXPECT_TRUE(fmtest::AllClose(fast, reference.detach(), 1e-5, 1e-5)) << "batch " << batch;
        }
      }
    }
  }
}

TEST(SELU, LinearLayerAndBiasForms) {
  // out = SELU(x wᵀ + b): the fused pass (k ≤ 8, cols a multiple of 8) and the fallbacks (k = 9,
  // cols = 12) against ATen; products are summed in another order, so agreement is to float
  // rounding of sums of k + 1 terms of size ~3 (1e-5), plus the exp kernel's ulps.
  auto g = fmtest::generator(8);
  at::NoGradGuard no_grad;
  for (int64_t k : {1, 2, 3, 9}) {
    for (int64_t cols : {8, 64, 12}) {
      at::Tensor x = at::randn({301, k}, g), w = at::randn({cols, k}, g), b = at::randn({cols}, g);
      at::Tensor expected = at::selu(at::addmm(b, x, w.t()));
      at::Tensor out = at::empty({301, cols});
      fm::models::selu_of_linear(out, x, w, b);
      EXPECT_TRUE(fmtest::AllClose(out, expected, 1e-5, 1e-5)) << "k " << k << " cols " << cols;
      at::Tensor z = at::mm(x, w.t());
      fm::models::selu_in_place(z, b);
      EXPECT_TRUE(fmtest::AllClose(z, expected, 1e-5, 1e-5)) << "k " << k << " cols " << cols;
    }
  }
  // The other order: out = SELU(x + b) vᵀ + c for a narrow output (k ≤ 8: fused; k = 9 or cols = 12: fallback).
  for (int64_t k : {1, 2, 8, 9}) {
    for (int64_t cols : {8, 64, 12}) {
      at::Tensor x = at::randn({257, cols}, g), b = at::randn({cols}, g), v = at::randn({k, cols}, g), c = at::randn({k}, g);
      const at::Tensor x_before = x.clone();
      at::Tensor expected = at::addmm(c, at::selu(x + b), v.t());
      at::Tensor out = at::empty({257, k});
      fm::models::linear_of_selu(out, x, b, v, c);
      // Sums of cols products of size ~1: float rounding ~cols · 2^-24 relative to their magnitude.
      EXPECT_TRUE(fmtest::AllClose(out, expected, 1e-5, 1e-5)) << "k " << k << " cols " << cols;
      EXPECT_TRUE(at::equal(x, x_before));
    }
  }
  at::Tensor out = at::empty({4, 8});
  EXPECT_THROW(fm::models::selu_of_linear(out, at::randn({4, 2}), at::randn({8, 3}), at::randn({8})), c10::Error);
  at::Tensor narrow = at::empty({4, 2});
  EXPECT_THROW(fm::models::linear_of_selu(narrow, at::randn({4, 8}), at::randn({8}), at::randn({3, 8}), at::randn({3})), c10::Error);
  at::Tensor z = at::randn({4, 8});
  EXPECT_THROW(fm::models::selu_in_place(z, at::randn({7})), c10::Error);
}

// The forward-mode divergence against autograd's (float64), for every activation and time encoding,
// one time for the batch and one per sample; the velocity is the forward's.
TEST(MLP, ForwardModeDivergenceEqualsAutograd) {
  auto g = fmtest::generator(9);
  for (auto activation : {fm::models::Activation::SELU, fm::models::Activation::SiLU, fm::models::Activation::ReLU,
                          fm::models::Activation::GELU}) {
    for (auto encoding : {fm::models::TimeEncoding::Plain, fm::models::TimeEncoding::Sinusoidal}) {
      at::manual_seed(4);
      auto mlp = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(3).width(16).depth(3).activation(activation).time_encoding(encoding));
      mlp->to(at::kDouble);
      ASSERT_TRUE(mlp->supports_divergence());
      for (const at::Tensor& t : {at::full({}, 0.3, at::kDouble), at::rand({40}, g, at::kDouble)}) {
        at::Tensor x = at::randn({40, 3}, g, at::kDouble);
        auto [v, div] = mlp->forward_with_divergence(x, t);
        auto field = [&](const at::Tensor& y, const at::Tensor& s) { return mlp->forward(y, s); };
        EXPECT_TRUE(fmtest::AllClose(v, mlp->forward(x, t), 1e-12, 1e-12));
        EXPECT_TRUE(fmtest::AllClose(div, fm::divergence_exact(field, x, t), 1e-10, 1e-12))
            << fm::models::to_string(activation) << " " << fm::models::to_string(encoding);
      }
    }
  }
}

// The batch-1 policy path (policy.h) against LibTorch's operations on the same weights: one MLP forward
// for each activation (float32; the exp approximation is within 2e-7 relative), and 10 Euler steps of
// an observation-conditioned policy. Shapes that do not chain are named.
TEST(SmallBatchMLP, MatchesLibTorchAndTheEulerPolicyMatchesItsLoop) {
  at::manual_seed(5);
  const int64_t action = 12, observation = 5, width = 40;  // 40: a block of 32 outputs and a remainder
  std::vector<std::pair<at::Tensor, at::Tensor>> layers;
  for (auto [in, out] : {std::pair<int64_t, int64_t>{action + observation + 1, width}, {width, width}, {width, action}}) {
    layers.emplace_back(at::randn({out, in}) / std::sqrt(static_cast<double>(in)), at::randn({out}) * 0.1);
  }
  auto reference = [&](at::Tensor a, int which) {
    for (size_t l = 0; l < layers.size(); ++l) {
      a = at::addmm(layers[l].second, a, layers[l].first.t());
      if (l + 1 < layers.size()) a = which == 0 ? at::silu(a) : which == 1 ? at::selu(a) : at::relu(a);
    }
    return a;
  };
  const fm::SmallBatchMLP::Activation kinds[] = {fm::SmallBatchMLP::Activation::SiLU, fm::SmallBatchMLP::Activation::SELU,
                                                 fm::SmallBatchMLP::Activation::ReLU};
  at::Tensor in = at::randn({1, action + observation + 1}) * 2;
  for (int which = 0; which < 3; ++which) {
    fm::SmallBatchMLP mlp(layers, kinds[which]);
    at::Tensor out = at::empty({1, action});
    mlp.forward(in.data_ptr<float>(), out.data_ptr<float>());
    EXPECT_TRUE(fmtest::AllClose(out, reference(in, which), 1e-5, 1e-5)) << which;
  }
  fm::EulerPolicySampler sampler(fm::SmallBatchMLP(layers, kinds[0]), action, observation, 10);
  at::Tensor obs = at::randn({1, observation}), x = at::randn({1, action});
  at::Tensor expected = x.clone();
  for (int k = 0; k < 10; ++k) expected = expected + 0.1 * reference(at::cat({expected, obs, at::full({1, 1}, 0.1 * k)}, 1), 0);
  sampler.sample(obs.data_ptr<float>(), x.data_ptr<float>());
  EXPECT_TRUE(fmtest::AllClose(x, expected, 1e-5, 1e-5));

  EXPECT_THROW(fm::EulerPolicySampler(fm::SmallBatchMLP(layers, kinds[0]), action, observation + 1, 10), std::invalid_argument);
  auto broken = layers;
  broken[1].first = at::randn({width, width + 1});
  EXPECT_THROW(fm::SmallBatchMLP(broken, kinds[0]), std::invalid_argument);
  std::map<std::string, at::Tensor> named = {{"net.0.weight", layers[0].first}, {"net.0.bias", layers[0].second},
                                             {"net.2.weight", layers[1].first}, {"net.2.bias", layers[1].second},
                                             {"net.10.weight", layers[2].first}, {"net.10.bias", layers[2].second}};
  auto read = fm::sequential_linear_layers(named, "net.");
  ASSERT_EQ(read.size(), 3u);
  EXPECT_TRUE(at::equal(read[2].first, layers[2].first));  // 10 after 2: in number order
  named.erase("net.2.bias");
  EXPECT_THROW(fm::sequential_linear_layers(named, "net."), std::runtime_error);
}
