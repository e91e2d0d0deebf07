#include "flowmatch/models/selu.h"

#include <cstdint>

#include <ATen/ATen.h>
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

__attribute__((target("avx2,fma"))) void selu_avx2(float* data, int64_t count) {
  const __m256 zero = _mm256_setzero_ps(), lowest = _mm256_set1_ps(-87.3f);
  const __m256 scale = _mm256_set1_ps(kScale), negative_scale = _mm256_set1_ps(kScale * kAlpha);
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t k = 0;
  for (; k + 8 <= count; k += 8) {
    const __m256 x = _mm256_loadu_ps(data + k);
    const __m256 positive = _mm256_cmp_ps(x, zero, _CMP_GT_OQ);
    // Both branches for every lane, no jump (mixed signs would mispredict half the time).
    const __m256 clamped = _mm256_max_ps(_mm256_min_ps(x, zero), lowest);
    const __m256 negative = _mm256_mul_ps(_mm256_sub_ps(exp_nonpositive(clamped), one), negative_scale);
    __m256 out = _mm256_blendv_ps(negative, _mm256_mul_ps(x, scale), positive);
    out = _mm256_blendv_ps(out, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));  // NaN in, NaN out
    _mm256_storeu_ps(data + k, out);
  }
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

}  // namespace flowmatch::models
