#pragma once
/// \file
/// Rectified flow (Liu et al., 2022): reflow retrains a velocity field on the noise–sample pairs
/// that a trained model produces, (x₀, ODE(x₀)), which straightens its paths round after round;
/// distillation then trains a model whose single Euler step maps x₀ to x₁.
///
/// Example (one reflow round and a distilled model, with any model and solver):
/// ```
/// ReflowPairs pairs = generate_reflow_pairs(as_velocity_field(model), noise,
///                                           SolverOptions().method(SolverMethod::RK4).steps(25));
/// Trainer round(model->clone_model(), reflow_problem(pairs), options);   // starts from the parent
/// round.train();
/// Trainer one_step(round.sampling_model()->clone_model(), distillation_problem(pairs), options);
/// ```

#include <cstdint>

#include <ATen/Tensor.h>

#include "flowmatch/solvers.h"
#include "flowmatch/train.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

/// Noise x0 (N, ...) and where the model's ODE takes it, x1 (N, ...), with the solve's NFE.
struct ReflowPairs {
  at::Tensor x0;
  at::Tensor x1;
  int64_t nfe = 0;
};

/// x1 = solve_ode(field, x0, solver).x, computed without gradients in chunks of `chunk` rows
/// (chunks do not change the result for fixed-step solvers; Dopri5 adapts per chunk).
ReflowPairs generate_reflow_pairs(const VelocityField& field, const at::Tensor& x0, const SolverOptions& solver,
                                  int64_t chunk = 10000);

/// Minibatches of stored pairs: rows drawn uniformly (with replacement) with the trainer's generator.
/// Throws std::invalid_argument for empty or mismatched tensors or non-finite values.
PairSampler stored_pair_sampler(const ReflowPairs& pairs);

/// The k-rectified-flow objective: straight paths between the stored pairs (σ = 0), uniform t,
/// velocity prediction: E‖v(x_t, t) − (x1 − x0)‖².
FlowMatchingProblem reflow_problem(const ReflowPairs& pairs);

/// One-step distillation: the same pairs at t ≡ 0, so the model learns v(x0, 0) = x1 − x0 and one
/// Euler step x0 + v(x0, 0) lands on x1.
FlowMatchingProblem distillation_problem(const ReflowPairs& pairs);

}  // namespace flowmatch
