#pragma once
/// \file
/// The trainable velocity network interface v_θ(x, t, c), what it may be conditioned on, and the
/// model registry: `register_model` adds a network type that `make_model` rebuilds from its stored
/// description (checkpoints keep the description beside the weights) and that runs choose by name.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

namespace flowmatch::models {

/// What a velocity can be conditioned on, beside x and t. Every member is optional (undefined):
/// - labels: (B) int64 class labels, or kNullLabel for "no class" (classifier-free guidance);
/// - context: (B, L, E) a token context (e.g. an encoded caption) with context_mask (B, L) bool,
///   true where a token is present;
/// - mask: a per-element mask shaped like the leading dimensions of x (e.g. (B, N) for particles),
///   true where an element exists.
struct Conditioning {
  at::Tensor labels;
  at::Tensor context;
  at::Tensor context_mask;
  at::Tensor mask;

  bool empty() const { return !labels.defined() && !context.defined() && !context_mask.defined() && !mask.defined(); }
  /// Every defined member moved to `device`.
  Conditioning to(const c10::Device& device) const;
  /// Rows [start, start + length) of every defined member.
  Conditioning narrow(int64_t start, int64_t length) const;
};

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
  /// v(x, t, c) for any conditioning: the default calls forward_conditional for labels, forward
  /// when c is empty, and throws std::invalid_argument for a context or mask the network does not
  /// take. Networks that read a context or masks override it.
  virtual at::Tensor forward_with(const at::Tensor& x, const at::Tensor& t, const Conditioning& c);
  /// The shape of one sample x[b] the network takes (e.g. {2} for 2-D points, {784} for flattened
  /// 28×28 images); empty when any shape goes (a TorchScript model).
  virtual std::vector<int64_t> sample_shape() const { return {}; }
  /// Optional capability: the regression loss mean_b(w_b·mean_d (v(x, t) − target)²) with its
  /// gradients written into each parameter's .grad(), computed without an autograd graph
  /// (`supports_fused_regression` says whether it is there; the MLP has it). Same value and
  /// gradients as autograd up to rounding. The loss is a 0-dim float64 tensor on the model's device,
  /// not read back (on a GPU, reading waits for the device).
  virtual bool supports_fused_regression() const { return false; }
  virtual at::Tensor fused_regression_loss_and_gradients(const at::Tensor& x, const at::Tensor& t, const at::Tensor& target,
                                                         const at::Tensor& weight);
  /// Optional capability: v(x, t) and its exact divergence Σ_i ∂v_i/∂x_i per sample (B) in one
  /// pass without autograd (`supports_divergence` says whether it is there; the MLP has it, by
  /// forward-mode propagation of the D input directions). Exact likelihoods use it.
  virtual bool supports_divergence() const { return false; }
  virtual std::pair<at::Tensor, at::Tensor> forward_with_divergence(const at::Tensor& x, const at::Tensor& t);
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

/// Rebuilds a network from `spec()` through the registry; throws std::invalid_argument for an
/// unknown type (listing the registered ones) or bad options.
std::shared_ptr<VelocityModel> make_model(const nlohmann::json& spec);

/// How a registered network type is described and built.
struct ModelRegistration {
  /// A full description ({"type": ..., "options": {...}}) of a new network for data whose one sample
  /// has `sample_shape`, with `num_classes` > 0 for class-conditional data, from the user's options
  /// (keys as the `train` flags without dashes, e.g. {"width": 128}); std::invalid_argument names an
  /// option that does not apply or a bad value.
  std::function<nlohmann::json(const std::vector<int64_t>& sample_shape, int64_t num_classes, const nlohmann::json& options)>
      describe;
  /// The network a description stands for (untrained).
  std::function<std::shared_ptr<VelocityModel>(const nlohmann::json& spec)> build;
  /// One line for --help.
  std::string help;
  /// The user options it reads (for messages and --help).
  std::vector<std::string> options;
};
/// Adds (or replaces) a network type. Built in: mlp, unet, torchscript.
void register_model(const std::string& type, ModelRegistration registration);
/// Registered types, in registration order.
std::vector<std::string> model_names();
/// The registration of `type`; std::invalid_argument listing the names when unknown.
ModelRegistration model_registration(const std::string& type);

/// The user's options of a network type as its registration reads them: keys as the train flags
/// (dashes or underscores, returned with underscores); std::invalid_argument names a key outside
/// `known` and lists those. Null gives {}.
nlohmann::json normalized_options(const std::string& type, const nlohmann::json& options, const std::vector<std::string>& known);

/// Number of trainable scalars.
int64_t parameter_count(const torch::nn::Module& module);

/// Copies every parameter and buffer of `from` into `to` (same architecture required).
void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to);

/// Broadcasts a time argument (0-dim, (B), or (B,1)) to a column of shape (B, 1).
at::Tensor time_column(const at::Tensor& t, int64_t batch, const at::TensorOptions& options);

}  // namespace flowmatch::models
