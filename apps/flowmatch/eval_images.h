#pragma once
// flowmatch eval for image runs (see eval_images.cpp).

#include <string>
#include <vector>

#include "common.h"

namespace fmcli {

struct ImageEvalFlags {
  std::string classifier = "runs/classifier";
  std::vector<double> guidance_scales{0, 1, 2, 4};
  int64_t accuracy_n = 1000, fd_n = 10000, steps = 10, bpd_n = 200, bpd_steps = 10;
  double fd_guidance = 0;
  std::string solver = "midpoint";
};

void add_image_eval_flags(CLI::App* app, ImageEvalFlags& flags);

/// Accuracy per guidance scale, Fréchet distances and bits per dimension -> `out` (metrics.json).
int eval_image_run(const RunFolder& run, const std::string& checkpoint, const std::string& out, const ImageEvalFlags& flags,
                   uint64_t seed, const c10::Device& device);

}  // namespace fmcli
