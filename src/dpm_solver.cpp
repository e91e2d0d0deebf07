#include "flowmatch/dpm_solver.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "flowmatch/schedulers.h"

namespace flowmatch {

namespace {

// The solver's grid (solvers.h's time_grid), forward within [0, 1].
std::vector<double> forward_grid(const SolverOptions& options) {
  std::vector<double> grid = time_grid(options);
  if (grid.front() < 0 || grid.back() > 1 || grid.back() < grid.front()) {
    throw std::invalid_argument("ddim, dpm-solver++ and ancestral integrate forward in time within [0, 1], got " +
                                std::to_string(grid.front()) + " to " + std::to_string(grid.back()));
  }
  return grid;
}

double log_snr(double alpha, double sigma) {
  if (alpha <= 0) return -std::numeric_limits<double>::infinity();
  if (sigma <= 0) return std::numeric_limits<double>::infinity();
  return std::log(alpha / sigma);
}

// D = x̂₁ from the velocity: (σ v − σ̇ x)/(α̇ σ − σ̇ α), the denominator checked.
at::Tensor data_prediction(const at::Tensor& x, const at::Tensor& v, double alpha, double sigma, double d_alpha, double d_sigma, double t) {
  const double det = d_alpha * sigma - d_sigma * alpha;
  if (!(det > 0) || !std::isfinite(det)) {
    throw std::invalid_argument("ddim/dpm-solver++/ancestral: the scheduler has alpha' sigma - sigma' alpha = " + std::to_string(det) +
                                " at t = " + std::to_string(t) + " (expected > 0)");
  }
  return (v * sigma - x * d_sigma) / det;
}

}  // namespace

SolveResult solve_exponential_integrator(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0,
                                         const SolverOptions& options, int order) {
  if (!field) throw std::invalid_argument("exponential integrator: the velocity field is empty");
  if (order != 1 && order != 2) throw std::invalid_argument("exponential integrator: order must be 1 (ddim) or 2 (dpm-solver++), got " + std::to_string(order));
  const std::vector<double> grid = forward_grid(options);
  const SchedulerValues c = scheduler(at::tensor(grid, at::kDouble));
  const auto alpha = c.alpha.accessor<double, 1>(), sigma = c.sigma.accessor<double, 1>();
  const auto d_alpha = c.d_alpha.accessor<double, 1>(), d_sigma = c.d_sigma.accessor<double, 1>();
  const double inf = std::numeric_limits<double>::infinity();
  auto lambda = [&](size_t k) { return log_snr(alpha[k], sigma[k]); };
  SolveResult result;
  at::Tensor x = x0;
  if (options.record_trajectory()) {
    result.trajectory.push_back(x.clone());
    result.times.push_back(grid[0]);
  }
  at::Tensor previous_d;
  double previous_h = inf;
  for (size_t k = 0; k + 1 < grid.size(); ++k) {
    at::Tensor v = field(x, at::full({}, grid[k], x.options()));
    ++result.nfe;
    at::Tensor d = data_prediction(x, v, alpha[k], sigma[k], d_alpha[k], d_sigma[k], grid[k]);
    const double h = lambda(k + 1) - lambda(k);            // > 0; infinite at either end
    const double decay = std::isfinite(h) ? -std::expm1(-h) : 1.0;  // 1 − e^(−h)
    at::Tensor direction = d;
    // Second order from the second step on, except the last (DPM-Solver's lower_order_final: where σ → 0
    // the last step spans an unbounded λ interval and the multistep extrapolation would blow up).
    const bool last = k + 2 == grid.size();
    if (order == 2 && !last && previous_d.defined() && std::isfinite(previous_h) && std::isfinite(h)) {
      const double r = previous_h / h;
      direction = d * (1 + 0.5 / r) - previous_d * (0.5 / r);
    }
    const double keep = sigma[k] > 0 ? sigma[k + 1] / sigma[k] : 0.0;
    x = x * keep + direction * (alpha[k + 1] * decay);
    if (options.manifold()) x = options.manifold()->project(x);
    previous_d = d;
    previous_h = h;
    if (options.record_trajectory()) {
      result.trajectory.push_back(x.clone());
      result.times.push_back(grid[k + 1]);
    }
  }
  result.x = x;
  result.steps = static_cast<int64_t>(grid.size()) - 1;
  return result;
}

SolveResult solve_ancestral(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0, const SolverOptions& options) {
  if (!field) throw std::invalid_argument("ancestral: the velocity field is empty");
  const double eta = options.noise_scale();
  if (!(eta >= 0) || !std::isfinite(eta)) throw std::invalid_argument("ancestral: eta (--sde-noise) must be finite and >= 0, got " + std::to_string(eta));
  const std::vector<double> grid = forward_grid(options);
  const SchedulerValues c = scheduler(at::tensor(grid, at::kDouble));
  const auto alpha = c.alpha.accessor<double, 1>(), sigma = c.sigma.accessor<double, 1>();
  const auto d_alpha = c.d_alpha.accessor<double, 1>(), d_sigma = c.d_sigma.accessor<double, 1>();
  at::Generator generator = options.generator() ? *options.generator() : at::make_generator<at::CPUGeneratorImpl>(0);
  SolveResult result;
  at::Tensor x = x0;
  if (options.record_trajectory()) {
    result.trajectory.push_back(x.clone());
    result.times.push_back(grid[0]);
  }
  for (size_t k = 0; k + 1 < grid.size(); ++k) {
    at::Tensor v = field(x, at::full({}, grid[k], x.options()));
    ++result.nfe;
    at::Tensor d = data_prediction(x, v, alpha[k], sigma[k], d_alpha[k], d_sigma[k], grid[k]);
    const double h = log_snr(alpha[k + 1], sigma[k + 1]) - log_snr(alpha[k], sigma[k]);
    const double fresh = std::isfinite(h) ? -std::expm1(-2 * h) : 1.0;  // 1 − e^(−2h), e^(−h) = α_s σ_t/(α_t σ_s)
    const double noise = eta * sigma[k + 1] * std::sqrt(std::max(0.0, fresh));
    const double keep_noise = std::sqrt(std::max(0.0, sigma[k + 1] * sigma[k + 1] - noise * noise));
    at::Tensor next = d * alpha[k + 1];
    if (sigma[k] > 0 && keep_noise > 0) next = next + (x - d * alpha[k]) * (keep_noise / sigma[k]);  // √(σ_t² − c²)·ε̂
    if (noise > 0) {
      at::Tensor z = at::randn(x.sizes(), generator, x.options().device(at::kCPU)).to(x.device());
      next = next + z * noise;
    }
    x = next;
    if (options.manifold()) x = options.manifold()->project(x);
    if (options.record_trajectory()) {
      result.trajectory.push_back(x.clone());
      result.times.push_back(grid[k + 1]);
    }
  }
  result.x = x;
  result.steps = static_cast<int64_t>(grid.size()) - 1;
  return result;
}

}  // namespace flowmatch
