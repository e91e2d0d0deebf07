#pragma once
/// \file
/// The pieces of a training checkpoint that several trainers share (the flow's `Trainer`, the
/// autoencoder's): a module's weights, an Adam/AdamW optimizer's state and a generator's state, put
/// into `CheckpointContents` and restored from it with every tensor checked against what it replaces
/// (errors name the checkpoint file and the tensor).

#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace flowmatch {

struct CheckpointContents;

/// The tensor `name` of a checkpoint read from `path`; std::runtime_error naming both when absent.
const at::Tensor& checkpoint_tensor(const CheckpointContents& in, const std::string& name, const std::string& path);

/// Parameters and buffers of `module` as tensors PREFIX + name.
void save_module(const torch::nn::Module& module, const std::string& prefix, CheckpointContents& out);
/// Copies them back; each must exist with the module's shape and dtype.
void load_module(torch::nn::Module& module, const std::string& prefix, const CheckpointContents& in, const std::string& path);

/// The state of a `torch::optim::Adam` or `AdamW` (or flowmatch's fused step on their state) for
/// `parameters`, in order: tensors "optimizer/i/exp_avg", ".../exp_avg_sq" (and max_exp_avg_sq with
/// amsgrad) and meta "optimizer_steps" (−1 for a parameter without state yet). Another optimizer
/// type: std::invalid_argument.
void save_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters, CheckpointContents& out);
void load_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters, const CheckpointContents& in,
                          const std::string& path);

/// A CPU generator's state as tensor `name`, and back (a state of another size or type is refused,
/// naming the file).
void save_generator_state(at::Generator& generator, const std::string& name, CheckpointContents& out);
void load_generator_state(at::Generator& generator, const std::string& name, const CheckpointContents& in, const std::string& path);

}  // namespace flowmatch
