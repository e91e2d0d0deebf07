#include "flowmatch/autoregressive.h"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

namespace flowmatch {

namespace {

// log p(x_i | x_<i) per token (B, L) from the logits (B, L, V) at tokens x (B, L).
at::Tensor token_log_probabilities(const at::Tensor& logits, const at::Tensor& x, const char* who) {
  TORCH_CHECK(logits.dim() == 3 && logits.size(0) == x.size(0) && logits.size(1) == x.size(1), who, ": the network gave ",
              logits.sizes(), " for tokens ", x.sizes(), " (expected (B, L, V))");
  if (x.numel() > 0 && (x.min().item<int64_t>() < 0 || x.max().item<int64_t>() >= logits.size(2))) {
    throw std::invalid_argument(std::string(who) + ": token ids must be in [0, " + std::to_string(logits.size(2)) + ")");
  }
  return at::log_softmax(logits, -1).gather(-1, x.unsqueeze(-1)).squeeze(-1);
}

}  // namespace

at::Tensor AutoregressiveObjective::loss(models::VelocityModel& model, const TrainingBatch& batch) const {
  if (!batch.x1.defined() || batch.x1.scalar_type() != at::kLong || batch.x1.dim() != 2) {
    throw std::invalid_argument("the autoregressive objective needs token sequences (int64 x1 of shape (B, L))");
  }
  at::Tensor t = at::zeros({batch.x1.size(0)}, batch.x1.options().dtype(at::kFloat));
  at::Tensor logits = model.forward_with(batch.x1, t, batch.condition);
  at::Tensor per_sample = -token_log_probabilities(logits, batch.x1, "autoregressive objective").mean(1);
  if (batch.weight.defined()) per_sample = per_sample * batch.weight.reshape({-1});
  return per_sample.mean();
}

at::Tensor autoregressive_negative_log_likelihood(const VelocityField& model, const at::Tensor& x, int64_t chunk) {
  if (!model) throw std::invalid_argument("autoregressive likelihood: the network is empty");
  if (chunk < 1) throw std::invalid_argument("autoregressive likelihood: chunk must be >= 1, got " + std::to_string(chunk));
  TORCH_CHECK(x.scalar_type() == at::kLong && x.dim() == 2, "autoregressive likelihood: x must be (B, L) int64 tokens, got ", x.sizes(), " ",
              x.scalar_type());
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < x.size(0); start += chunk) {
    at::Tensor part = x.narrow(0, start, std::min(chunk, x.size(0) - start));
    at::Tensor logits = model(part, at::zeros({part.size(0)}, part.options().dtype(at::kFloat)));
    parts.push_back(-token_log_probabilities(logits.to(at::kDouble), part, "autoregressive likelihood").sum(1).to(at::kCPU));
  }
  return parts.empty() ? at::zeros({0}, at::kDouble) : at::cat(parts);
}

SolveResult sample_autoregressive(const VelocityField& model, const at::Tensor& x0, const SolverOptions& options) {
  if (!model) throw std::invalid_argument("solver autoregressive: the network is empty");
  TORCH_CHECK(x0.scalar_type() == at::kLong && x0.dim() == 2, "solver autoregressive: x0 must be (B, L) int64 tokens, got ", x0.sizes(),
              " ", x0.scalar_type());
  at::Generator generator = options.generator() ? *options.generator() : at::make_generator<at::CPUGeneratorImpl>(0);
  const auto categorical_type = options.categorical_float64() ? at::kDouble : at::kFloat;
  at::NoGradGuard no_grad;
  SolveResult r;
  at::Tensor x = x0.clone();
  // Positions not yet drawn hold a valid id (0); a causal network does not read them.
  x.zero_();
  const at::Tensor t = at::zeros({x.size(0)}, x.options().dtype(at::kFloat));
  if (options.record_trajectory()) r.trajectory.push_back(x.clone()), r.times.push_back(0.0);
  const int64_t length = x.size(1);
  for (int64_t i = 0; i < length; ++i) {
    at::Tensor logits = model(x, t);
    TORCH_CHECK(logits.dim() == 3 && logits.size(0) == x.size(0) && logits.size(1) == length, "solver autoregressive: the network gave ",
                logits.sizes(), " for tokens ", x.sizes(), " (expected (B, L, V))");
    ++r.nfe;
    at::Tensor probs = at::softmax(logits.select(1, i).to(categorical_type), -1).to(at::kCPU);
    x.select(1, i).copy_(at::multinomial(probs, 1, true, generator).squeeze(1));
    ++r.steps;
    if (options.record_trajectory()) r.trajectory.push_back(x.clone()), r.times.push_back(static_cast<double>(i + 1) / length);
  }
  r.x = x;
  return r;
}

}  // namespace flowmatch
