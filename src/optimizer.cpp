#include "flowmatch/optimizer.h"

#include <cmath>
#include <map>
#include <optional>
#include <utility>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <ATen/ATen.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif
#include <c10/util/StringUtil.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

namespace flowmatch {

namespace {

bool plain_float_cpu(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
}

struct Hyper {
  double lr, beta1, beta2, eps, weight_decay;
};

// The per-element update: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², w ← w − step · m / (√v / √(1−β₂ᵗ) + ε),
// with g = gradient (+ decay·w for Adam's coupled weight decay).
struct AdamScalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_bias2, eps, neg_step, decay;
  bool coupled_decay;
};

void adam_loop_portable(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                        int64_t begin, int64_t n, const AdamScalars& a) {
  for (int64_t k = begin; k < n; ++k) {
    const float gk = a.coupled_decay ? g[k] + a.decay * w[k] : g[k];
    const float mk = m[k] * a.beta1 + a.one_minus_beta1 * gk;
    const float vk = v[k] * a.beta2 + a.one_minus_beta2 * gk * gk;
    m[k] = mk;
    v[k] = vk;
    w[k] += a.neg_step * (mk / (std::sqrt(vk) / a.sqrt_bias2 + a.eps));
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FLOWMATCH_ADAM_AVX2 1
// Eight floats at a time (AVX2, chosen at run time), the portable loop's operations in its order
// (separate multiplies and adds, no fused multiply-add), then the portable loop for the tail.
__attribute__((target("avx2"))) void adam_loop_avx2(float* __restrict w, const float* __restrict g, float* __restrict m,
                                                    float* __restrict v, int64_t n, const AdamScalars& a) {
  const __m256 beta1 = _mm256_set1_ps(a.beta1), one_minus_beta1 = _mm256_set1_ps(a.one_minus_beta1);
  const __m256 beta2 = _mm256_set1_ps(a.beta2), one_minus_beta2 = _mm256_set1_ps(a.one_minus_beta2);
  const __m256 sqrt_bias2 = _mm256_set1_ps(a.sqrt_bias2), eps = _mm256_set1_ps(a.eps);
  const __m256 neg_step = _mm256_set1_ps(a.neg_step), decay = _mm256_set1_ps(a.decay);
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 wk = _mm256_loadu_ps(w + k);
    __m256 gk = _mm256_loadu_ps(g + k);
    if (a.coupled_decay) gk = _mm256_add_ps(gk, _mm256_mul_ps(decay, wk));
    const __m256 mk = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + k), beta1), _mm256_mul_ps(one_minus_beta1, gk));
    const __m256 vk = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + k), beta2),
                                    _mm256_mul_ps(_mm256_mul_ps(one_minus_beta2, gk), gk));
    _mm256_storeu_ps(m + k, mk);
    _mm256_storeu_ps(v + k, vk);
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vk), sqrt_bias2), eps);
    _mm256_storeu_ps(w + k, _mm256_add_ps(wk, _mm256_mul_ps(neg_step, _mm256_div_ps(mk, denom))));
  }
  adam_loop_portable(w, g, m, v, k, n, a);
}
#endif

void adam_loop(float* w, const float* g, float* m, float* v, int64_t n, const AdamScalars& a) {
#ifdef FLOWMATCH_ADAM_AVX2
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) {
    adam_loop_avx2(w, g, m, v, n, a);
    return;
  }
#endif
  adam_loop_portable(w, g, m, v, 0, n, a);
}

// `parameter`'s Adam state in LibTorch's own map, made (step 0, zero moments) on its first step.
template <typename ParamState>
ParamState& adam_state(torch::optim::Optimizer& optimizer, const at::Tensor& parameter, at::MemoryFormat format) {
  auto& state = optimizer.state();
  auto key = optimizer_state_key(state, parameter);
  auto it = state.find(key);
  if (it == state.end()) {
    auto fresh = std::make_unique<ParamState>();
    fresh->step(0);
    fresh->exp_avg(at::zeros_like(parameter, format));
    fresh->exp_avg_sq(at::zeros_like(parameter, format));
    it = state.emplace(key, std::move(fresh)).first;
  }
  return static_cast<ParamState&>(*it->second);
}

