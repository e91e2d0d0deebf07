#pragma once
/// \file
/// Flow matching against diffusion, measured on equal terms: one network, optimizer, step budget and
/// seed trained as each variant (DDPM's ε-prediction on its discrete chain, linear or cosine β; flow
/// matching's velocity on the straight path, uniform or logit-normal t), then every variant sampled by
/// every sampler at every NFE budget and scored by its domain's sample-quality measure (points: exact
/// W2; images: Fréchet distance and classifier accuracy). `flowmatch compare` is its command line; the
/// protocol and the findings are in docs/COMPARE.md.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "flowmatch/domain.h"
#include "flowmatch/run.h"

namespace flowmatch {

/// A training variant: its name and the run settings it fixes over the shared ones.
struct ComparisonVariant {
  std::string name;
  nlohmann::json settings;
  std::string description;
};

/// ddpm-linear, ddpm-cosine (ε-prediction, t = 1 − n/1000 with n uniform: DDPM's training), fm-uniform,
/// fm-logit-normal (velocity on CondOT, σ = 0). Every variant pairs noise and data independently.
const std::vector<ComparisonVariant>& comparison_variants();
/// The variant named `name`; std::invalid_argument listing the names when unknown.
const ComparisonVariant& comparison_variant(const std::string& name);
/// The run settings the variants fix (a shared setting among them is refused).
std::vector<std::string> comparison_fixed_settings();

struct ComparisonOptions {
  std::vector<std::string> variants{"ddpm-linear", "ddpm-cosine", "fm-uniform", "fm-logit-normal"};
  /// Registered continuous solvers; ancestral runs with η = 1 (DDPM's sampler).
  std::vector<std::string> samplers{"ancestral", "ddim", "dpm-solver++", "euler", "heun", "dopri5"};
  /// NFE budgets of the fixed-step samplers (a budget a sampler cannot spend exactly, e.g. 1 for Heun's
  /// 2 evaluations per step, is skipped); adaptive samplers run at `tolerances` instead.
  std::vector<int64_t> nfe{1, 2, 4, 10, 20, 50, 100, 1000};
  std::vector<double> tolerances{1e-1, 1e-2, 1e-3, 1e-4, 1e-5};
  int64_t n = 2000;  ///< samples per cell (the same source draws for every cell)
  uint64_t seed = 0;
  std::string classifier = "runs/classifier";  ///< images: the evaluation classifier
  c10::Device device = c10::kCPU;
  /// Training callbacks (progress, Ctrl-C) for each variant's run.
  std::function<TrainRunOptions(const Run&)> training;
  ReportFunction report;
};

/// Trains (or resumes, or reuses when finished) each variant in OUT/<variant> with `settings` (run
/// settings as `train` takes them, without those the variants fix) and samples the grid. Writes
/// OUT/compare.json (the settings, each variant's run and training time, one row per variant, sampler
/// and NFE), OUT/compare.md (the tables) and OUT/compare.png (the best sampler of each variant against
/// NFE) with OUT/compare-<variant>.png (every sampler). Returns compare.json's contents; when a
/// training is interrupted, returns {"interrupted": variant} having written nothing else.
nlohmann::json compare_flow_and_diffusion(const nlohmann::json& settings, const std::string& out, const ComparisonOptions& options);

}  // namespace flowmatch
