#include "flowmatch/von_mises_fisher_mixture.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/StringUtil.h>
#include <nlohmann/json.hpp>

namespace flowmatch {

namespace {
constexpr double kMinKappa = 1e-8;  // κ = 0 is the uniform density; the floor keeps log κ finite.

// The shortest form that reads back to the same double.
std::string number(double x) { return nlohmann::json(x).dump(); }

// log(κ / (4π sinh κ)) per component, stable for small and large κ (κ below the floor is the floor:
// the density is then 1/(4π) to 1e-8).
at::Tensor log_normaliser(const at::Tensor& kappa) {
  const at::Tensor k = kappa.clamp_min(kMinKappa);
  return at::log(k) - std::log(2 * M_PI) - k - at::log(-at::expm1(-2 * k));
}

// log w_k + log C(κ_k) + κ_k μ_k·x: (N, K).
at::Tensor component_log_terms(const VonMisesFisherMixture& m, const at::Tensor& x) {
  return at::matmul(x, m.means.t()) * m.kappas.unsqueeze(0) + (at::log(m.weights) + log_normaliser(m.kappas)).unsqueeze(0);
}

// A(κ) = coth κ − 1/κ and its derivative 1/κ² − 1/sinh² κ, by their Taylor series below 0.1, where
// the differences cancel (the first term left out is below 1e-18 relative there; above 0.1 the
// cancellation costs less than 1e-13).
double mean_resultant(double k) {
  if (k < 0.1) {
    const double k2 = k * k;
    return k * (1.0 / 3 + k2 * (-1.0 / 45 + k2 * (2.0 / 945 + k2 * (-1.0 / 4725 + k2 * 2.0 / 93555))));
  }
  return 1 / std::tanh(k) - 1 / k;
}
double mean_resultant_derivative(double k) {
  if (k < 0.1) {
    const double k2 = k * k;
    return 1.0 / 3 + k2 * (-1.0 / 15 + k2 * (2.0 / 189 + k2 * (-7.0 / 4725 + k2 * 18.0 / 93555)));
  }
  const double s = std::sinh(k);
  return 1 / (k * k) - (std::isfinite(s) ? 1 / (s * s) : 0.0);
}
}  // namespace

double von_mises_fisher_kappa(double r) {
  if (!(r >= 0) || !(r < 1)) throw std::invalid_argument("mean resultant length " + number(r) + ": expected a number in [0, 1)");
  if (r == 0) return 0;
  double k = r * (3 - r * r) / (1 - r * r);  // Banerjee et al. (2005), p = 3
  // Converged when A(κ) meets r to rounding or the step is below 1e-12 relative.
  for (int i = 0; i < 50; ++i) {
    const double a = mean_resultant(k);
    if (std::abs(a - r) <= 4e-16 * r) break;
    double next = k - (a - r) / mean_resultant_derivative(k);
    if (!(next > 0)) next = k / 2;  // A is increasing and concave: Newton from the right never overshoots below 0 in practice
    const bool done = std::abs(next - k) <= 1e-12 * k;
    k = next;
    if (done) break;
  }
  return k;
}

void VonMisesFisherMixture::check() const {
  if (!weights.defined() || !means.defined() || !kappas.defined()) throw std::invalid_argument("von Mises-Fisher mixture: weights, means and kappas are required");
  const int64_t k = weights.numel();
  if (weights.dim() != 1 || k < 1 || means.dim() != 2 || means.size(0) != k || means.size(1) != 3 || kappas.dim() != 1 || kappas.size(0) != k) {
    throw std::invalid_argument("von Mises-Fisher mixture: expected weights (K), means (K, 3) and kappas (K) for one K on S^2, got weights " +
                                c10::str(weights.sizes()) + ", means " + c10::str(means.sizes()) + " and kappas " + c10::str(kappas.sizes()));
  }
  const at::Tensor w = weights.to(at::kDouble), mu = means.to(at::kDouble), kap = kappas.to(at::kDouble);
  if (!(w.min().item<double>() > 0) || std::abs(w.sum().item<double>() - 1) > 1e-6) {
    throw std::invalid_argument("von Mises-Fisher mixture: the weights must be positive and sum to 1 (smallest " + number(w.min().item<double>()) +
                                ", sum " + number(w.sum().item<double>()) + ")");
  }
  const double off = (mu.norm(2, 1) - 1).abs().max().item<double>();
  if (!(off <= 1e-6)) throw std::invalid_argument("von Mises-Fisher mixture: a mean is not a unit vector (|norm - 1| = " + std::to_string(off) + ")");
  if (!(kap.min().item<double>() > 0) || !at::isfinite(kap).all().item<bool>()) {
    const int64_t bad = (~(kap > 0) | ~at::isfinite(kap)).to(at::kByte).argmax().item<int64_t>();
    throw std::invalid_argument("von Mises-Fisher mixture: the concentrations must be positive and finite, got kappa " +
                                number(kap[bad].item<double>()) + " for component " + std::to_string(bad));
  }
}

at::Tensor VonMisesFisherMixture::log_density(const at::Tensor& x) const {
  if (x.dim() != 2 || x.size(1) != 3) throw std::invalid_argument("von Mises-Fisher mixture: expected unit vectors (N, 3), got " + c10::str(x.sizes()));
  VonMisesFisherMixture d{weights.to(at::kDouble).to(x.device()), means.to(at::kDouble).to(x.device()), kappas.to(at::kDouble).to(x.device())};
  return at::logsumexp(component_log_terms(d, x.to(at::kDouble)), 1);
}

at::Tensor VonMisesFisherMixture::sample(int64_t n, at::Generator& generator, const at::TensorOptions& options) const {
  if (n < 1) throw std::invalid_argument("number of samples must be >= 1, got " + std::to_string(n));
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor w = weights.to(at::kDouble).cpu(), mu = means.to(at::kDouble).cpu(), kap = kappas.to(at::kDouble).cpu();
  at::Tensor k = at::multinomial(w, n, /*replacement=*/true, generator);
  at::Tensor m = mu.index_select(0, k), kk = kap.index_select(0, k).unsqueeze(1).clamp_min(kMinKappa);
  at::Tensor u = at::rand({n, 1}, generator, cpu), phi = at::rand({n, 1}, generator, cpu) * (2 * M_PI);
  // Wood (1994) for S²: the height along μ by inversion, log1p/expm1 keep it exact for small and large κ.
  at::Tensor h = (1 + at::log1p((1 - u) * at::expm1(-2 * kk)) / kk).clamp(-1, 1);
  // An orthonormal pair (e1, e2) perpendicular to μ: e1 from the axis least aligned with μ.
  at::Tensor ex = at::zeros_like(m), ey = at::zeros_like(m);
  ex.select(1, 0).fill_(1);
  ey.select(1, 1).fill_(1);
  at::Tensor a = at::where(m.select(1, 0).abs().unsqueeze(1) < 0.9, ex, ey);
  at::Tensor e1 = a - (a * m).sum(1, true) * m;
  e1 = e1 / e1.norm(2, 1, true);
  at::Tensor e2 = at::cross(m, e1, 1);
  at::Tensor x = h * m + at::sqrt((1 - h.square()).clamp_min(0)) * (at::cos(phi) * e1 + at::sin(phi) * e2);
  x = x / x.norm(2, 1, true);
  return x.to(options);
}

nlohmann::json VonMisesFisherMixture::to_json() const {
  auto vec = [](const at::Tensor& t) {
    const at::Tensor c = t.to(at::kDouble).cpu().contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  nlohmann::json means_json = nlohmann::json::array();
  const std::vector<double> mu = vec(means);
  for (size_t i = 0; i + 2 < mu.size(); i += 3) means_json.push_back({mu[i], mu[i + 1], mu[i + 2]});
  return {{"weights", vec(weights)}, {"means", means_json}, {"kappas", vec(kappas)}};
}

VonMisesFisherMixture VonMisesFisherMixture::from_json(const nlohmann::json& j) {
  auto field = [&](const char* name) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(name) || !j[name].is_array()) {
      throw std::invalid_argument(std::string("von Mises-Fisher mixture: no array '") + name + "' in " + j.dump().substr(0, 200));
    }
    return j[name];
  };
  auto numbers = [](const nlohmann::json& a, const char* name) {
    std::vector<double> v;
    for (const auto& e : a) {
      if (!e.is_number()) throw std::invalid_argument(std::string("von Mises-Fisher mixture: '") + name + "' holds " + e.dump() + ", not a number");
      v.push_back(e.get<double>());
    }
    return v;
  };
  std::vector<double> mu;
  for (const auto& row : field("means")) {
    if (!row.is_array() || row.size() != 3) throw std::invalid_argument("von Mises-Fisher mixture: a mean is " + row.dump() + ", not [x, y, z]");
    for (double c : numbers(row, "means")) mu.push_back(c);
  }
  VonMisesFisherMixture m;
  m.weights = at::tensor(numbers(field("weights"), "weights"), at::kDouble);
  m.kappas = at::tensor(numbers(field("kappas"), "kappas"), at::kDouble);
  m.means = at::tensor(mu, at::kDouble).reshape({-1, 3});
  m.check();
  return m;
}

