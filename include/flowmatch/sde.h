#pragma once
/// \file
/// Stochastic sampling with the marginals of the flow: Euler–Maruyama on
///   dX = [u(X, t) + ½g(t)²·∇log p_t(X)] dt + g(t) dW,
/// with the score derived from the velocity through an affine path's scheduler
/// (score = −x̂₀/σ, x̂₀ = (α̇x − αu)/(α̇σ − ασ̇); prediction.h). For any diffusion g the
/// marginals are those of the ODE dx/dt = u (Fokker–Planck); g = 0 is Euler's method.

#include <functional>
#include <memory>
#include <optional>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <torch/arg.h>

#include "flowmatch/schedulers.h"
#include "flowmatch/solvers.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

struct SDEOptions {
  /// Euler–Maruyama steps on a uniform grid from t0 to t1 (one velocity evaluation each).
  TORCH_ARG(int64_t, steps) = 100;
  TORCH_ARG(double, t0) = 0.0;
  TORCH_ARG(double, t1) = 1.0;
  /// The default diffusion g(t) = noise_scale·σ_t: proportional to the path's own noise, so the score
  /// term ½g²·score = −½noise_scale²·σ_t·x̂₀ stays finite where σ_t → 0.
  TORCH_ARG(double, noise_scale) = 1.0;
  /// Any other diffusion g(t) ≥ 0 (overrides noise_scale); the score term divides by σ_t, so g must
  /// vanish at least like √σ_t where σ_t → 0 to stay finite there.
  TORCH_ARG(std::function<double(double)>, diffusion) = nullptr;
  TORCH_ARG(bool, record_trajectory) = false;
};

/// Integrates the SDE from x0 (at t0) with Euler–Maruyama; the noise is drawn from `generator` (on its
/// own device, then moved to x's). With gradient mode off the state is updated in place, so the field
/// must not keep the state tensor it is given beyond the call (as for solve_ode).
/// Returns the final state, NFE (= steps) and, when asked, the states at every grid time.
/// Throws std::invalid_argument on bad options (steps < 1, times outside [0, 1] or not increasing,
/// negative noise scale).
SolveResult solve_sde(const VelocityField& velocity, const Scheduler& scheduler, const at::Tensor& x0,
                      const SDEOptions& options, at::Generator& generator);

}  // namespace flowmatch
