#include "flowmatch/dpm_solver.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>

#include "flowmatch/schedulers.h"

namespace flowmatch {

SolveResult solve_exponential_integrator(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0,
                                         const SolverOptions& options, int order) {
  if (!field) throw std::invalid_argument("exponential integrator: the velocity field is empty");
  if (order != 1 && order != 2) throw std::invalid_argument("exponential integrator: order must be 1 (ddim) or 2 (dpm-solver++), got " + std::to_string(order));
  std::vector<double> grid = options.time_grid();
  if (grid.empty()) {
    const int64_t n = options.steps();
    if (n < 1) throw std::invalid_argument("steps must be >= 1, got " + std::to_string(n));
    const double t0 = options.t0(), t1 = options.t1();
    if (!(t0 >= 0 && t1 <= 1 && t0 < t1)) {
      throw std::invalid_argument("ddim and dpm-solver++ integrate forward in time within [0, 1], got t0 = " + std::to_string(t0) +
                                  ", t1 = " + std::to_string(t1));
    }
    for (int64_t k = 0; k <= n; ++k) grid.push_back(t0 + (t1 - t0) * static_cast<double>(k) / static_cast<double>(n));
  }
  for (size_t k = 1; k < grid.size(); ++k) {
    if (!(grid[k] > grid[k - 1]) || grid[k - 1] < 0 || grid[k] > 1) {
      throw std::invalid_argument("ddim and dpm-solver++ need an increasing time grid within [0, 1]");
    }
  }
  if (grid.size() < 2) throw std::invalid_argument("ddim and dpm-solver++ need at least one step");
  const SchedulerValues c = scheduler(at::tensor(grid, at::kDouble));
  const auto alpha = c.alpha.accessor<double, 1>(), sigma = c.sigma.accessor<double, 1>();
  const auto d_alpha = c.d_alpha.accessor<double, 1>(), d_sigma = c.d_sigma.accessor<double, 1>();
  const double inf = std::numeric_limits<double>::infinity();
  auto lambda = [&](size_t k) {
    if (alpha[k] <= 0) return -inf;
    if (sigma[k] <= 0) return inf;
    return std::log(alpha[k] / sigma[k]);
  };
  SolveResult result;
  at::Tensor x = x0;
  if (options.record_trajectory()) {
    result.trajectory.push_back(x.clone());
    result.times.push_back(grid[0]);
  }
  at::Tensor previous_d;
  double previous_h = inf;
  for (size_t k = 0; k + 1 < grid.size(); ++k) {
    const double det = d_alpha[k] * sigma[k] - d_sigma[k] * alpha[k];
    if (!(det > 0) || !std::isfinite(det)) {
      throw std::invalid_argument("ddim/dpm-solver++: the scheduler has alpha' sigma - sigma' alpha = " + std::to_string(det) + " at t = " +
                                  std::to_string(grid[k]) + " (expected > 0)");
    }
    at::Tensor v = field(x, at::full({}, grid[k], x.options()));
    ++result.nfe;
    at::Tensor d = (v * sigma[k] - x * d_sigma[k]) / det;  // x̂₁
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

}  // namespace flowmatch
