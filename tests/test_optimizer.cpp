// The fused Adam/AdamW step against LibTorch's own optimizers, and the moving average.
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include "flowmatch/optimizer.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {

std::vector<at::Tensor> make_parameters(uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> ps = {at::randn({5, 3}), at::randn({7}), at::randn({2, 2, 3})};
  for (auto& p : ps) p.set_requires_grad(true);
  return ps;
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ps) {
  std::vector<at::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().set_requires_grad(true));
  return out;
}

// Runs `steps` steps on two identical parameter sets with the same gradients, one with LibTorch's
// optimizer, one fused; the middle parameter gets no gradient on odd steps (LibTorch skips it).
template <typename Optimizer, typename Options>
void compare(const Options& options, int steps) {
  auto reference = make_parameters(3);
  auto fused = clones(reference);
  const auto initial = clones(reference);
  Optimizer ref_opt(reference, options);
  Optimizer fused_opt(fused, options);
  ASSERT_TRUE(fm::fused_adam_supported(fused_opt, fused));
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < reference.size(); ++i) {
      // Gradients of mixed scale, some tiny (where eps matters).
      at::Tensor grad = at::randn(reference[i].sizes(), g) * (s % 3 == 0 ? 1e-6 : 1.0);
      if (i == 1 && s % 2 == 1) {
        reference[i].mutable_grad() = at::Tensor();
        fused[i].mutable_grad() = at::Tensor();
      } else {
        reference[i].mutable_grad() = grad.clone();
        fused[i].mutable_grad() = grad.clone();
      }
    }
    ref_opt.step();
    fm::fused_adam_step(fused_opt, fused);
  }
  // Each step moves a weight by at most lr·(1 + a few float roundings): after `steps` steps the two
  // may differ by about steps · lr · 10 · 2^-23, far below 1e-6 for lr = 1e-2 and 30 steps, while
  // every weight has moved by much more.
  for (size_t i = 0; i < reference.size(); ++i) {
    EXPECT_TRUE(fmtest::AllClose(fused[i], reference[i], 0, 1e-6)) << "parameter " << i;
    EXPECT_GT((fused[i] - initial[i]).abs().min().item<double>(), 1e-3) << "parameter " << i;
  }
  // The state lives in the optimizer's own map, so LibTorch's optimizer can carry on from it.
  for (size_t i = 0; i < reference.size(); ++i) {
    ref_opt.step();  // same gradients again
    fused_opt.step();
    EXPECT_TRUE(fmtest::AllClose(fused[i], reference[i], 0, 1e-6)) << "parameter " << i << " after a LibTorch step";
  }
}

}  // namespace

TEST(FusedAdam, EqualsLibTorchAdamWithAndWithoutWeightDecay) {
  compare<torch::optim::Adam>(torch::optim::AdamOptions(1e-2), 30);
  compare<torch::optim::Adam>(torch::optim::AdamOptions(1e-2).weight_decay(0.1).betas({0.8, 0.99}).eps(1e-6), 30);
}

TEST(FusedAdam, EqualsLibTorchAdamW) {
  compare<torch::optim::AdamW>(torch::optim::AdamWOptions(1e-2), 30);
  compare<torch::optim::AdamW>(torch::optim::AdamWOptions(1e-2).weight_decay(0.5), 30);
}

TEST(FusedAdam, RefusesWhatItCannotDo) {
  auto doubles = make_parameters(1);
  for (auto& p : doubles) p = p.detach().to(at::kDouble).set_requires_grad(true);
  torch::optim::Adam on_doubles(doubles, torch::optim::AdamOptions(1e-3));
  EXPECT_FALSE(fm::fused_adam_supported(on_doubles, doubles));
  EXPECT_THROW(fm::fused_adam_step(on_doubles, doubles), std::invalid_argument);
  auto floats = make_parameters(1);
  torch::optim::Adam amsgrad(floats, torch::optim::AdamOptions(1e-3).amsgrad(true));
  EXPECT_FALSE(fm::fused_adam_supported(amsgrad, floats));
  auto strided = std::vector<at::Tensor>{at::randn({4, 4}).t().set_requires_grad(true)};
  torch::optim::Adam on_strided(strided, torch::optim::AdamOptions(1e-3));
  EXPECT_FALSE(fm::fused_adam_supported(on_strided, strided));
}

TEST(ExponentialMovingAverage, FollowsTheFormulaForFloatAndOtherTensors) {
  at::manual_seed(4);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    at::Tensor a = at::randn({3, 4}, dtype), x = at::randn({3, 4}, dtype);
    at::Tensor expected = a * 0.9 + x * 0.1;
    fm::exponential_moving_average({a}, {x}, 0.9);
    EXPECT_TRUE(fmtest::AllClose(a, expected, 0, 1e-6));
  }
  EXPECT_THROW(fm::exponential_moving_average({at::zeros({2})}, {at::zeros({3})}, 0.5), std::invalid_argument);
  EXPECT_THROW(fm::exponential_moving_average({at::zeros({2})}, {}, 0.5), std::invalid_argument);
}
