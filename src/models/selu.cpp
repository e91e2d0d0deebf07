#include "flowmatch/models/selu.h"

#include <cstdint>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FLOWMATCH_SELU_AVX2 1
#endif

namespace flowmatch::models {

namespace {

constexpr float kAlpha = 1.6732632423543772848170429916717f;
constexpr float kScale = 1.0507009873554804934193349852946f;

#ifdef FLOWMATCH_SELU_AVX2
// exp(x) for x in [−87.3, 0] (Cephes expf): n = round(x·log2 e), r = x − n·ln 2 in two parts, a
// degree-6 polynomial for e^r on |r| ≤ ln2/2, then 2^n through the exponent bits.
__attribute__((target("avx2,fma"))) inline __m256 exp_nonpositive(__m256 x) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), bits));
}

// SELU of 8 lanes: both branches for every lane, no jump (mixed signs would mispredict half the time).
// NaN in, NaN out without a test: min/max return their second operand when either is NaN, so the
// clamped value is NaN, and so is its exponential and the negative branch that NaN selects.
__attribute__((target("avx2,fma"))) inline __m256 selu8(__m256 x) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 positive = _mm256_cmp_ps(x, zero, _CMP_GT_OQ);
  const __m256 clamped = _mm256_max_ps(_mm256_set1_ps(-87.3f), _mm256_min_ps(zero, x));
  // λα(eˣ − 1) as one fused multiply-add: λα·eˣ − λα.
  const __m256 negative_scale = _mm256_set1_ps(kScale * kAlpha);
  const __m256 negative = _mm256_fmsub_ps(exp_nonpositive(clamped), negative_scale, negative_scale);
  return _mm256_blendv_ps(negative, _mm256_mul_ps(x, _mm256_set1_ps(kScale)), positive);
}

// out (rows × cols, cols a multiple of 8) ← SELU(x · w + bias) for a narrow x (rows × k, k ≤ 8) and
// w (k × cols): the products, the bias and the activation in one pass over out.
__attribute__((target("avx2,fma"))) void linear_selu_avx2(const float* x, const float* w, const float* bias, float* out,
                                                          int64_t rows, int64_t k, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * k;
    float* row = out + r * cols;
    for (int64_t c = 0; c < cols; c += 8) {
      __m256 acc = _mm256_loadu_ps(bias + c);
      for (int64_t i = 0; i < k; ++i) acc = _mm256_fmadd_ps(_mm256_set1_ps(xr[i]), _mm256_loadu_ps(w + i * cols + c), acc);
      _mm256_storeu_ps(row + c, selu8(acc));
    }
  }
}

// rows × cols (cols a multiple of 8): x ← SELU(x + bias), one pass.
__attribute__((target("avx2,fma"))) void bias_selu_avx2(float* data, const float* bias, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = data + r * cols;
    for (int64_t k = 0; k < cols; k += 8) {
      _mm256_storeu_ps(row + k, selu8(_mm256_add_ps(_mm256_loadu_ps(row + k), _mm256_loadu_ps(bias + k))));
    }
  }
}

// out (rows × k, k ≤ 8) ← SELU(x + bias) · wᵀ + out_bias for x (rows × cols, cols a multiple of 8) and
// w (k × cols): each row's activation stays in registers for the k dot products and is not stored.
__attribute__((target("avx2,fma"))) void selu_linear_avx2(const float* x, const float* bias, const float* w,
                                                          const float* out_bias, float* out, int64_t rows, int64_t cols,
                                                          int64_t k) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    __m256 acc[8];
    for (int64_t d = 0; d < k; ++d) acc[d] = _mm256_setzero_ps();
    for (int64_t c = 0; c < cols; c += 8) {
      const __m256 a = selu8(_mm256_add_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(bias + c)));
      for (int64_t d = 0; d < k; ++d) acc[d] = _mm256_fmadd_ps(a, _mm256_loadu_ps(w + d * cols + c), acc[d]);
    }
    for (int64_t d = 0; d < k; ++d) {
      const __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc[d]), _mm256_extractf128_ps(acc[d], 1));
      const __m128 quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
      const __m128 one = _mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 1));
      out[r * k + d] = _mm_cvtss_f32(one) + out_bias[d];
    }
  }
}

