#pragma once
/// \file
/// The benchmark set behind `flowmatch bench` (docs/BENCHMARKS.md): 2-D training in the setting of
/// ../shared/bench/ref_cfm_2d.py, sampling, likelihood, coupling, GEMM peak, MLP roofline, U-Net
/// training and sampling. Each case is timed after a warm-up and reported as one JSON object with its
/// settings, the thread count and the machine's cores. Four cases also run on a GPU (`device`).

#include <functional>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

namespace flowmatch::benchmarks {

struct BenchmarkOptions {
  int64_t train_steps = 1000;  ///< timed training steps (exact-ot: a quarter)
  int64_t repeats = 3;         ///< timed repetitions (the best is kept for sampling)
  /// likelihood-fixed: ../shared/bench/ref_likelihood_2d.py's --save-weights file (weights and points).
  std::string weights;
  /// unet-twin: where to write the benchmarked U-Net's weights and a probe (x, t, labels, v) as a
  /// PyTorch file for bench/unet_twin.py.
  std::string save_weights;
  /// Where unet-train, unet-sample, sample-euler100 and policy-latency run (the other cases are
  /// CPU-only: std::invalid_argument for them on another device). Timings on a GPU end with the result
  /// copied back, so they include the wait. On CUDA, sample-euler100 and policy-latency also time the
  /// solve replayed as one CUDA graph (cuda_graph.h).
  c10::Device device = c10::kCPU;
  /// unet-train: the forward pass and loss under autocast to bfloat16 (TrainerOptions::autocast_bf16).
  bool autocast_bf16 = false;
};

/// The case names, in the order they run.
const std::vector<std::string>& case_names();
/// Runs `cases` (all when empty), calling `report` with each result as it comes; returns them all.
/// std::invalid_argument for an unknown case.
nlohmann::json run(const std::vector<std::string>& cases, const BenchmarkOptions& options,
                   const std::function<void(const nlohmann::json&)>& report = {});

}  // namespace flowmatch::benchmarks
