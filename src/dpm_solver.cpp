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

// One step of a grid: the coefficients at s = t_k and t = t_(k+1), the data prediction D at s and
// h = λ_t − λ_s (infinite where α_s = 0 or σ_t = 0).
struct GridStep {
  size_t k;
  bool last;
  double alpha_s, sigma_s, alpha_t, sigma_t, h;
};

// The loop both samplers share: evaluate the field at each grid time, form D, call `step` for the
// next state, project onto the manifold when there is one, record the trajectory.
template <class Step>
SolveResult run_grid(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0, const SolverOptions& options,
                     Step&& step) {
  const std::vector<double> grid = forward_grid(options);
  const SchedulerValues c = scheduler(at::tensor(grid, at::kDouble));
  const auto alpha = c.alpha.accessor<double, 1>(), sigma = c.sigma.accessor<double, 1>();
  const auto d_alpha = c.d_alpha.accessor<double, 1>(), d_sigma = c.d_sigma.accessor<double, 1>();
  SolveResult result;
  at::Tensor x = x0;
  if (options.record_trajectory()) {
    result.trajectory.push_back(x.clone());
    result.times.push_back(grid[0]);
  }
  for (size_t k = 0; k + 1 < grid.size(); ++k) {
    at::Tensor v = field(x, at::full({}, grid[k], x.options()));
    ++result.nfe;
    const at::Tensor d = data_prediction(x, v, alpha[k], sigma[k], d_alpha[k], d_sigma[k], grid[k]);
    const GridStep g{k, k + 2 == grid.size(), alpha[k], sigma[k], alpha[k + 1], sigma[k + 1],
                     log_snr(alpha[k + 1], sigma[k + 1]) - log_snr(alpha[k], sigma[k])};
    x = step(g, x, d);
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

}  // namespace

SolveResult solve_exponential_integrator(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0,
                                         const SolverOptions& options, int order) {
  if (!field) throw std::invalid_argument("exponential integrator: the velocity field is empty");
  if (order != 1 && order != 2) throw std::invalid_argument("exponential integrator: order must be 1 (ddim) or 2 (dpm-solver++), got " + std::to_string(order));
  at::Tensor previous_d;
  double previous_h = std::numeric_limits<double>::infinity();
  return run_grid(field, scheduler, x0, options, [&](const GridStep& g, const at::Tensor& x, const at::Tensor& d) {
    const double decay = std::isfinite(g.h) ? -std::expm1(-g.h) : 1.0;  // 1 − e^(−h)
    at::Tensor direction = d;
    // Second order from the second step on, except the last (DPM-Solver's lower_order_final: where σ → 0
    // the last step spans an unbounded λ interval and the multistep extrapolation would blow up).
    if (order == 2 && !g.last && previous_d.defined() && std::isfinite(previous_h) && std::isfinite(g.h)) {
      const double r = previous_h / g.h;
      direction = d * (1 + 0.5 / r) - previous_d * (0.5 / r);
    }
    previous_d = d;
    previous_h = g.h;
    const double keep = g.sigma_s > 0 ? g.sigma_t / g.sigma_s : 0.0;
    return x * keep + direction * (g.alpha_t * decay);
  });
}

SolveResult solve_ancestral(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0, const SolverOptions& options) {
  if (!field) throw std::invalid_argument("ancestral: the velocity field is empty");
  const double eta = options.noise_scale();
  if (!(eta >= 0) || !std::isfinite(eta)) throw std::invalid_argument("ancestral: eta (--sde-noise) must be finite and >= 0, got " + std::to_string(eta));
  at::Generator generator = options.generator() ? *options.generator() : at::make_generator<at::CPUGeneratorImpl>(0);
  return run_grid(field, scheduler, x0, options, [&](const GridStep& g, const at::Tensor& x, const at::Tensor& d) {
    const double fresh = std::isfinite(g.h) ? -std::expm1(-2 * g.h) : 1.0;  // 1 − e^(−2h), e^(−h) = α_s σ_t/(α_t σ_s)
    const double noise = eta * g.sigma_t * std::sqrt(std::max(0.0, fresh));
    const double keep_noise = std::sqrt(std::max(0.0, g.sigma_t * g.sigma_t - noise * noise));
    at::Tensor next = d * g.alpha_t;
    if (g.sigma_s > 0 && keep_noise > 0) next = next + (x - d * g.alpha_s) * (keep_noise / g.sigma_s);  // √(σ_t² − c²)·ε̂
    if (noise > 0) next = next + at::randn(x.sizes(), generator, x.options().device(at::kCPU)).to(x.device()) * noise;
    return next;
  });
}

}  // namespace flowmatch
