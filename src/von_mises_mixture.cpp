#include "flowmatch/von_mises_mixture.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>

namespace flowmatch {

namespace {
// log Σ_k w_k Π_j vM(θ_j; μ_kj, κ_kj), and the per-component terms (N, K).
at::Tensor component_log_terms(const VonMisesMixture& m, const at::Tensor& x) {
  at::Tensor diff = x.unsqueeze(1) - m.means.unsqueeze(0);                       // (N, K, d)
  at::Tensor log_i0 = at::log(at::special_i0e(m.kappas)) + m.kappas;              // (K, d)
  at::Tensor per = m.kappas.unsqueeze(0) * at::cos(diff) - (std::log(2 * M_PI) + log_i0).unsqueeze(0);
  return per.sum(2) + at::log(m.weights).unsqueeze(0);                            // (N, K)
}
}  // namespace

at::Tensor VonMisesMixture::log_density(const at::Tensor& angles) const {
  return at::logsumexp(component_log_terms(*this, angles.to(at::kDouble)), 1);
}

VonMisesMixture fit_von_mises_mixture(const at::Tensor& angles, int64_t components, int64_t iterations, at::Generator& generator) {
  if (angles.dim() != 2) throw std::invalid_argument("von Mises mixture: angles must be (N, d)");
  if (components < 1 || angles.size(0) < components) {
    throw std::invalid_argument("von Mises mixture: need 1 <= K <= rows, got K = " + std::to_string(components) + " for " +
                                std::to_string(angles.size(0)) + " rows");
  }
  if (iterations < 0) throw std::invalid_argument("von Mises mixture: iterations must be >= 0");
  const at::Tensor x = angles.to(at::kDouble);
  VonMisesMixture m;
  m.means = x.index_select(0, at::randperm(x.size(0), generator, at::kLong).slice(0, 0, components)).clone();
  m.kappas = at::ones({components, x.size(1)}, at::kDouble);
  m.weights = at::full({components}, 1.0 / static_cast<double>(components), at::kDouble);
  const at::Tensor c = at::cos(x), s = at::sin(x);
  for (int64_t it = 0; it < iterations; ++it) {
    at::Tensor r = at::softmax(component_log_terms(m, x), 1);  // (N, K) responsibilities
    at::Tensor nk = r.sum(0).clamp_min(1e-12);                 // (K)
    m.weights = nk / nk.sum();
    at::Tensor sc = at::matmul(r.t(), c), ss = at::matmul(r.t(), s);  // (K, d)
    m.means = at::atan2(ss, sc);
    at::Tensor rbar = (at::sqrt(sc.square() + ss.square()) / nk.unsqueeze(1)).clamp(0, 1 - 1e-9);
    m.kappas = (rbar * (2 - rbar.square()) / (1 - rbar.square())).clamp(0, 500);
  }
  return m;
}

}  // namespace flowmatch
