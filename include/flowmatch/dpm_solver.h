#pragma once
/// \file
/// Exponential-integrator samplers of diffusion models, for any run on an affine path (flow matching
/// or diffusion alike): DDIM and DPM-Solver++(2M) (Lu et al. 2022). With x_t = α_t x₁ + σ_t x₀ and
/// λ_t = log(α_t/σ_t), the ODE's exact solution in data prediction D = x̂₁ is
///   x_t = (σ_t/σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^λ D dλ;
/// holding D at its value at s gives DDIM (η = 0): x_t = (σ_t/σ_s) x_s + α_t (1 − e^(−h)) D_s,
/// h = λ_t − λ_s; DPM-Solver++(2M) replaces D_s by (1 + 1/(2r)) D_s − 1/(2r) D_prev (r = h_prev/h), one
/// evaluation per step, second order. The data prediction comes from the velocity:
/// D = (σ v − σ̇ x)/(α̇ σ − σ̇ α). At t = 0 (α = 0) and t = 1 (σ = 0) λ is infinite and the formulas
/// take their limits; the first and the last step of 2M are DDIM's (the last as DPM-Solver's
/// lower_order_final: at σ → 0 its λ interval is unbounded).
/// Registered as the solvers "ddim" and "dpm-solver++" (they need `SolverOptions::scheduler`), and
/// "ancestral": DDIM with η (`SolverOptions::noise_scale`, default 1: DDPM's ancestral sampler),
///   x_t = α_t D + √(σ_t² − c²)·ε̂ + c·z,  ε̂ = (x_s − α_s D)/σ_s,  c = η σ_t √(1 − e^(−2h)),  z ~ N(0, I)
/// (for VP paths c is DDIM's σ_τ; η = 0 is DDIM).

#include "flowmatch/solvers.h"

namespace flowmatch {

class Scheduler;

/// order 1: DDIM; order 2: DPM-Solver++(2M). The grid: options.time_grid() when given, else
/// options.steps() uniform steps over [t0, t1] (0 ≤ t0 < t1 ≤ 1). std::invalid_argument for a bad
/// order, grid or scheduler (α̇σ − σ̇α must be positive).
SolveResult solve_exponential_integrator(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0,
                                         const SolverOptions& options, int order);

/// DDIM with η = options.noise_scale() ≥ 0 (1: ancestral sampling), drawing z from options.generator()
/// (a CPU generator seeded 0 when unset). Same grid rules as above.
SolveResult solve_ancestral(const VelocityField& field, const Scheduler& scheduler, const at::Tensor& x0, const SolverOptions& options);

}  // namespace flowmatch
