// The U-Net velocity network: shapes, conditioning, the null class, rebuilding from its description,
// and the Trainer's label dropout.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include "flowmatch/models/unet.h"
#include "flowmatch/train.h"
#include "test_util.h"

namespace fm = flowmatch;
using fm::models::UNet;
using fm::models::UNetOptions;

namespace {
// The output layer (and each block's last convolution) starts at zero, so a fresh network's output
// is 0 for every input; tests that compare outputs first give every parameter random values.
void randomize(torch::nn::Module& m, uint64_t seed) {
  auto gen = fmtest::generator(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.copy_(at::randn(p.sizes(), gen) * 0.2);
}
}  // namespace

TEST(UNet, OutputHasTheInputShape) {
  at::manual_seed(0);
  struct Case {
    UNetOptions options;
    std::vector<int64_t> shape;
  };
  std::vector<Case> cases = {
      {UNetOptions(1, 28).base_channels(8).channel_multipliers({1, 2, 2}), {3, 1, 28, 28}},
      {UNetOptions(1, 28).base_channels(8).channel_multipliers({1, 2, 2}), {2, 784}},
      {UNetOptions(3, 32).base_channels(8).channel_multipliers({1, 2, 2, 2}).blocks_per_level(2), {2, 3, 32, 32}},
      {UNetOptions(2, 16).base_channels(16).channel_multipliers({1}).attention(false).num_classes(3), {1, 2, 16, 16}},
  };
  for (auto& c : cases) {
    UNet net(c.options);
    randomize(*net, 1);
    at::Tensor x = at::randn(c.shape);
    at::Tensor v = net->forward(x, at::rand({c.shape[0]}));
    EXPECT_EQ(v.sizes(), x.sizes());
    EXPECT_TRUE(at::isfinite(v).all().item<bool>());
    EXPECT_GT(v.abs().max().item<double>(), 0);  // not the zero-initialised output any more
  }
}

TEST(UNet, FreshNetworkStartsAtZeroVelocity) {
  at::manual_seed(0);
  UNet net(UNetOptions(1, 28).base_channels(8).num_classes(10));
  EXPECT_EQ(net->forward(at::randn({2, 784}), at::full({}, 0.3)).abs().max().item<double>(), 0.0);
}

TEST(UNet, ConditioningChangesTheOutputAndTheNullLabelIsTheUnconditionalVelocity) {
  at::manual_seed(0);
  UNet net(UNetOptions(1, 16).base_channels(8).channel_multipliers({1, 2}).num_classes(4));
  randomize(*net, 2);
  at::Tensor x = at::randn({4, 1, 16, 16}), t = at::rand({4});
  at::Tensor a = net->forward_conditional(x, t, at::tensor({0, 1, 2, 3}, at::kLong));
  at::Tensor b = net->forward_conditional(x, t, at::tensor({1, 2, 3, 0}, at::kLong));
  for (int64_t i = 0; i < 4; ++i) EXPECT_GT((a[i] - b[i]).abs().max().item<double>(), 1e-3) << i;
  // Row-wise independence: the same label on a row gives the same output whatever the other rows get.
  at::Tensor c = net->forward_conditional(x, t, at::tensor({0, 2, 2, 0}, at::kLong));
  EXPECT_TRUE(fmtest::AllClose(c[0], a[0], 1e-5, 1e-6));
  EXPECT_TRUE(fmtest::AllClose(c[2], a[2], 1e-5, 1e-6));
  // The null label is the learned "no class" row, which forward(x, t) uses too.
  at::Tensor null = net->forward_conditional(x, t, at::full({4}, fm::models::kNullLabel, at::kLong));
  EXPECT_TRUE(fmtest::AllClose(null, net->forward(x, t), 1e-6, 1e-7));
  for (int64_t i = 0; i < 4; ++i) EXPECT_GT((null[i] - a[i]).abs().max().item<double>(), 1e-3);
  // Time matters too.
  EXPECT_GT((net->forward(x, t) - net->forward(x, t * 0.5)).abs().max().item<double>(), 1e-3);
}

TEST(UNet, BadLabelsAndShapesAreNamed) {
  at::manual_seed(0);
  UNet net(UNetOptions(1, 16).base_channels(8).channel_multipliers({1, 2}).num_classes(4));
  at::Tensor x = at::randn({2, 256}), t = at::rand({2});
  EXPECT_THROW(net->forward_conditional(x, t, at::tensor({0, 4}, at::kLong)), std::invalid_argument);
  EXPECT_THROW(net->forward_conditional(x, t, at::tensor({0, -2}, at::kLong)), std::invalid_argument);
  EXPECT_THROW(net->forward_conditional(x, t, at::tensor({0}, at::kLong)), std::invalid_argument);
  EXPECT_THROW(net->forward_conditional(x, t, at::tensor({0.0, 1.0})), std::invalid_argument);
  EXPECT_THROW(net->forward(at::randn({2, 100}), t), c10::Error);
  UNet unconditional(UNetOptions(1, 16).base_channels(8).channel_multipliers({1, 2}));
  EXPECT_THROW(unconditional->forward_conditional(x, t, at::tensor({0, 1}, at::kLong)), std::invalid_argument);
  EXPECT_THROW(UNet(UNetOptions(1, 30).channel_multipliers({1, 2, 2})), std::invalid_argument);  // 30 not divisible by 4
  EXPECT_THROW(UNet(UNetOptions(1, 28).base_channels(12).groups(8)), std::invalid_argument);
  EXPECT_THROW(fm::models::make_model({{"type", "unet"}, {"options", {{"base_channels", "wide"}}}}), std::invalid_argument);
}

TEST(UNet, RebuildsFromItsDescription) {
  at::manual_seed(0);
  UNet net(UNetOptions(1, 16).base_channels(8).channel_multipliers({1, 2}).blocks_per_level(2).dropout(0.1).num_classes(3));
  randomize(*net, 3);
  net->eval();
  auto copy = net->clone_model();
  copy->eval();
  EXPECT_EQ(copy->spec(), net->spec());
  EXPECT_EQ(copy->num_classes(), 3);
  at::Tensor x = at::randn({2, 256}), t = at::rand({2}), y = at::tensor({2, 0}, at::kLong);
  EXPECT_TRUE(fmtest::AllClose(copy->forward_conditional(x, t, y), net->forward_conditional(x, t, y), 0, 0));
}

TEST(UNet, GradientsReachEveryParameter) {
  at::manual_seed(0);
  UNet net(UNetOptions(1, 16).base_channels(8).channel_multipliers({1, 2}).num_classes(3));
  randomize(*net, 4);
  at::Tensor loss = net->forward_conditional(at::randn({3, 256}), at::rand({3}), at::tensor({0, 1, -1}, at::kLong)).pow(2).mean();
  loss.backward();
  for (const auto& p : net->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
}

TEST(UNet, LabelDropoutReplacesLabelsByTheNullLabelAtItsRate) {
  // 10 000 labels dropped with probability 0.3: the count is Binomial(10000, 0.3), sd ≈ 46; 5 sd allowed.
  fm::data::ImageDataset data{at::randint(0, 256, {20, 1, 4, 4}, at::kByte), at::arange(20, at::kLong) % 5, {"a", "b", "c", "d", "e"}};
  fm::FlowMatchingProblem problem;
  problem.source = [](int64_t n, at::Generator& g) { return at::randn({n, 16}, g); };
  problem.labeled_target = fm::data::image_sampler(data);
  problem.coupling = fm::make_coupling({{"type", "independent"}});
  problem.path = fm::make_path({{"type", "affine"}, {"scheduler", {{"type", "condot"}, {"sigma_min", 0.0}}}, {"noise", "none"}, {"sigma", 0.0}});
  problem.label_dropout = 0.3;
  auto gen = fmtest::generator(5);
  fm::TrainingBatch batch = fm::draw_training_batch(problem, 10000, gen);
  ASSERT_TRUE(batch.labels.defined());
  const double dropped = batch.labels.eq(fm::models::kNullLabel).sum().item<double>();
  EXPECT_NEAR(dropped, 3000, 5 * 46);
  EXPECT_TRUE(((batch.labels >= 0).logical_and(batch.labels < 5).logical_or(batch.labels == fm::models::kNullLabel)).all().item<bool>());
  problem.label_dropout = 0;
  EXPECT_FALSE(fm::draw_training_batch(problem, 500, gen).labels.eq(fm::models::kNullLabel).any().item<bool>());
  problem.label_dropout = 1;
  EXPECT_TRUE(fm::draw_training_batch(problem, 500, gen).labels.eq(fm::models::kNullLabel).all().item<bool>());
}

TEST(UNet, TrainerLearnsClassConditionalTargets) {
  // Two classes of constant images (−0.5 and +0.5): after training, the conditional flow from noise
  // lands near each class's value, which only works if the labels reach the network.
  at::manual_seed(0);
  at::Tensor images = at::cat({at::full({50, 1, 4, 4}, 64, at::kByte), at::full({50, 1, 4, 4}, 191, at::kByte)});
  fm::data::ImageDataset data{images, at::cat({at::zeros({50}, at::kLong), at::ones({50}, at::kLong)}), {"dark", "bright"}};
  fm::FlowMatchingProblem problem;
  problem.source = [](int64_t n, at::Generator& g) { return at::randn({n, 16}, g); };
  problem.labeled_target = fm::data::image_sampler(data);
  problem.coupling = fm::make_coupling({{"type", "independent"}});
  problem.path = fm::make_path({{"type", "affine"}, {"scheduler", {{"type", "condot"}, {"sigma_min", 0.0}}}, {"noise", "none"}, {"sigma", 0.0}});
  problem.label_dropout = 0.1;
  auto net = std::make_shared<fm::models::UNetImpl>(UNetOptions(1, 4).base_channels(16).channel_multipliers({1}).attention(false).num_classes(2));
  fm::Trainer trainer(net, problem, fm::TrainerOptions().steps(300).batch_size(32).lr(3e-3).seed(1));
  trainer.train();
  torch::NoGradGuard no_grad;
  at::Tensor x = at::randn({40, 16});
  at::Tensor labels = at::cat({at::zeros({20}, at::kLong), at::ones({20}, at::kLong)});
  const int steps = 20;
  for (int k = 0; k < steps; ++k) x = x + net->forward_conditional(x, at::full({}, (k + 0.5) / steps), labels) / steps;
  const double dark = x.narrow(0, 0, 20).mean().item<double>(), bright = x.narrow(0, 20, 20).mean().item<double>();
  EXPECT_NEAR(dark, -0.5, 0.15);
  EXPECT_NEAR(bright, 0.5, 0.15);
}