// Adam (decoupled = false) adds weight_decay·p to the gradient; AdamW (decoupled = true) shrinks p by
// (1 − lr·weight_decay) first. The arithmetic follows LibTorch's Adam::step / AdamW::step in float,
// with the scalars rounded to float where ATen rounds them.
template <typename ParamState>
void step_all(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters, const Hyper& h,
              bool decoupled) {
  for (const at::Tensor& p : parameters) {
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    if (!plain_float_cpu(grad) || grad.sizes() != p.sizes()) {
      throw std::invalid_argument("fused_adam_step: gradient of shape " + c10::str(grad.sizes()) +
                                  " is not a contiguous float32 CPU tensor shaped like its parameter " +
                                  c10::str(p.sizes()));
    }
    auto& s = adam_state<ParamState>(optimizer, p, at::MemoryFormat::Contiguous);
    if (!plain_float_cpu(s.exp_avg()) || !plain_float_cpu(s.exp_avg_sq()) || s.exp_avg().numel() != p.numel() ||
        s.exp_avg_sq().numel() != p.numel()) {
      throw std::invalid_argument("fused_adam_step: optimizer state is not float32 CPU contiguous like its parameter");
    }
    s.step(s.step() + 1);
    const double bias1 = 1 - std::pow(h.beta1, static_cast<double>(s.step()));
    const double bias2 = 1 - std::pow(h.beta2, static_cast<double>(s.step()));
    AdamScalars a;
    a.beta1 = static_cast<float>(h.beta1);
    a.one_minus_beta1 = static_cast<float>(1 - h.beta1);
    a.beta2 = static_cast<float>(h.beta2);
    a.one_minus_beta2 = static_cast<float>(1 - h.beta2);
    a.sqrt_bias2 = static_cast<float>(std::sqrt(bias2));
    a.eps = static_cast<float>(h.eps);
    a.neg_step = static_cast<float>(-h.lr / bias1);
    a.decay = static_cast<float>(h.weight_decay);
    a.coupled_decay = !decoupled && h.weight_decay != 0;
    float* w = p.data_ptr<float>();
    const int64_t n = p.numel();
    if (decoupled && h.weight_decay != 0) {
      const float shrink = static_cast<float>(1 - h.lr * h.weight_decay);
      for (int64_t k = 0; k < n; ++k) w[k] *= shrink;
    }
    adam_loop(w, grad.data_ptr<float>(), s.exp_avg().template data_ptr<float>(),
              s.exp_avg_sq().template data_ptr<float>(), n, a);
  }
}

// An Adam or AdamW optimizer without amsgrad over one parameter group: its hyperparameters, and whether
// its weight decay is decoupled (AdamW). Nothing for any other optimizer.
std::optional<std::pair<Hyper, bool>> plain_adam(const torch::optim::Optimizer& optimizer) {
  if (optimizer.param_groups().size() != 1) return std::nullopt;
  const auto& options = optimizer.param_groups().front().options();
  if (const auto* adam = dynamic_cast<const torch::optim::AdamOptions*>(&options)) {
    if (adam->amsgrad()) return std::nullopt;
    return std::make_pair(Hyper{adam->lr(), std::get<0>(adam->betas()), std::get<1>(adam->betas()), adam->eps(), adam->weight_decay()}, false);
  }
  if (const auto* adamw = dynamic_cast<const torch::optim::AdamWOptions*>(&options)) {
    if (adamw->amsgrad()) return std::nullopt;
    return std::make_pair(Hyper{adamw->lr(), std::get<0>(adamw->betas()), std::get<1>(adamw->betas()), adamw->eps(), adamw->weight_decay()}, true);
  }
  return std::nullopt;
}

}  // namespace

bool fused_adam_supported(const torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters) {
  if (!plain_adam(optimizer)) return false;
  for (const at::Tensor& p : parameters) {
    if (!plain_float_cpu(p)) return false;
  }
  return true;
}

void fused_adam_step(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters) {
  if (!fused_adam_supported(optimizer, parameters)) {
    throw std::invalid_argument(
        "fused_adam_step: needs an Adam or AdamW optimizer (one parameter group, no amsgrad) over contiguous "
        "float32 CPU parameters");
  }
  at::NoGradGuard no_grad;
  const auto [h, decoupled] = *plain_adam(optimizer);
  if (decoupled) {
    step_all<torch::optim::AdamWParamState>(optimizer, parameters, h, true);
  } else {
    step_all<torch::optim::AdamParamState>(optimizer, parameters, h, false);
  }
}

bool multi_tensor_adam_supported(const torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters) {
  if (!plain_adam(optimizer) || parameters.empty()) return false;
  const at::Tensor& first = parameters.front();
  for (const at::Tensor& p : parameters) {
    if (!p.defined() || p.is_sparse() || !at::isFloatingType(p.scalar_type()) || p.scalar_type() != first.scalar_type() ||
        p.device() != first.device()) {
      return false;
    }
  }
  return true;
}

