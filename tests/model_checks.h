#pragma once
// Checks shared by the network tests (test_transformer.cpp, test_dit.cpp): random weights away from a
// zero initialisation, and autograd against central differences.

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

namespace fmtest {

/// Overwrites every parameter of a (float64) module with N(0, scale²) draws: away from a zero
/// initialisation, so every path through the network carries information.
inline void randomize_parameters(torch::nn::Module& module, uint64_t seed, double scale) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.copy_(at::randn(p.sizes(), gen, p.scalar_type()) * scale);
}

/// A float64 network of type M built from `options`, its parameters randomized (randomize_parameters).
template <class M, class Options>
std::shared_ptr<M> random_network(Options options, uint64_t seed, double scale) {
  auto model = std::make_shared<M>(options);
  model->to(at::kDouble);
  randomize_parameters(*model, seed, scale);
  return model;
}

/// Compares autograd's gradient of `loss` with central differences (h = 1e-6) at the first, middle and
/// last entry of every parameter of a float64 module, to `tolerance` × max(1, |loss|); returns the count.
inline int expect_gradients_match_finite_differences(torch::nn::Module& module, const std::function<at::Tensor()>& loss,
                                                     double tolerance) {
  module.zero_grad();
  loss().backward();
  int checked = 0;
  for (const auto& item : module.named_parameters()) {
    at::Tensor p = item.value();
    at::Tensor grad = p.grad().clone();
    at::NoGradGuard no_grad;
    for (int64_t j : {int64_t{0}, p.numel() / 2, p.numel() - 1}) {
      at::Tensor flat = p.view({-1});
      const double keep = flat[j].item<double>(), h = 1e-6;
      flat[j] = keep + h;
      const double up = loss().item<double>();
      flat[j] = keep - h;
      const double down = loss().item<double>();
      flat[j] = keep;
      EXPECT_NEAR(grad.view({-1})[j].item<double>(), (up - down) / (2 * h), tolerance * std::max(1.0, std::abs(up)))
          << item.key() << "[" << j << "]";
      ++checked;
    }
  }
  return checked;
}

}  // namespace fmtest
