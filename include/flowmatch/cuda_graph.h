#pragma once
/// \file
/// A fixed-step ODE solve captured once as a CUDA graph and replayed (issue "Performance II").
///
/// Sampling a small network on a GPU is bound by launches, not arithmetic: 10 Euler steps of a 4-layer
/// MLP are about 60 kernels of a few microseconds each, and each costs the host several microseconds to
/// launch. A CUDA graph records the whole solve once (every step's kernels, the times baked in) and
/// replays it with one launch, which is what a control loop calling a policy once per tick, or a sampler
/// drawing batch after batch of one shape, wants.
///
/// Example (a policy's 10 Euler steps at batch 1, replayed each tick):
/// ```
/// CapturedSolve solve(field, at::zeros({1, 32}, at::kCUDA), SolverOptions().method(SolverMethod::Euler).steps(10));
/// at::Tensor action = solve(noise);  // same shape, dtype and device as the example
/// ```

#include <memory>

#include <ATen/Tensor.h>

#include "flowmatch/solvers.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

/// `options`' fixed-step solve (Euler, midpoint, Heun or RK4; uniform steps or a time grid; no
/// trajectory) of `field` from states shaped like `example`, captured as a CUDA graph on a side stream
/// after two warm-up solves there. The field must be capturable: no host synchronisation (no .item(),
/// no copy to or from the CPU) and the same kernels every call; networks of flowmatch's models are.
/// The field's own tensors (weights, conditioning) are read where they lie at each replay, so updating
/// them in place is seen; reallocating them is not.
///
/// Throws std::invalid_argument for an adaptive method, a recorded trajectory, or an example that is
/// not a floating-point CUDA tensor; std::runtime_error when this LibTorch has no CUDA (a CPU build).
class CapturedSolve {
 public:
  CapturedSolve(VelocityField field, const at::Tensor& example, const SolverOptions& options);
  ~CapturedSolve();
  CapturedSolve(CapturedSolve&&) noexcept;
  CapturedSolve& operator=(CapturedSolve&&) noexcept;

  /// The solve from `x0` (the example's shape, dtype and device): x0 is copied into the captured input,
  /// the graph is replayed on the current stream, and a copy of the end state is returned.
  at::Tensor operator()(const at::Tensor& x0);
  /// The same without the copy out: the captured end state itself (an inference tensor on the device),
  /// overwritten by the next call. For a loop that reads each result before the next solve.
  const at::Tensor& replay(const at::Tensor& x0);
  /// Velocity evaluations per replay.
  int64_t nfe() const;

  /// Whether this build of LibTorch can capture CUDA graphs (a CUDA build; a device may still be absent).
  static bool available();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flowmatch
