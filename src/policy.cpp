#include "flowmatch/policy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include <ATen/ATen.h>

// The kernels are compiled for AVX-512, AVX2 and the baseline, and the loader picks the best one the CPU
// has (GCC's function multiversioning); elsewhere, one plain version.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FLOWMATCH_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FLOWMATCH_CLONES
#endif

namespace flowmatch {

namespace {

// B outputs from o0 of y = Wᵀx + b (W stored transposed, (in, out)): for each input one vectorised
// multiply-add over the block (no horizontal sums, so nothing needs reassociating to vectorise). Even
// and odd inputs go to two accumulators, twice the independent multiply-add chains to hide latency.
template <int64_t B>
__attribute__((always_inline)) inline void affine_block(const float* __restrict wt, const float* __restrict bias, const float* __restrict x, float* __restrict y,
                         int64_t in, int64_t out, int64_t o0) {
  float even[B], odd[B];
  for (int64_t k = 0; k < B; ++k) even[k] = bias[o0 + k], odd[k] = 0.0f;
  int64_t i = 0;
  for (; i + 1 < in; i += 2) {
    const float x0 = x[i], x1 = x[i + 1];
    const float* __restrict r0 = wt + i * out + o0;
    const float* __restrict r1 = r0 + out;
    for (int64_t k = 0; k < B; ++k) even[k] += r0[k] * x0;
    for (int64_t k = 0; k < B; ++k) odd[k] += r1[k] * x1;
  }
  if (i < in) {
    const float* __restrict r0 = wt + i * out + o0;
    for (int64_t k = 0; k < B; ++k) even[k] += r0[k] * x[i];
  }
  for (int64_t k = 0; k < B; ++k) y[o0 + k] = even[k] + odd[k];
}

// y = Wᵀx + b: blocks of 64 outputs (8 vector registers of accumulators with AVX-512), then 16, then 1.
FLOWMATCH_CLONES
void affine(const float* __restrict wt, const float* __restrict bias, const float* __restrict x, float* __restrict y, int64_t in,
            int64_t out) {
  int64_t o0 = 0;
  for (; o0 + 64 <= out; o0 += 64) affine_block<64>(wt, bias, x, y, in, out, o0);
  for (; o0 + 16 <= out; o0 += 16) affine_block<16>(wt, bias, x, y, in, out, o0);
  for (; o0 < out; ++o0) affine_block<1>(wt, bias, x, y, in, out, o0);
}

// e^x for x in [−87, 88] (clamped): x = n·ln 2 + r, |r| ≤ ½ln 2, e^r by its degree-6 Taylor polynomial
// (relative error < 2·10⁻⁷), 2^n from the exponent bits; n rounded by adding and subtracting 1.5·2²³.
// Plain arithmetic and selects only, so the loops over it vectorise.
__attribute__((always_inline)) inline float exp_approx(float given) {
  float x = given == given ? given : 0.0f;  // a NaN is returned as it came, and never reaches the int cast
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return given == given ? p * scale : given;
}

FLOWMATCH_CLONES
void activate(float* __restrict y, int64_t n, SmallBatchMLP::Activation activation) {
  switch (activation) {
    case SmallBatchMLP::Activation::SiLU:
      for (int64_t k = 0; k < n; ++k) y[k] = y[k] / (1.0f + exp_approx(-y[k]));
      return;
    case SmallBatchMLP::Activation::SELU: {
      const float scale = 1.0507009873554804934f, alpha = 1.6732632423543772848f;
      for (int64_t k = 0; k < n; ++k) y[k] = y[k] > 0 ? scale * y[k] : scale * alpha * (exp_approx(y[k]) - 1.0f);
      return;
    }
    case SmallBatchMLP::Activation::ReLU:
      for (int64_t k = 0; k < n; ++k) y[k] = std::max(y[k], 0.0f);
      return;
  }
}

std::vector<float> to_floats(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

SmallBatchMLP::SmallBatchMLP(const std::vector<std::pair<at::Tensor, at::Tensor>>& layers, Activation activation)
    : activation_(activation) {
  if (layers.empty()) throw std::invalid_argument("SmallBatchMLP: no layers");
  int64_t widest = 0;
  for (size_t k = 0; k < layers.size(); ++k) {
    const at::Tensor& w = layers[k].first;
    const at::Tensor& b = layers[k].second;
    if (!w.defined() || !b.defined() || w.dim() != 2 || b.dim() != 1 || b.size(0) != w.size(0)) {
      throw std::invalid_argument("SmallBatchMLP: layer " + std::to_string(k) + " needs a weight (out, in) and a bias (out)");
    }
    if (k == 0) sizes_.push_back(w.size(1));
    if (w.size(1) != sizes_.back()) {
      throw std::invalid_argument("SmallBatchMLP: layer " + std::to_string(k) + " takes " + std::to_string(w.size(1)) +
                                  " inputs but the layer before gives " + std::to_string(sizes_.back()));
    }
    sizes_.push_back(w.size(0));
    weights_.push_back(to_floats(w.t()));  // (in, out)
    biases_.push_back(to_floats(b));
    if (k + 1 < layers.size()) widest = std::max(widest, w.size(0));
  }
  a_.assign(static_cast<size_t>(std::max<int64_t>(widest, 1)), 0.0f);
  b_.assign(a_.size(), 0.0f);
}

void SmallBatchMLP::forward(const float* in, float* out) const {
  const size_t n = weights_.size();
  const float* x = in;
  for (size_t k = 0; k < n; ++k) {
    float* y = k + 1 == n ? out : (k % 2 == 0 ? a_.data() : b_.data());
    affine(weights_[k].data(), biases_[k].data(), x, y, sizes_[k], sizes_[k + 1]);
    if (k + 1 < n) activate(y, sizes_[k + 1], activation_);
    x = y;
  }
}

EulerPolicySampler::EulerPolicySampler(SmallBatchMLP network, int64_t action_size, int64_t observation_size, int64_t steps)
    : network_(std::move(network)), action_(action_size), observation_(observation_size), steps_(steps) {
  if (action_ < 1 || observation_ < 0) throw std::invalid_argument("EulerPolicySampler: action size must be >= 1 and observation size >= 0");
  if (network_.input_size() != action_ + observation_ + 1 || network_.output_size() != action_) {
    throw std::invalid_argument("EulerPolicySampler: the network maps " + std::to_string(network_.input_size()) + " -> " +
                                std::to_string(network_.output_size()) + ", expected [action, observation, t] = " +
                                std::to_string(action_ + observation_ + 1) + " -> action = " + std::to_string(action_));
  }
  if (steps_ < 1) throw std::invalid_argument("EulerPolicySampler: steps must be >= 1, got " + std::to_string(steps_));
  input_.assign(static_cast<size_t>(network_.input_size()), 0.0f);
  velocity_.assign(static_cast<size_t>(action_), 0.0f);
}

void EulerPolicySampler::sample(const float* observation, float* action) const {
  const float h = 1.0f / static_cast<float>(steps_);
  std::copy(observation, observation + observation_, input_.begin() + action_);
  for (int64_t k = 0; k < steps_; ++k) {
    std::copy(action, action + action_, input_.begin());
    input_[static_cast<size_t>(action_ + observation_)] = static_cast<float>(k) * h;
    network_.forward(input_.data(), velocity_.data());
    for (int64_t i = 0; i < action_; ++i) action[i] += h * velocity_[i];
  }
}

std::vector<std::pair<at::Tensor, at::Tensor>> sequential_linear_layers(const std::map<std::string, at::Tensor>& tensors,
                                                                         const std::string& prefix) {
  std::vector<std::pair<int64_t, std::string>> indices;
  const std::string tail = ".weight";
  for (const auto& [key, value] : tensors) {
    if (key.size() <= prefix.size() + tail.size() || key.compare(0, prefix.size(), prefix) != 0 ||
        key.compare(key.size() - tail.size(), tail.size(), tail) != 0) {
      continue;
    }
    const std::string middle = key.substr(prefix.size(), key.size() - prefix.size() - tail.size());
    if (middle.empty() || !std::all_of(middle.begin(), middle.end(), [](char c) { return c >= '0' && c <= '9'; }) || middle.size() > 6) continue;
    indices.emplace_back(std::stoll(middle), middle);
  }
  if (indices.empty()) throw std::runtime_error("no layer '" + prefix + "K.weight' among the tensors");
  std::sort(indices.begin(), indices.end());
  std::vector<std::pair<at::Tensor, at::Tensor>> layers;
  for (const auto& [k, text] : indices) {
    auto bias = tensors.find(prefix + text + ".bias");
    if (bias == tensors.end()) throw std::runtime_error("layer '" + prefix + text + "' has a weight but no bias");
    layers.emplace_back(tensors.at(prefix + text + ".weight"), bias->second);
  }
  return layers;
}

}  // namespace flowmatch
