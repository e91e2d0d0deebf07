#include "flowmatch/training_state.h"

#include <mutex>
#include <stdexcept>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

#include "flowmatch/checkpoint.h"
#include "flowmatch/optimizer.h"

namespace flowmatch {

const at::Tensor& checkpoint_tensor(const CheckpointContents& in, const std::string& name, const std::string& path) {
  const auto it = in.tensors.find(name);
  if (it == in.tensors.end()) throw std::runtime_error("'" + path + "': checkpoint lacks tensor '" + name + "'");
  return it->second;
}

namespace {

// `like`'s shape and dtype, on its device.
at::Tensor matching(const at::Tensor& stored, const at::Tensor& like, const std::string& name, const std::string& path) {
  if (stored.sizes() != like.sizes() || stored.scalar_type() != like.scalar_type()) {
    throw std::runtime_error("'" + path + "': checkpoint tensor '" + name + "' is " + c10::toString(stored.scalar_type()) +
                             c10::str(stored.sizes()) + ", the model expects " + c10::toString(like.scalar_type()) +
                             c10::str(like.sizes()));
  }
  return stored.to(like.device());
}

template <typename ParamState>
void save_adam(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters, CheckpointContents& out) {
  auto& state = optimizer.state();
  nlohmann::json steps = nlohmann::json::array();
  for (size_t i = 0; i < parameters.size(); ++i) {
    const auto it = state.find(optimizer_state_key(state, parameters[i]));
    if (it == state.end()) {
      steps.push_back(-1);
      continue;
    }
    const auto& s = static_cast<const ParamState&>(*it->second);
    steps.push_back(s.step());
    const std::string prefix = "optimizer/" + std::to_string(i) + "/";
    out.tensors[prefix + "exp_avg"] = s.exp_avg();
    out.tensors[prefix + "exp_avg_sq"] = s.exp_avg_sq();
    if (s.max_exp_avg_sq().defined()) out.tensors[prefix + "max_exp_avg_sq"] = s.max_exp_avg_sq();
  }
  out.meta["optimizer_steps"] = steps;
}

template <typename ParamState>
void load_adam(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters,
                     const CheckpointContents& in, const std::string& path) {
  const auto& steps = in.meta.at("optimizer_steps");
  if (!steps.is_array() || steps.size() != parameters.size()) {
    throw std::runtime_error("'" + path + "': checkpoint's optimizer state has " + std::to_string(steps.size()) +
                             " entries for " + std::to_string(parameters.size()) + " parameters");
  }
  auto& state = optimizer.state();
  state.clear();
  for (size_t i = 0; i < parameters.size(); ++i) {
    if (!steps[i].is_number_integer()) throw std::runtime_error("'" + path + "': checkpoint optimizer step is not an integer");
    const int64_t step = steps[i].get<int64_t>();
    if (step < 0) continue;
    const std::string prefix = "optimizer/" + std::to_string(i) + "/";
    auto s = std::make_unique<ParamState>();
    s->step(step);
    s->exp_avg(matching(checkpoint_tensor(in, prefix + "exp_avg", path), parameters[i], prefix + "exp_avg", path));
    s->exp_avg_sq(matching(checkpoint_tensor(in, prefix + "exp_avg_sq", path), parameters[i], prefix + "exp_avg_sq", path));
    if (in.tensors.count(prefix + "max_exp_avg_sq")) {
      s->max_exp_avg_sq(matching(in.tensors.at(prefix + "max_exp_avg_sq"), parameters[i], prefix + "max_exp_avg_sq", path));
    }
    state[optimizer_state_key(state, parameters[i])] = std::move(s);
  }
}

}  // namespace

void save_module(const torch::nn::Module& module, const std::string& prefix, CheckpointContents& out) {
  for (const auto& p : module.named_parameters()) out.tensors[prefix + p.key()] = p.value();
  for (const auto& b : module.named_buffers()) out.tensors[prefix + b.key()] = b.value();
}

void load_module(torch::nn::Module& module, const std::string& prefix, const CheckpointContents& in, const std::string& path) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) {
    p.value().copy_(matching(checkpoint_tensor(in, prefix + p.key(), path), p.value(), prefix + p.key(), path));
  }
  for (auto& b : module.named_buffers()) {
    b.value().copy_(matching(checkpoint_tensor(in, prefix + b.key(), path), b.value(), prefix + b.key(), path));
  }
}

void save_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters, CheckpointContents& out) {
  if (dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr) return save_adam<torch::optim::AdamWParamState>(optimizer, parameters, out);
  if (dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr) return save_adam<torch::optim::AdamParamState>(optimizer, parameters, out);
  throw std::invalid_argument("save_optimizer_state: only Adam and AdamW states are kept in checkpoints");
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters, const CheckpointContents& in,
                          const std::string& path) {
  if (!in.meta.contains("optimizer_steps")) throw std::runtime_error("'" + path + "': checkpoint lacks the optimizer state");
  if (dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr) return load_adam<torch::optim::AdamWParamState>(optimizer, parameters, in, path);
  if (dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr) return load_adam<torch::optim::AdamParamState>(optimizer, parameters, in, path);
  throw std::invalid_argument("load_optimizer_state: only Adam and AdamW states are kept in checkpoints");
}

void save_generator_state(at::Generator& generator, const std::string& name, CheckpointContents& out) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  out.tensors[name] = generator.get_state();
}

void load_generator_state(at::Generator& generator, const std::string& name, const CheckpointContents& in, const std::string& path) {
  const at::Tensor& state = checkpoint_tensor(in, name, path);
  std::lock_guard<std::mutex> lock(generator.mutex());
  const at::Tensor current = generator.get_state();
  if (state.sizes() != current.sizes() || state.scalar_type() != current.scalar_type()) {
    throw std::runtime_error("'" + path + "': checkpoint's generator state '" + name + "' has the wrong size");
  }
  try {
    generator.set_state(state);
  } catch (const c10::Error& e) {
    throw std::runtime_error("'" + path + "': checkpoint's generator state '" + name + "' is invalid: " + e.what_without_backtrace());
  }
}

}  // namespace flowmatch
