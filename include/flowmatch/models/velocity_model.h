#pragma once
/// \file
/// The trainable velocity network interface v_θ(x, t) and the factory that rebuilds a
/// network from its stored description (checkpoints keep the description beside the weights).

#include <memory>
#include <string>

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

namespace flowmatch::models {

/// A neural network mapping (x, t) to a velocity shaped like x.
///
/// `x` has shape (B, ...), `t` is a 0-dim tensor (one time for the whole batch) or has
/// shape (B) (one time per sample). Subclasses also describe themselves as JSON
/// (`{"type": ..., "options": {...}}`) so that `make_model` can rebuild them.
class VelocityModel : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t) = 0;
  /// Class-conditional velocity v(x, t, c): `labels` is (B) int64 with entries in
  /// [0, num_classes()) or `kNullLabel` (the learned "no class" entry, classifier-free guidance's ∅).
  /// The default throws std::invalid_argument: the network is not conditional.
  virtual at::Tensor forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels);
  /// Number of classes of a class-conditional network; 0 for an unconditional one.
  virtual int64_t num_classes() const { return 0; }
  /// The description that `make_model` turns back into an equal network (untrained).
  virtual nlohmann::json spec() const = 0;
  /// A fresh network with the same description and a copy of this one's parameters and buffers.
  std::shared_ptr<VelocityModel> clone_model() const;
};

/// The label that asks a conditional network for its unconditional ("no class") velocity.
constexpr int64_t kNullLabel = -1;

/// Checks labels for `model` (int64, shape (batch), entries in [0, num_classes) or kNullLabel);
/// throws std::invalid_argument naming the first bad entry.
void check_labels(const at::Tensor& labels, int64_t batch, int64_t num_classes);

/// Rebuilds a network from `spec()`; throws std::invalid_argument for an unknown type or bad options.
std::shared_ptr<VelocityModel> make_model(const nlohmann::json& spec);

/// Number of trainable scalars.
int64_t parameter_count(const torch::nn::Module& module);

/// Copies every parameter and buffer of `from` into `to` (same architecture required).
void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to);

/// Broadcasts a time argument (0-dim, (B), or (B,1)) to a column of shape (B, 1).
at::Tensor time_column(const at::Tensor& t, int64_t batch, const at::TensorOptions& options);

}  // namespace flowmatch::models
