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
  /// The description that `make_model` turns back into an equal network (untrained).
  virtual nlohmann::json spec() const = 0;
  /// A fresh network with the same description and a copy of this one's parameters and buffers.
  std::shared_ptr<VelocityModel> clone_model() const;
};

/// Rebuilds a network from `spec()`; throws std::invalid_argument for an unknown type or bad options.
std::shared_ptr<VelocityModel> make_model(const nlohmann::json& spec);

/// Number of trainable scalars.
int64_t parameter_count(const torch::nn::Module& module);

/// Copies every parameter and buffer of `from` into `to` (same architecture required).
void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to);

/// Broadcasts a time argument (0-dim, (B), or (B,1)) to a column of shape (B, 1).
at::Tensor time_column(const at::Tensor& t, int64_t batch, const at::TensorOptions& options);

}  // namespace flowmatch::models
