// The fused Adam/AdamW step against LibTorch's own optimizers, and the moving average.
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "flowmatch/optimizer.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {

std::vector<at::Tensor> make_parameters(uint64_t seed, at::ScalarType dtype = at::kFloat) {
  at::manual_seed(seed);
  std::vector<at::Tensor> ps = {at::randn({5, 3}, dtype), at::randn({7}, dtype), at::randn({2, 2, 3}, dtype)};
  for (auto& p : ps) p.set_requires_grad(true);
  return ps;
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ps) {
  std::vector<at::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().set_requires_grad(true));
  return out;
}

enum class Step { Fused, MultiTensor };

// Runs `steps` steps on two identical parameter sets with the same gradients, one with LibTorch's
// optimizer, one fused (or multi-tensor); the middle parameter gets no gradient on odd steps (LibTorch
// skips it, so its step count falls behind the others').
template <typename Optimizer, typename Options>
void compare(const Options& options, int steps, Step how = Step::Fused, at::ScalarType dtype = at::kFloat) {
  auto reference = make_parameters(3, dtype);
  auto fused = clones(reference);
  const auto initial = clones(reference);
  Optimizer ref_opt(reference, options);
  Optimizer fused_opt(fused, options);
  if (how == Step::Fused) {
    ASSERT_TRUE(fm::fused_adam_supported(fused_opt, fused));
  } else {
    ASSERT_TRUE(fm::multi_tensor_adam_supported(fused_opt, fused));
  }
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < reference.size(); ++i) {
      // Gradients of mixed scale, some tiny (where eps matters).
      at::Tensor grad = (at::randn(reference[i].sizes(), g) * (s % 3 == 0 ? 1e-6 : 1.0)).to(dtype);
      if (i == 1 && s % 2 == 1) {
        reference[i].mutable_grad() = at::Tensor();
        fused[i].mutable_grad() = at::Tensor();
      } else {
        reference[i].mutable_grad() = grad.clone();
        fused[i].mutable_grad() = grad.clone();
      }
    }
    ref_opt.step();
    if (how == Step::Fused) {
      fm::fused_adam_step(fused_opt, fused);
    } else {
      fm::multi_tensor_adam_step(fused_opt, fused);
    }
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

// ATen's multi-tensor operations, the path a CUDA trainer takes, checked here on the CPU (where ATen
// runs them tensor by tensor) in float32 and float64.
TEST(MultiTensorAdam, EqualsLibTorchAdamAndAdamW) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    compare<torch::optim::Adam>(torch::optim::AdamOptions(1e-2), 30, Step::MultiTensor, dtype);
    compare<torch::optim::Adam>(torch::optim::AdamOptions(1e-2).weight_decay(0.1).betas({0.8, 0.99}).eps(1e-6), 30,
                                Step::MultiTensor, dtype);
    compare<torch::optim::AdamW>(torch::optim::AdamWOptions(1e-2).weight_decay(0.5), 30, Step::MultiTensor, dtype);
  }
}

TEST(MultiTensorAdam, RefusesWhatItCannotDo) {
  auto floats = make_parameters(1);
  torch::optim::Adam amsgrad(floats, torch::optim::AdamOptions(1e-3).amsgrad(true));
  EXPECT_FALSE(fm::multi_tensor_adam_supported(amsgrad, floats));
  EXPECT_THROW(fm::multi_tensor_adam_step(amsgrad, floats), std::invalid_argument);
  auto mixed = make_parameters(1);
  mixed[1] = mixed[1].detach().to(at::kDouble).set_requires_grad(true);
  torch::optim::Adam on_mixed(mixed, torch::optim::AdamOptions(1e-3));
  EXPECT_FALSE(fm::multi_tensor_adam_supported(on_mixed, mixed));
  torch::optim::SGD sgd(floats, torch::optim::SGDOptions(1e-3));
  EXPECT_FALSE(fm::multi_tensor_adam_supported(sgd, floats));
}

TEST(ExponentialMovingAverage, FollowsTheFormulaForFloatAndOtherTensors) {
  at::manual_seed(4);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    at::Tensor a = at::randn({3, 4}, dtype), x = at::randn({3, 4}, dtype);
    at::Tensor expected = a * 0.9 + x * 0.1;
    fm::exponential_moving_average({a}, {x}, 0.9);
    EXPECT_TRUE(fmtest::AllClose(a, expected, 0, 1e-6));
  }
  // A mixed list: the float32 pair in one pass, the float64 and strided ones by multi-tensor operations.
  std::vector<at::Tensor> averages = {at::randn({5}), at::randn({2, 3}, at::kDouble), at::randn({3, 2}).t()};
  std::vector<at::Tensor> values = {at::randn({5}), at::randn({2, 3}, at::kDouble), at::randn({2, 3})};
  std::vector<at::Tensor> expected;
  for (size_t i = 0; i < averages.size(); ++i) expected.push_back(averages[i] * 0.99 + values[i] * 0.01);
  fm::exponential_moving_average(averages, values, 0.99);
  for (size_t i = 0; i < averages.size(); ++i) EXPECT_TRUE(fmtest::AllClose(averages[i], expected[i], 0, 1e-6)) << i;
  EXPECT_THROW(fm::exponential_moving_average({at::zeros({2})}, {at::zeros({3})}, 0.5), std::invalid_argument);
  EXPECT_THROW(fm::exponential_moving_average({at::zeros({2})}, {}, 0.5), std::invalid_argument);
}
