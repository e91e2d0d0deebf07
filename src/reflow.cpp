#include "flowmatch/reflow.h"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "flowmatch/paths.h"

namespace flowmatch {

ReflowPairs generate_reflow_pairs(const VelocityField& field, const at::Tensor& x0, const SolverOptions& solver,
                                  int64_t chunk) {
  if (!x0.defined() || x0.dim() < 2 || x0.size(0) < 1) {
    throw std::invalid_argument("generate_reflow_pairs: x0 must be a non-empty (N, ...) batch");
  }
  if (chunk < 1) throw std::invalid_argument("generate_reflow_pairs: chunk must be >= 1, got " + std::to_string(chunk));
  at::NoGradGuard no_grad;
  ReflowPairs out;
  std::vector<at::Tensor> ends;
  for (int64_t k = 0; k < x0.size(0); k += chunk) {
    auto r = solve_ode(field, x0.slice(0, k, std::min(x0.size(0), k + chunk)), solver);
    out.nfe = std::max(out.nfe, r.nfe);
    ends.push_back(r.x);
  }
  out.x0 = x0;
  out.x1 = at::cat(ends);
  return out;
}

PairSampler stored_pair_sampler(const ReflowPairs& pairs) {
  if (!pairs.x0.defined() || !pairs.x1.defined() || pairs.x0.dim() < 2 || pairs.x0.size(0) < 1) {
    throw std::invalid_argument("stored pairs: x0 and x1 must be non-empty (N, ...) tensors");
  }
  if (pairs.x0.sizes() != pairs.x1.sizes()) {
    throw std::invalid_argument("stored pairs: x0 " + c10::str(pairs.x0.sizes()) + " and x1 " + c10::str(pairs.x1.sizes()) +
                                " differ in shape");
  }
  for (const auto* t : {&pairs.x0, &pairs.x1}) {
    at::Tensor bad = (~at::isfinite(*t)).reshape({t->size(0), -1}).any(1).nonzero();
    if (bad.numel() > 0) {
      throw std::invalid_argument(std::string("stored pairs: ") + (t == &pairs.x0 ? "x0" : "x1") + " row " +
                                  std::to_string(bad[0][0].item<int64_t>()) + " holds NaN or Inf");
    }
  }
  at::Tensor x0 = pairs.x0.to(at::kCPU, at::kFloat).contiguous(), x1 = pairs.x1.to(at::kCPU, at::kFloat).contiguous();
  return [x0, x1](int64_t n, at::Generator& generator) {
    at::Tensor index = at::randint(x0.size(0), {n}, generator, at::kLong);
    return CoupledBatch{x0.index_select(0, index), x1.index_select(0, index), {}};
  };
}

FlowMatchingProblem reflow_problem(const ReflowPairs& pairs) {
  FlowMatchingProblem problem;
  problem.pairs = stored_pair_sampler(pairs);
  problem.path = std::make_shared<CondOTPath>(CondOTPathOptions().sigma(0.0));
  return problem;
}

FlowMatchingProblem distillation_problem(const ReflowPairs& pairs) {
  FlowMatchingProblem problem = reflow_problem(pairs);
  problem.time_sampling = TimeSamplingOptions().distribution(TimeDistribution::Constant).constant_time(0.0);
  return problem;
}

}  // namespace flowmatch
