// Mixed precision by autocast (autocast.h): bf16 inside the guard only, the previous state restored,
// gradients within bf16's precision of float32's, and a trainer that learns with it. On the CPU here;
// tests/test_cuda.cpp repeats the trainer's check on a GPU.
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include "flowmatch/autocast.h"
#include "flowmatch/coupling.h"
#include "flowmatch/loss.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/train.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(Autocast, MatrixProductsRunInBf16InsideTheGuardOnly) {
  at::Tensor a = at::randn({8, 16}, fmtest::generator(1)), b = at::randn({16, 4}, fmtest::generator(2));
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
  {
    fm::AutocastGuard outer(c10::DeviceType::CPU, at::kBFloat16);
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    EXPECT_EQ((a + 1).scalar_type(), at::kFloat);  // not on autocast's lists: as given
    {
      fm::AutocastGuard inner(c10::DeviceType::CPU, at::kBFloat16);
      EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    }
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);  // the inner guard gave back the outer's state
  }
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
}

TEST(Autocast, RefusesOtherDtypesAndDevicesNamingThem) {
  auto message = [](auto make) {
    try {
      make();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([] { fm::AutocastGuard g(c10::DeviceType::CPU, at::kDouble); }).find("Double"), std::string::npos);
  EXPECT_NE(message([] { fm::AutocastGuard g(c10::DeviceType::Meta, at::kBFloat16); }).find("expected cpu or cuda"), std::string::npos);
}

// The loss's gradients under bf16 autocast differ from float32's by bf16's rounding (unit roundoff
// 2^-9 ≈ 2e-3 per product, a few products deep): well above float32's 1e-7, well below 1.
TEST(Autocast, GradientsAgreeWithFloat32ToBf16Precision) {
  at::manual_seed(3);
  fm::models::MLP net(fm::models::MLPOptions(2).width(64).depth(3));
  at::Tensor x = at::randn({256, 2}, fmtest::generator(4)), t = at::rand({256}, fmtest::generator(5));
  at::Tensor target = at::randn({256, 2}, fmtest::generator(6));
  auto gradients = [&](bool autocast) {
    net->zero_grad();
    at::Tensor loss;
    {
      std::optional<fm::AutocastGuard> guard;
      if (autocast) guard.emplace(c10::DeviceType::CPU, at::kBFloat16);
      loss = fm::flow_matching_loss(net->forward(x, t), target, {});
    }
    EXPECT_EQ(loss.scalar_type(), at::kFloat);  // the loss in float32 either way
    loss.backward();
    std::vector<at::Tensor> g;
    for (const auto& p : net->parameters()) g.push_back(p.grad().reshape({-1}).clone());
    return at::cat(g);
  };
  const at::Tensor full = gradients(false), mixed = gradients(true);
  EXPECT_EQ(mixed.scalar_type(), at::kFloat);  // parameters and their gradients stay float32
  const double relative = ((mixed - full).norm() / full.norm()).item<double>();
  EXPECT_GT(relative, 1e-4) << "autocast changed nothing";
  EXPECT_LT(relative, 5e-2);
}

TEST(Autocast, TheTrainerLearnsUnderBf16AsInFloat32) {
  auto run = [](bool autocast) {
    at::manual_seed(7);
    auto net = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(64).depth(3));
    fm::FlowMatchingProblem problem{fm::data::toy2d_sampler("8gaussians"), fm::data::toy2d_sampler("moons"),
                                    std::make_shared<fm::CondOTPath>(), fm::make_coupling("exact-ot"), {}};
    fm::Trainer trainer(net, problem, fm::TrainerOptions().steps(400).batch_size(256).lr(3e-3).seed(8).autocast_bf16(autocast));
    double first = 0, last = 0;
    for (int k = 0; k < 400; ++k) {
      const double loss = trainer.train_step();
      if (k < 20) first += loss / 20;
      if (k >= 300) last += loss / 100;
    }
    EXPECT_EQ(net->parameters().front().scalar_type(), at::kFloat);
    return std::make_pair(first, last);
  };
  const auto [first32, last32] = run(false);
  const auto [first16, last16] = run(true);
  EXPECT_LT(last16, 0.5 * first16);
  // Exact-OT pairs make the loss small and steady; bf16's rounding leaves it within a tenth of float32's.
  EXPECT_NEAR(last16, last32, 0.1 * last32);
}