VonMisesFisherMixture fit_von_mises_fisher_mixture(const at::Tensor& points, int64_t components, int64_t iterations,
                                                   at::Generator& generator, double max_kappa) {
  if (points.dim() != 2 || points.size(1) != 3) throw std::invalid_argument("von Mises-Fisher mixture: expected unit vectors (N, 3), got " + c10::str(points.sizes()));
  if (components < 1 || points.size(0) < components) {
    throw std::invalid_argument("von Mises-Fisher mixture: need 1 <= K <= rows, got K = " + std::to_string(components) + " for " +
                                std::to_string(points.size(0)) + " rows");
  }
  if (iterations < 0) throw std::invalid_argument("von Mises-Fisher mixture: iterations must be >= 0, got " + std::to_string(iterations));
  if (!(max_kappa >= kMinKappa)) throw std::invalid_argument("von Mises-Fisher mixture: max_kappa must be >= 1e-8, got " + number(max_kappa));
  const at::Tensor x = points.to(at::kDouble).cpu().contiguous();
  const int64_t n = x.size(0);
  // k-means++ seeding: each next mean is a row drawn with probability ∝ its cosine distance to the
  // nearest mean so far (far-apart starts: EM then rarely merges two clusters into one component).
  std::vector<int64_t> picks{at::randint(n, {1}, generator, at::kLong).item<int64_t>()};
  at::Tensor nearest = 1 - at::matmul(x, x[picks[0]]);
  for (int64_t k = 1; k < components; ++k) {
    at::Tensor p = nearest.clamp_min(0);
    const int64_t next = p.sum().item<double>() > 0 ? at::multinomial(p, 1, false, generator).item<int64_t>()
                                                     : at::randint(n, {1}, generator, at::kLong).item<int64_t>();
    picks.push_back(next);
    nearest = at::minimum(nearest, 1 - at::matmul(x, x[next]));
  }
  VonMisesFisherMixture m;
  m.means = x.index_select(0, at::tensor(picks, at::kLong)).clone();
  m.kappas = at::full({components}, 10.0, at::kDouble);
  m.weights = at::full({components}, 1.0 / static_cast<double>(components), at::kDouble);
  for (int64_t it = 0; it < iterations; ++it) {
    at::Tensor r = at::softmax(component_log_terms(m, x), 1);  // (N, K) responsibilities
    at::Tensor nk = r.sum(0);                                   // (K)
    at::Tensor s = at::matmul(r.t(), x);                        // (K, 3)
    at::Tensor len = s.norm(2, 1);
    // A component that lost its points keeps its mean and κ, with a vanishing weight; one whose
    // points cancel (resultant ≈ 0) keeps its mean and gets κ from r̄ ≈ 0, i.e. the floor.
    m.means = at::where((len > 1e-12).unsqueeze(1), s / len.clamp_min(1e-300).unsqueeze(1), m.means);
    at::Tensor rbar = (len / nk.clamp_min(1e-300)).clamp(0, 1 - 1e-15);
    std::vector<double> kap(components);
    auto rb = rbar.accessor<double, 1>();
    auto old = m.kappas.accessor<double, 1>();
    auto mass = nk.accessor<double, 1>();
    for (int64_t k = 0; k < components; ++k) {
      kap[k] = mass[k] > 1e-12 ? std::clamp(von_mises_fisher_kappa(rb[k]), kMinKappa, max_kappa) : old[k];
    }
    m.kappas = at::tensor(kap, at::kDouble);
    at::Tensor w = nk.clamp_min(1e-12);
    m.weights = w / w.sum();
  }
  return m;
}

}  // namespace flowmatch
