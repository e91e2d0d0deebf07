#pragma once
// What the subcommands share for image runs: class selection, chunked guided sampling, grids.

#include <string>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

#include "common.h"
#include "flowmatch/solvers.h"

namespace fmcli {

/// Labels for `n` samples of an image run from --class: "all" (a grid, n / classes per class in class
/// order; n must be a multiple), "none" (the unconditional "no class" entry), a label number or a
/// class name. UsageError when the class is unknown or the run is not conditional.
at::Tensor image_labels(const RunFolder& run, const std::string& which, int64_t n);

/// Samples `labels.size(0)` images from the run's model with guidance scale w, solving in chunks of
/// at most `chunk` images (noise drawn from `generator` chunk by chunk). Returns (n, C·H·W) in [−1, 1]
/// on the CPU; adds the solver's NFE per chunk to `nfe` (the last chunk's count).
at::Tensor sample_images(const RunFolder& run, std::shared_ptr<flowmatch::models::VelocityModel> model,
                         const at::Tensor& labels, double guidance, const flowmatch::SolverOptions& solver,
                         at::Generator& generator, const c10::Device& device, int64_t& nfe, int64_t chunk = 500);

/// Writes images (n, C·H·W) in [−1, 1] of the run as a PNG grid: one row per class for "all", else
/// ⌈√n⌉ columns.
void write_run_image_grid(const RunFolder& run, const std::string& path, const at::Tensor& x, const std::string& which,
                          const std::string& title);

}  // namespace fmcli
