// CapturedSolve: a fixed-step solve recorded as a CUDA graph (include/flowmatch/cuda_graph.h).

#include "flowmatch/cuda_graph.h"

#include <stdexcept>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "flowmatch_build_config.h"  // FLOWMATCH_HAVE_CUDA (a CUDA build of LibTorch)

#if defined(FLOWMATCH_HAVE_CUDA)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace flowmatch {

namespace {

void check_capturable(const at::Tensor& example, const SolverOptions& options) {
  if (options.method() == SolverMethod::Dopri5) {
    throw std::invalid_argument("CapturedSolve: dopri5 chooses its steps from the state (a host decision each step); capture a fixed-step method (euler, midpoint, heun, rk4)");
  }
  if (options.record_trajectory() || !options.output_times().empty()) {
    throw std::invalid_argument("CapturedSolve: a captured solve returns the end state only; turn off record_trajectory and output_times");
  }
  if (!example.defined() || !example.is_floating_point()) {
    throw std::invalid_argument("CapturedSolve: the example state must be a floating-point tensor");
  }
  if (!example.is_cuda()) {
    throw std::invalid_argument("CapturedSolve: the example state is on " + example.device().str() + "; CUDA graphs capture work on a CUDA device");
  }
}

}  // namespace

#if defined(FLOWMATCH_HAVE_CUDA)

struct CapturedSolve::Impl {
  at::cuda::CUDAGraph graph;
  at::Tensor input, output;
  int64_t nfe = 0;
};

CapturedSolve::CapturedSolve(VelocityField field, const at::Tensor& example, const SolverOptions& options) {
  check_capturable(example, options);
  if (!field) throw std::invalid_argument("CapturedSolve: the velocity field is empty");
  impl_ = std::make_unique<Impl>();
  c10::InferenceMode inference;
  c10::cuda::CUDAGuard device_guard(example.device());
  impl_->input = example.clone();
  // Capture happens on a side stream, after warm-up solves there (cuBLAS handles and workspaces, the
  // allocator's blocks): nothing may be created for the first time inside the capture.
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, example.device().index());
  c10::cuda::getCurrentCUDAStream(example.device().index()).synchronize();  // the example is written
  {
    c10::cuda::CUDAStreamGuard stream_guard(side);
    for (int k = 0; k < 2; ++k) impl_->nfe = solve_ode(field, impl_->input, options).nfe;
    side.synchronize();
    impl_->graph.capture_begin();
    try {
      impl_->output = solve_ode(field, impl_->input, options).x;
    } catch (...) {
      // End the stream's capture before the error leaves: a stream left capturing breaks later work.
      cudaGraph_t partial = nullptr;
      if (cudaStreamEndCapture(side.stream(), &partial) == cudaSuccess && partial != nullptr) cudaGraphDestroy(partial);
      throw;
    }
    impl_->graph.capture_end();
  }
  side.synchronize();
}

at::Tensor CapturedSolve::operator()(const at::Tensor& x0) {
  return replay(x0).clone();  // outside inference mode: an ordinary tensor for the caller
}

const at::Tensor& CapturedSolve::replay(const at::Tensor& x0) {
  TORCH_CHECK(impl_, "CapturedSolve: used after a move");
  TORCH_CHECK(x0.sizes() == impl_->input.sizes() && x0.scalar_type() == impl_->input.scalar_type() &&
                  x0.device() == impl_->input.device(),
              "CapturedSolve: x0 is ", x0.scalar_type(), " ", x0.sizes(), " on ", x0.device(), "; the solve was captured for ",
              impl_->input.scalar_type(), " ", impl_->input.sizes(), " on ", impl_->input.device());
  c10::cuda::CUDAGuard device_guard(impl_->input.device());
  // The captured buffers are inference tensors, and so are the graph's generator seed and offset, which
  // replay() refills in place in LibTorch 1.13 to 2.3: both need inference mode.
  c10::InferenceMode inference;
  impl_->input.copy_(x0);
  impl_->graph.replay();  // on the current stream, after the copy
  return impl_->output;
}

bool CapturedSolve::available() { return true; }

#else

struct CapturedSolve::Impl {};

CapturedSolve::CapturedSolve(VelocityField, const at::Tensor& example, const SolverOptions& options) {
  check_capturable(example, options);
  throw std::runtime_error("CapturedSolve: this build of LibTorch has no CUDA (CUDA graphs need a CUDA build)");
}

at::Tensor CapturedSolve::operator()(const at::Tensor&) {
  throw std::runtime_error("CapturedSolve: this build of LibTorch has no CUDA");
}

const at::Tensor& CapturedSolve::replay(const at::Tensor&) {
  throw std::runtime_error("CapturedSolve: this build of LibTorch has no CUDA");
}

bool CapturedSolve::available() { return false; }

#endif

CapturedSolve::~CapturedSolve() = default;
CapturedSolve::CapturedSolve(CapturedSolve&&) noexcept = default;
CapturedSolve& CapturedSolve::operator=(CapturedSolve&&) noexcept = default;

int64_t CapturedSolve::nfe() const {
#if defined(FLOWMATCH_HAVE_CUDA)
  return impl_ ? impl_->nfe : 0;
#else
  return 0;
#endif
}

}  // namespace flowmatch
