#pragma once
/// \file
/// Data-parallel training on PyTorch's distributed engine (c10d): rendezvous through a
/// `TCPStore`, collectives through `ProcessGroupGloo` on CPU (or `ProcessGroupNCCL` for CUDA
/// models when the linked LibTorch has it). `DataParallel` broadcasts parameters, averages
/// gradients in buckets and carries the small values every rank must agree on (the loss, a stop
/// request) in the same all-reduce. The c10d types stay in the implementation, so this header is
/// cheap to include and the library builds (without distributed support) where c10d is missing.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/arg.h>

namespace flowmatch::distributed {

enum class Backend { Auto, Gloo, NCCL };
Backend backend_from_string(const std::string& name);  ///< "auto", "gloo", "nccl"
std::string to_string(Backend backend);

/// Whether this build can run ProcessGroupGloo / ProcessGroupNCCL.
bool gloo_available();
bool nccl_available();

/// Who this process is and where the group meets.
///
/// Example: `DistributedOptions().rank(1).world_size(2).master_port(29500).timeout_s(30)`
struct DistributedOptions {
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  /// Index of the process on its machine (picks the CUDA device).
  TORCH_ARG(int64_t, local_rank) = 0;
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  TORCH_ARG(int64_t, master_port) = 29500;
  /// Longest wait for the rendezvous and for any collective: a rank that died or hangs makes the
  /// others throw within about this time instead of waiting forever.
  TORCH_ARG(double, timeout_s) = 300;
  /// Auto: NCCL for CUDA devices when built with it, Gloo otherwise.
  TORCH_ARG(Backend, backend) = Backend::Auto;
  /// Gradients are packed into flat buffers of at most this many bytes, one all-reduce each.
  TORCH_ARG(int64_t, bucket_bytes) = int64_t{25} << 20;
};

/// Throws std::invalid_argument naming the bad value.
void validate(const DistributedOptions& options);

/// Reads torchrun's variables: RANK, WORLD_SIZE (both required), LOCAL_RANK (default 0),
/// MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default 29500). Throws std::invalid_argument
/// naming the variable and its value when one is missing or malformed.
DistributedOptions options_from_environment();

/// Seed of rank r's generator: `seed` itself for rank 0 (so one process reproduces a
/// non-distributed run), a SplitMix64 mix of (seed, r) for the others.
uint64_t rank_seed(uint64_t seed, int64_t rank);

/// One process's membership in a data-parallel group. Construction is the rendezvous (it blocks
/// until all `world_size` processes have joined, or throws after the timeout).
class DataParallel {
 public:
  /// `device` is where the model lives: CUDA selects NCCL under Backend::Auto when available.
  DataParallel(DistributedOptions options, c10::Device device = c10::Device(c10::kCPU));
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int64_t rank() const { return options_.rank(); }
  int64_t world_size() const { return options_.world_size(); }
  Backend backend() const { return backend_; }
  const DistributedOptions& options() const { return options_; }

  /// Copies rank `root`'s tensors into every rank's (in place).
  void broadcast(const std::vector<at::Tensor>& tensors, int64_t root = 0);

  /// Replaces each parameter's gradient by its mean over the ranks (parameters without a gradient
  /// count as zero), bucketed. `extras` are summed over the ranks in the same all-reduce (float64
  /// accumulation is not guaranteed: they travel in the gradients' dtype) and returned.
  std::vector<double> average_gradients(const std::vector<at::Tensor>& parameters,
                                        const std::vector<double>& extras = {});

  /// Rank `root`'s string, on every rank (length first, then the bytes).
  std::string broadcast_string(const std::string& value, int64_t root = 0);

  /// Every rank's `value` (same shape and dtype on all ranks), in rank order.
  std::vector<at::Tensor> all_gather(const at::Tensor& value);

  /// Returns when every rank has called it (or throws after the timeout).
  void barrier();

  /// Wall-clock seconds spent inside average_gradients since construction, and its call count.
  double communication_seconds() const { return communication_s_; }
  int64_t communication_calls() const { return communication_calls_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DistributedOptions options_;
  Backend backend_ = Backend::Gloo;
  c10::Device device_;
  double communication_s_ = 0;
  int64_t communication_calls_ = 0;
};

/// `flowmatch launch`: processes of this program on this machine, like torchrun --standalone.
struct LaunchOptions {
  int64_t nproc = 1, nnodes = 1, node_rank = 0;
  int64_t master_port = 29500;  ///< 0: any free port (one machine only)
  std::string master_addr = "127.0.0.1";
  double grace = 30;  ///< seconds the others get to stop after one process fails, before SIGKILL
  std::vector<std::string> command;  ///< "train" and its flags (--distributed is added when missing)
};
/// Starts nproc processes running `command` with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
/// GROUP_RANK, MASTER_ADDR, MASTER_PORT, OMP_NUM_THREADS (cores / nproc unless set) and
/// FLOWMATCH_LAUNCHED; forwards SIGINT/SIGTERM; when one exits with a failure (not 0, not 130) the
/// others get SIGTERM (and SIGCONT, for a stopped one), then SIGKILL after the grace time (`report`
/// says which one failed, unless its code is 1 or 2: our own errors, which the process has said). Returns the first failure's exit code, else 130
/// when interrupted, else 0. std::invalid_argument for bad options.
int launch_processes(const LaunchOptions& options, const std::function<void(const std::string&)>& report = {});

}  // namespace flowmatch::distributed
