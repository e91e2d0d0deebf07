#pragma once
/// \file
/// Solvers for dx/dt = v(x, t) on batched tensors, with an exact count of velocity evaluations
/// (NFE): fixed-step and adaptive Runge–Kutta methods (`solve_ode`), Euler–Maruyama with the
/// flow's marginals (`solve_sde`, sde.h), and a registry that names them all (`solve`,
/// `solver_names`), so that one more solver is one `register_solver` call. A solver's state may live
/// on a manifold (`SolverOptions::manifold`): every velocity is made tangent and every step ends
/// projected back onto it.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <torch/arg.h>

#include "flowmatch/manifold.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

class Scheduler;
class ProbabilityPath;

/// Explicit Runge–Kutta methods. Fixed grid: Euler (1 evaluation per step), Midpoint (2),
/// Heun (2), RK4 (4). Adaptive: Dopri5, the Dormand–Prince 5(4) pair: one evaluation at the start,
/// one more for the automatic first step, then 6 per attempted step (first-same-as-last reuse).
enum class SolverMethod { Euler, Midpoint, Heun, RK4, Dopri5 };
/// How Dopri5 measures a step's error over a batch: the worst sample's RMS (every sample's error is
/// controlled) or the RMS over the whole batch (torchdiffeq's; fewer steps, looser per sample).
enum class ErrorNorm { Sample, Batch };
ErrorNorm error_norm_from_string(const std::string& name);  ///< sample or batch

SolverMethod solver_method_from_string(const std::string& name);
std::string to_string(SolverMethod method);
/// Velocity evaluations per step of `method` (for Dopri5: per attempted step).
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
  /// For Dopri5 the grid (when given) lists the output times, which steps land on exactly;
  /// without a grid every accepted step is kept.
  TORCH_ARG(bool, record_trajectory) = false;
  /// Times (between the start and end, any order) at which to keep the state, exactly: the
  /// trajectory then holds these states only, in the direction of integration. Fixed-step methods
  /// split the step an output time falls in (so NFE grows by at most one step's evaluations per
  /// time); Dopri5 lands a step on each. Implies recording.
  TORCH_ARG(std::vector<double>, output_times) = {};
  /// Dopri5: absolute and relative tolerances. A step is accepted when, for every sample b,
  /// sqrt(mean_d (err_bd / (atol + rtol·max(|x_bd|, |x_new,bd|)))²) ≤ 1 (ErrorNorm::Sample), or when
  /// that mean taken over the whole batch is (ErrorNorm::Batch: torchdiffeq's RMS norm; on a manifold
  /// each sample's ratio is the manifold's `error_ratio`, and Batch takes their RMS).
  TORCH_ARG(double, atol) = 1e-5;
  TORCH_ARG(double, rtol) = 1e-5;
  TORCH_ARG(ErrorNorm, error_norm) = ErrorNorm::Sample;
  /// Dopri5: the most steps (accepted + rejected) before giving up with std::runtime_error.
  TORCH_ARG(int64_t, max_steps) = 100000;
  /// Dopri5: first step size (0: Hairer's automatic choice, 1 extra evaluation).
  TORCH_ARG(double, initial_step) = 0.0;
  /// The space the state lives in (null: Euclidean). Velocities are projected to its tangent space,
  /// states back onto it after every step, and Dopri5 measures errors with its `error_ratio`.
  TORCH_ARG(std::shared_ptr<const Manifold>, manifold) = nullptr;
  /// Stochastic solvers ("sde"): the path's scheduler (for the score), the diffusion
  /// g(t) = noise_scale·σ_t, and the generator of the noise (a fresh seed-0 CPU generator if unset).
  TORCH_ARG(std::shared_ptr<const Scheduler>, scheduler) = nullptr;
  TORCH_ARG(double, noise_scale) = 1.0;
  TORCH_ARG(std::optional<at::Generator>, generator) = std::nullopt;
  /// Discrete solvers ("ctmc-euler", discrete_path.h): the flow's path (a MixtureDiscretePath: κ,
  /// source, vocabulary), the corrector's coefficient c(t) (unset: none), and whether the categorical
  /// draws are made in float64 (precise for large vocabularies and tiny probabilities).
  TORCH_ARG(std::shared_ptr<const ProbabilityPath>, path) = nullptr;
  TORCH_ARG(std::function<double(double)>, corrector) = {};
  TORCH_ARG(bool, categorical_float64) = false;
};

struct SolveResult {
  at::Tensor x;                      ///< state at the final time
  std::vector<at::Tensor> trajectory;  ///< states at `times` (when recorded)
  std::vector<double> times;         ///< grid times of `trajectory`
  int64_t nfe = 0;                   ///< velocity evaluations made
  int64_t steps = 0;                 ///< accepted steps
  int64_t rejected_steps = 0;        ///< rejected steps (adaptive methods)
};

/// The grid `options` describes (validated: ≥ 2 points, strictly monotone, finite).
std::vector<double> time_grid(const SolverOptions& options);

/// Integrates dx/dt = field(x, t) from the grid's first time to its last. The field is called
/// with a 0-dim time tensor of x's dtype and device. With gradient mode off the solver reuses its
/// state buffers in place, so the field must not keep the state tensor it is given beyond the call.
/// Throws std::invalid_argument for bad options.
SolveResult solve_ode(const VelocityField& field, const at::Tensor& x0, const SolverOptions& options);

/// What a registered solver is.
struct SolverInfo {
  std::string name;
  int64_t evaluations_per_step = 1;  ///< per step (adaptive: per attempted step)
  bool adaptive = false;             ///< steps chosen by atol/rtol instead of `steps`
  bool stochastic = false;           ///< needs `scheduler` and draws from `generator`
  std::string description;
  bool discrete = false;             ///< a CTMC over tokens: needs `path` (discrete_path.h), draws from `generator`
};
using SolverFunction = std::function<SolveResult(const VelocityField&, const at::Tensor& x0, const SolverOptions&)>;

/// Adds a solver under `info.name` (replacing one of that name). The built-ins: euler, midpoint,
/// heun, rk4, dopri5 (solve_ode) and sde (solve_sde with options.scheduler, noise_scale, generator).
void register_solver(const SolverInfo& info, SolverFunction solve);
/// Registered names in registration order; without stochastic or discrete ones when `stochastic` is false.
std::vector<std::string> solver_names(bool stochastic = true);
/// std::invalid_argument listing the names when `name` is unknown.
SolverInfo solver_info(const std::string& name);
/// Solves with the solver registered as `name` (options.method is set from the name for the
/// Runge–Kutta methods).
SolveResult solve(const std::string& name, const VelocityField& field, const at::Tensor& x0, const SolverOptions& options);

}  // namespace flowmatch