__attribute__((target("avx2,fma"))) void selu_avx2(float* data, int64_t count) {
  int64_t k = 0;
  for (; k + 8 <= count; k += 8) _mm256_storeu_ps(data + k, selu8(_mm256_loadu_ps(data + k)));
  if (k < count) {
    float tail[8];
    const int64_t rest = count - k;
    for (int64_t i = 0; i < 8; ++i) tail[i] = i < rest ? data[k + i] : 0.0f;
    selu_avx2(tail, 8);
    for (int64_t i = 0; i < rest; ++i) data[k + i] = tail[i];
  }
}
#endif

}  // namespace

bool selu_vectorized() {
#ifdef FLOWMATCH_SELU_AVX2
  static const bool available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return available;
#else
  return false;
#endif
}

at::Tensor& selu_in_place(at::Tensor& x) {
#ifdef FLOWMATCH_SELU_AVX2
  if (selu_vectorized() && x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() &&
      !(x.requires_grad() && at::GradMode::is_enabled())) {
    selu_avx2(x.data_ptr<float>(), x.numel());
    return x;
  }
#endif
  return at::selu_(x);
}

void selu_of_linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && bias.dim() == 1 && weight.size(1) == x.size(1) &&
                  bias.size(0) == weight.size(0) && out.dim() == 2 && out.size(0) == x.size(0) &&
                  out.size(1) == weight.size(0),
              "selu_of_linear: shapes x ", x.sizes(), ", weight ", weight.sizes(), ", bias ", bias.sizes(), ", out ",
              out.sizes(), " do not fit out = SELU(x weight^T + bias)");
#ifdef FLOWMATCH_SELU_AVX2
  const auto plain = [](const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat; };
  if (selu_vectorized() && plain(x) && plain(weight) && plain(bias) && plain(out) && out.is_contiguous() &&
      x.size(1) <= 8 && out.size(1) % 8 == 0 && !at::GradMode::is_enabled()) {
    const at::Tensor xc = x.contiguous(), wt = weight.t().contiguous(), b = bias.contiguous();
    linear_selu_avx2(xc.data_ptr<float>(), wt.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), x.size(0),
                     x.size(1), out.size(1));
    return;
  }
#endif
  at::mm_out(out, x, weight.t());
  selu_in_place(out, bias);
}

void linear_of_selu(at::Tensor& out, const at::Tensor& x, const at::Tensor& bias, const at::Tensor& weight,
                    const at::Tensor& out_bias) {
  TORCH_CHECK(x.dim() == 2 && bias.dim() == 1 && bias.size(0) == x.size(1) && weight.dim() == 2 &&
                  weight.size(1) == x.size(1) && out_bias.dim() == 1 && out_bias.size(0) == weight.size(0) &&
                  out.dim() == 2 && out.size(0) == x.size(0) && out.size(1) == weight.size(0),
              "linear_of_selu: shapes x ", x.sizes(), ", bias ", bias.sizes(), ", weight ", weight.sizes(), ", out_bias ",
              out_bias.sizes(), ", out ", out.sizes(), " do not fit out = SELU(x + bias) weight^T + out_bias");
#ifdef FLOWMATCH_SELU_AVX2
  const auto plain = [](const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat; };
  if (selu_vectorized() && plain(x) && plain(bias) && plain(weight) && plain(out_bias) && plain(out) &&
      out.is_contiguous() && weight.size(0) <= 8 && x.size(1) % 8 == 0 && !at::GradMode::is_enabled()) {
    const at::Tensor xc = x.contiguous(), b = bias.contiguous(), w = weight.contiguous(), ob = out_bias.contiguous();
    selu_linear_avx2(xc.data_ptr<float>(), b.data_ptr<float>(), w.data_ptr<float>(), ob.data_ptr<float>(),
                     out.data_ptr<float>(), x.size(0), x.size(1), weight.size(0));
    return;
  }
#endif
  at::Tensor a = x.clone();
  selu_in_place(a, bias);
  at::addmm_out(out, out_bias, a, weight.t());
}

at::Tensor& selu_in_place(at::Tensor& x, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && bias.dim() == 1 && bias.size(0) == x.size(1), "selu_in_place: bias of shape ",
              bias.sizes(), " does not match x of shape ", x.sizes());
#ifdef FLOWMATCH_SELU_AVX2
  if (selu_vectorized() && x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() &&
      bias.device().is_cpu() && bias.scalar_type() == at::kFloat && bias.is_contiguous() && x.size(1) % 8 == 0 &&
      !(x.requires_grad() && at::GradMode::is_enabled())) {
    bias_selu_avx2(x.data_ptr<float>(), bias.data_ptr<float>(), x.size(0), x.size(1));
    return x;
  }
#endif
  x.add_(bias);
  return selu_in_place(x);
}

}  // namespace flowmatch::models
