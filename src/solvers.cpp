#include "flowmatch/solvers.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

namespace flowmatch {

SolverMethod solver_method_from_string(const std::string& name) {
  if (name == "euler") return SolverMethod::Euler;
  if (name == "midpoint") return SolverMethod::Midpoint;
  if (name == "heun") return SolverMethod::Heun;
  if (name == "rk4") return SolverMethod::RK4;
  throw std::invalid_argument("unknown solver '" + name + "' (expected: euler, midpoint, heun, rk4)");
}

std::string to_string(SolverMethod method) {
  switch (method) {
    case SolverMethod::Euler: return "euler";
    case SolverMethod::Midpoint: return "midpoint";
    case SolverMethod::Heun: return "heun";
    case SolverMethod::RK4: return "rk4";
  }
  return "?";
}

int64_t evaluations_per_step(SolverMethod method) {
  switch (method) {
    case SolverMethod::Euler: return 1;
    case SolverMethod::Midpoint: return 2;
    case SolverMethod::Heun: return 2;
    case SolverMethod::RK4: return 4;
  }
  return 0;
}

std::vector<double> time_grid(const SolverOptions& options) {
  std::vector<double> grid = options.time_grid();
  if (grid.empty()) {
    if (options.steps() < 1) {
      throw std::invalid_argument("solver steps must be >= 1, got " + std::to_string(options.steps()));
    }
    if (!std::isfinite(options.t0()) || !std::isfinite(options.t1()) || options.t0() == options.t1()) {
      throw std::invalid_argument("solver needs finite t0 != t1, got t0=" + std::to_string(options.t0()) +
                                  " t1=" + std::to_string(options.t1()));
    }
    grid.resize(static_cast<size_t>(options.steps()) + 1);
    const double dt = (options.t1() - options.t0()) / static_cast<double>(options.steps());
    for (size_t k = 0; k < grid.size(); ++k) grid[k] = options.t0() + dt * static_cast<double>(k);
    grid.back() = options.t1();
    return grid;
  }
  if (grid.size() < 2) throw std::invalid_argument("time grid needs at least 2 points");
  const bool increasing = grid[1] > grid[0];
  for (size_t k = 0; k < grid.size(); ++k) {
    if (!std::isfinite(grid[k])) throw std::invalid_argument("time grid has a non-finite entry at " + std::to_string(k));
    if (k > 0 && ((grid[k] > grid[k - 1]) != increasing || grid[k] == grid[k - 1])) {
      throw std::invalid_argument("time grid must be strictly monotone (entry " + std::to_string(k) + ")");
    }
  }
  return grid;
}

SolveResult solve_ode(const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
  if (!field) throw std::invalid_argument("solve_ode: velocity field is empty");
  TORCH_CHECK(x0.defined() && x0.is_floating_point(), "solve_ode: x0 must be a floating-point tensor");
  const std::vector<double> grid = time_grid(options);
  const SolverMethod method = options.method();
  // In-place updates are safe only when no autograd graph refers to the state.
  const bool in_place = !at::GradMode::is_enabled();
  SolveResult result;
  at::Tensor x = in_place ? x0.clone() : x0;
  if (options.record_trajectory()) {
    result.trajectory.reserve(grid.size());
    result.trajectory.push_back(x.clone());
    result.times = grid;
  }
  auto time = [&](double t) { return at::scalar_tensor(t, x0.options()); };
  auto call = [&](const at::Tensor& state, double t) {
    ++result.nfe;
    at::Tensor v = field(state, time(t));
    TORCH_CHECK(v.sizes() == state.sizes(), "velocity field returned shape ", v.sizes(),
                " for a state of shape ", state.sizes());
    return v;
  };
  auto axpy = [&](at::Tensor& target, const at::Tensor& v, double h) {
    if (in_place) {
      target.add_(v, h);
    } else {
      target = target + h * v;
    }
  };

  for (size_t k = 0; k + 1 < grid.size(); ++k) {
    const double t = grid[k];
    const double h = grid[k + 1] - grid[k];
    switch (method) {
      case SolverMethod::Euler: {
        axpy(x, call(x, t), h);
        break;
      }
      case SolverMethod::Midpoint: {
        at::Tensor k1 = call(x, t);
        at::Tensor k2 = call(x + (0.5 * h) * k1, t + 0.5 * h);
        axpy(x, k2, h);
        break;
      }
      case SolverMethod::Heun: {
        at::Tensor k1 = call(x, t);
        at::Tensor k2 = call(x + h * k1, t + h);
        axpy(x, k1 + k2, 0.5 * h);
        break;
      }
      case SolverMethod::RK4: {
        at::Tensor k1 = call(x, t);
        at::Tensor k2 = call(x + (0.5 * h) * k1, t + 0.5 * h);
        at::Tensor k3 = call(x + (0.5 * h) * k2, t + 0.5 * h);
        at::Tensor k4 = call(x + h * k3, t + h);
        axpy(x, k1 + 2.0 * (k2 + k3) + k4, h / 6.0);
        break;
      }
    }
    ++result.steps;
    if (options.record_trajectory()) result.trajectory.push_back(x.clone());
  }
  result.x = x;
  return result;
}

}  // namespace flowmatch
