#pragma once
// What the data-parallel tests and their worker program (distributed_worker.cpp, one process per
// rank) share: the problem, the networks, the trainer options and the comparison of weights.

#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "flowmatch/coupling.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/train.h"

namespace distributed_setup {

namespace fm = flowmatch;

constexpr int64_t kSteps = 30, kBatch = 64;
constexpr uint64_t kSeed = 5;

inline fm::FlowMatchingProblem problem() {
  return {fm::data::toy2d_sampler("8gaussians"), fm::data::toy2d_sampler("moons"),
          std::make_shared<fm::CondOTPath>(fm::CondOTPathOptions().sigma(0.1)), fm::make_coupling("exact-ot"), {}};
}
inline std::shared_ptr<fm::models::VelocityModel> fresh_model(uint64_t seed) {
  at::manual_seed(seed);
  return std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(32).depth(2));
}
// Plain Adam: the single-process reference in test_distributed.cpp repeats it by hand.
inline fm::TrainerOptions plain_options() { return fm::TrainerOptions().steps(kSteps).batch_size(kBatch).lr(2e-3).seed(kSeed).log_every(1); }
// Everything that carries state across a resume: AdamW, schedule, clipping, EMA.
inline fm::TrainerOptions full_options(const std::string& dir) {
  return fm::TrainerOptions().steps(kSteps).batch_size(kBatch).lr(2e-3).ema_decay(0.9).lr_schedule(fm::LRSchedule::Cosine)
      .warmup_steps(5).grad_clip(5.0).optimizer(fm::OptimizerKind::AdamW).weight_decay(1e-4).seed(kSeed)
      .checkpoint_every(kSteps / 2).checkpoint_dir(dir);
}

inline at::Tensor flat_parameters(fm::models::VelocityModel& model) {
  std::vector<at::Tensor> flat;
  for (auto& p : model.parameters()) flat.push_back(p.detach().reshape(-1));
  return at::cat(flat);
}

}  // namespace distributed_setup
