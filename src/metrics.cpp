#include "flowmatch/metrics.h"

#include <cmath>
#include <numeric>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include "flowmatch/assignment.h"
#include "flowmatch/transport.h"

namespace flowmatch::metrics {

double wasserstein2(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.defined() && b.defined() && a.dim() == 2 && b.dim() == 2,
              "wasserstein2: expects two 2-D tensors (n, D), got ",
              a.defined() ? a.sizes() : at::IntArrayRef{}, " and ",
              b.defined() ? b.sizes() : at::IntArrayRef{});
  TORCH_CHECK(a.size(1) == b.size(1), "wasserstein2: dimensions differ (", a.size(1), " vs ",
              b.size(1), ")");
  TORCH_CHECK(a.size(0) > 0 && b.size(0) > 0, "wasserstein2: empty point set");
  at::Tensor ad = a.to(at::kCPU, at::kDouble).contiguous();
  at::Tensor bd = b.to(at::kCPU, at::kDouble).contiguous();
  TORCH_CHECK(at::isfinite(ad).all().item<bool>(), "wasserstein2: first point set has NaN or Inf");
  TORCH_CHECK(at::isfinite(bd).all().item<bool>(), "wasserstein2: second point set has NaN or Inf");
  at::Tensor cost = squared_distances(ad, bd).contiguous();
  double mean_cost;
  if (a.size(0) == b.size(0)) {
    mean_cost = solve_assignment(cost).total_cost / static_cast<double>(a.size(0));
  } else {
    mean_cost = exact_transport(cost).cost;  // LEMON network simplex, exact
  }
  return std::sqrt(std::max(mean_cost, 0.0));
}

TrajectoryMetrics trajectory_metrics(const VelocityField& field, const at::Tensor& x0, const at::Tensor& target,
                                     const TrajectoryMetricsOptions& options) {
  TORCH_CHECK(x0.defined() && x0.dim() == 2 && x0.size(0) > 0, "trajectory_metrics: x0 must be (n, D), got ",
              x0.defined() ? x0.sizes() : at::IntArrayRef{});
  if (options.method() == SolverMethod::Dopri5) {
    throw std::invalid_argument("trajectory_metrics: needs a fixed-step method (euler, midpoint, heun, rk4), got dopri5");
  }
  if (options.steps() < 1) {
    throw std::invalid_argument("trajectory_metrics: steps must be >= 1, got " + std::to_string(options.steps()));
  }
  at::NoGradGuard no_grad;
  TrajectoryMetrics out;
  out.w2_squared = std::pow(wasserstein2(x0.to(at::kCPU), target.to(at::kCPU)), 2);
  auto solved = solve_ode(field, x0, SolverOptions().method(options.method()).steps(options.steps()).record_trajectory(true));
  out.x1 = solved.x;
  out.nfe = solved.nfe;
  at::Tensor start = solved.trajectory.front().to(at::kDouble);
  at::Tensor chord = solved.x.to(at::kDouble) - start;  // X₁ − X₀ per sample
  const size_t points = solved.trajectory.size();
  double energy = 0, straightness = 0;
  for (size_t k = 0; k < points; ++k) {
    const double t = solved.times[k];
    at::Tensor v = field(solved.trajectory[k], at::scalar_tensor(t, x0.options())).to(at::kDouble);
    ++out.nfe;
    const double h = k == 0 ? solved.times[1] - solved.times[0]
                 : k + 1 == points ? solved.times[k] - solved.times[k - 1]
                                   : solved.times[k + 1] - solved.times[k - 1];
    const double weight = 0.5 * h;  // trapezoidal rule on the (uniform or not) grid
    energy += weight * v.square().sum(1).mean().item<double>();
    straightness += weight * (chord - v).square().sum(1).mean().item<double>();
  }
  out.path_energy = energy;
  out.straightness = straightness;
  out.normalized_path_energy = out.w2_squared > 0 ? std::abs(energy - out.w2_squared) / out.w2_squared : INFINITY;
  return out;
}

GaussianStatistics gaussian_statistics(const at::Tensor& features) {
  TORCH_CHECK(features.dim() == 2 && features.size(0) >= 2 && features.size(1) >= 1,
              "gaussian_statistics: expected features of shape (N >= 2, D >= 1), got ", features.sizes());
  at::Tensor f = features.to(at::kCPU, at::kDouble);
  TORCH_CHECK(at::isfinite(f).all().item<bool>(), "gaussian_statistics: features contain NaN or Inf");
  at::Tensor mean = f.mean(0);
  at::Tensor centred = f - mean;
  return {mean, centred.t().mm(centred) / static_cast<double>(f.size(0) - 1)};
}

namespace {
at::Tensor symmetric_sqrt(const at::Tensor& m) {
  auto [values, vectors] = at::linalg_eigh((m + m.t()) * 0.5);
  return vectors.mm(at::diag(values.clamp_min(0).sqrt())).mm(vectors.t());
}
}  // namespace

double frechet_distance(const GaussianStatistics& a, const GaussianStatistics& b) {
  TORCH_CHECK(a.mean.dim() == 1 && b.mean.dim() == 1 && a.mean.size(0) == b.mean.size(0) && a.covariance.dim() == 2 &&
                  b.covariance.dim() == 2 && a.covariance.size(0) == a.mean.size(0) && a.covariance.size(1) == a.mean.size(0) &&
                  b.covariance.sizes().equals(a.covariance.sizes()),
              "frechet_distance: statistics of different or inconsistent dimensions (means ", a.mean.sizes(), " and ",
              b.mean.sizes(), ", covariances ", a.covariance.sizes(), " and ", b.covariance.sizes(), ")");
  at::Tensor ma = a.mean.to(at::kDouble), mb = b.mean.to(at::kDouble);
  at::Tensor ca = a.covariance.to(at::kDouble), cb = b.covariance.to(at::kDouble);
  at::Tensor root_a = symmetric_sqrt(ca);
  at::Tensor cross = symmetric_sqrt(root_a.mm(cb).mm(root_a));
  return (ma - mb).pow(2).sum().item<double>() + ca.trace().item<double>() + cb.trace().item<double>() -
         2.0 * cross.trace().item<double>();
}

double frechet_distance(const at::Tensor& features_a, const at::Tensor& features_b) {
  return frechet_distance(gaussian_statistics(features_a), gaussian_statistics(features_b));
}

double rbf_mmd2(const at::Tensor& a, const at::Tensor& b, const std::vector<double>& sigmas) {
  if (!a.defined() || !b.defined() || a.dim() != 2 || b.dim() != 2 || a.size(1) != b.size(1) || a.size(0) < 1 || b.size(0) < 1) {
    throw std::invalid_argument("rbf_mmd2 needs two non-empty (n, D) point sets of one dimension");
  }
  if (sigmas.empty()) throw std::invalid_argument("rbf_mmd2 needs at least one bandwidth");
  for (double s : sigmas)
    if (!(s > 0) || !std::isfinite(s)) throw std::invalid_argument("rbf_mmd2: bandwidth " + std::to_string(s) + " is not > 0");
  const at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  auto kernel_mean = [&](const at::Tensor& p, const at::Tensor& q) {
    const at::Tensor d2 = at::cdist(p, q).square();
    double total = 0;
    for (double s : sigmas) total += at::exp(d2 * (-1.0 / (2 * s * s))).mean().item<double>();
    return total;
  };
  return kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y);
}

}  // namespace flowmatch::metrics