namespace {

// LibTorch's Adam::step / AdamW::step (torch/csrc/api/src/optim/adam.cpp, adamw.cpp), each operation
// applied to every tensor of a group at once.
template <typename ParamState>
void multi_tensor_step_all(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters, const Hyper& h,
                           bool decoupled) {
  struct Group {
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs;
    std::vector<ParamState*> states;
  };
  std::map<int64_t, Group> groups;  // by step count before this step
  for (const at::Tensor& p : parameters) {
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    if (grad.sizes() != p.sizes() || grad.is_sparse()) {
      throw std::invalid_argument("multi_tensor_adam_step: gradient of shape " + c10::str(grad.sizes()) +
                                  " is not a dense tensor shaped like its parameter " + c10::str(p.sizes()));
    }
    auto& s = adam_state<ParamState>(optimizer, p, at::MemoryFormat::Preserve);
    Group& g = groups[s.step()];
    g.params.push_back(p);
    g.grads.push_back(grad);
    g.exp_avgs.push_back(s.exp_avg());
    g.exp_avg_sqs.push_back(s.exp_avg_sq());
    g.states.push_back(&s);
  }
  for (auto& [before, g] : groups) {
    const int64_t step = before + 1;
    for (ParamState* s : g.states) s->step(step);
    const double bias1 = 1 - std::pow(h.beta1, static_cast<double>(step));
    const double bias2 = 1 - std::pow(h.beta2, static_cast<double>(step));
    std::vector<at::Tensor> grads = g.grads;
    if (h.weight_decay != 0) {
      if (decoupled) {
        at::_foreach_mul_(g.params, 1 - h.lr * h.weight_decay);
      } else {
        grads = at::_foreach_add(g.grads, g.params, h.weight_decay);
      }
    }
    at::_foreach_mul_(g.exp_avgs, h.beta1);
    at::_foreach_add_(g.exp_avgs, grads, 1 - h.beta1);
    at::_foreach_mul_(g.exp_avg_sqs, h.beta2);
    at::_foreach_addcmul_(g.exp_avg_sqs, grads, grads, 1 - h.beta2);
    std::vector<at::Tensor> denom = at::_foreach_sqrt(g.exp_avg_sqs);
    at::_foreach_div_(denom, std::sqrt(bias2));
    at::_foreach_add_(denom, h.eps);
    at::_foreach_addcdiv_(g.params, g.exp_avgs, denom, -h.lr / bias1);
  }
}

}  // namespace

void multi_tensor_adam_step(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters) {
  if (!multi_tensor_adam_supported(optimizer, parameters)) {
    throw std::invalid_argument(
        "multi_tensor_adam_step: needs an Adam or AdamW optimizer (one parameter group, no amsgrad) over dense "
        "floating parameters of one dtype on one device");
  }
  at::NoGradGuard no_grad;
  const auto [h, decoupled] = *plain_adam(optimizer);
  if (decoupled) {
    multi_tensor_step_all<torch::optim::AdamWParamState>(optimizer, parameters, h, true);
  } else {
    multi_tensor_step_all<torch::optim::AdamParamState>(optimizer, parameters, h, false);
  }
}

void exponential_moving_average(const std::vector<at::Tensor>& ema, const std::vector<at::Tensor>& values, double decay) {
  if (ema.size() != values.size()) {
    throw std::invalid_argument("exponential_moving_average: " + std::to_string(ema.size()) + " averages for " +
                                std::to_string(values.size()) + " tensors");
  }
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> rest_ema, rest_values;  // averaged together by ATen's multi-tensor operations
  for (size_t i = 0; i < ema.size(); ++i) {
    const at::Tensor& a = ema[i];
    const at::Tensor& x = values[i];
    if (a.sizes() != x.sizes()) {
      throw std::invalid_argument("exponential_moving_average: average " + c10::str(a.sizes()) + " and tensor " +
                                  c10::str(x.sizes()) + " differ in shape");
    }
    if (plain_float_cpu(a) && plain_float_cpu(x)) {
      const float d = static_cast<float>(decay), rest = static_cast<float>(1 - decay);
      float* __restrict out = a.data_ptr<float>();
      const float* __restrict in = x.data_ptr<float>();
      for (int64_t k = 0, n = a.numel(); k < n; ++k) out[k] = out[k] * d + rest * in[k];
    } else {
      rest_ema.push_back(a);
      rest_values.push_back(x.detach());
    }
  }
  if (!rest_ema.empty()) {
    at::_foreach_mul_(rest_ema, decay);
    at::_foreach_add_(rest_ema, rest_values, 1 - decay);
  }
}

}  // namespace flowmatch
