// The MLP velocity network: shapes, time encodings, rebuild from description, gradients.
#include "flowmatch/loss.h"
#include "flowmatch/models/mlp.h"
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
