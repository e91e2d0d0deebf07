#pragma once
/// \file
/// Fixed-step ODE solvers for dx/dt = v(x, t) on batched tensors, with an exact count of
/// velocity evaluations (NFE).

#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/arg.h>

#include "flowmatch/velocity_field.h"

namespace flowmatch {

/// Explicit Runge–Kutta methods with a fixed time grid. Evaluations per step:
/// Euler 1, Midpoint 2, Heun 2, RK4 4.
enum class SolverMethod { Euler, Midpoint, Heun, RK4 };

SolverMethod solver_method_from_string(const std::string& name);
std::string to_string(SolverMethod method);
/// Velocity evaluations per step of `method`.
int64_t evaluations_per_step(SolverMethod method);

/// Options for `solve_ode`.
///
/// Example (noise → data in 100 Euler steps, keeping every state):
/// ```
/// auto result = solve_ode(field, x0, SolverOptions().method(SolverMethod::Euler).steps(100)
///                                                    .record_trajectory(true));
/// ```
struct SolverOptions {
  TORCH_ARG(SolverMethod, method) = SolverMethod::Euler;
  /// Number of uniform steps from t0 to t1 (ignored when `time_grid` is given).
  TORCH_ARG(int64_t, steps) = 100;
  TORCH_ARG(double, t0) = 0.0;
  TORCH_ARG(double, t1) = 1.0;
  /// An explicit, strictly monotone grid (first = start, last = end); overrides steps/t0/t1.
  TORCH_ARG(std::vector<double>, time_grid) = {};
  /// Keep the state at every grid time (including the start) in `SolveResult::trajectory`.
  TORCH_ARG(bool, record_trajectory) = false;
};

struct SolveResult {
  at::Tensor x;                      ///< state at the final time
  std::vector<at::Tensor> trajectory;  ///< states at `times` (when recorded)
  std::vector<double> times;         ///< grid times of `trajectory`
  int64_t nfe = 0;                   ///< velocity evaluations made
  int64_t steps = 0;                 ///< steps taken
};

/// The grid `options` describes (validated: ≥ 2 points, strictly monotone, finite).
std::vector<double> time_grid(const SolverOptions& options);

/// Integrates dx/dt = field(x, t) from the grid's first time to its last. The field is called
/// with a 0-dim time tensor of x's dtype and device. Throws std::invalid_argument for bad options.
SolveResult solve_ode(const VelocityField& field, const at::Tensor& x0, const SolverOptions& options);

}  // namespace flowmatch
