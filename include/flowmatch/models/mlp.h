#pragma once
/// \file
/// A multilayer perceptron velocity network for low-dimensional data (2-D toys, point clouds).

#include <string>

#include <torch/arg.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

enum class Activation { SELU, SiLU, ReLU, GELU };
/// How time enters the network: as one extra input feature, or as sinusoidal features
/// sin(π 2^k t), cos(π 2^k t) for k = 0..time_features/2 − 1.
enum class TimeEncoding { Plain, Sinusoidal };

Activation activation_from_string(const std::string& name);
std::string to_string(Activation activation);
TimeEncoding time_encoding_from_string(const std::string& name);
std::string to_string(TimeEncoding encoding);

/// Options for `MLP`.
///
/// Example:
/// ```
/// MLP net(MLPOptions(2).width(64).depth(3).activation(Activation::SELU));
/// ```
struct MLPOptions {
  explicit MLPOptions(int64_t dim = 2) : dim_(dim) {}
  /// The largest dropout accepted (the mask's scale 1/(1 − p) stays finite after rounding p to 2^-16).
  static constexpr double kMaxDropout = 0.99;
  /// Data dimension D (input and output width).
  TORCH_ARG(int64_t, dim);
  /// Width of each hidden layer.
  TORCH_ARG(int64_t, width) = 64;
  /// Number of hidden layers (TorchCFM's "3×64" is depth 3, width 64).
  TORCH_ARG(int64_t, depth) = 3;
  TORCH_ARG(Activation, activation) = Activation::SELU;
  TORCH_ARG(TimeEncoding, time_encoding) = TimeEncoding::Plain;
  /// Number of sinusoidal features (even); ignored for TimeEncoding::Plain.
  TORCH_ARG(int64_t, time_features) = 16;
  /// Width of the input x when it is not the output's (features of the data, as the manifold MLP's
  /// Fourier features; 0: dim). Such a network has no forward-mode divergence (its Jacobian is not square).
  TORCH_ARG(int64_t, input_dim) = 0;
  /// Dropout probability p in [0, 0.99] after each hidden activation (inverted: kept units scaled by
  /// 1/(1 − p)), in training mode only (`train()`); eval() and loaded models use the whole network.
  /// p is rounded to a multiple of 2^-16 (the mask is drawn from 16 random bits per unit). 0: none.
  TORCH_ARG(double, dropout) = 0.0;

 public:
  int64_t in_dim() const { return input_dim_ > 0 ? input_dim_ : dim_; }
};

nlohmann::json to_json(const MLPOptions& options);
MLPOptions mlp_options_from_json(const nlohmann::json& j);

/// v(x, t) = Linear(act(... act(Linear([x, τ(t)])))), with τ the time encoding.
class MLPImpl : public VelocityModel {
 public:
  explicit MLPImpl(MLPOptions options = MLPOptions());
  void reset();
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  nlohmann::json spec() const override;
  std::vector<int64_t> sample_shape() const override { return {options.dim()}; }
  bool supports_fused_regression() const override { return true; }
  /// The flow-matching loss mean(w_b · (v(x, t) − target)²) and its gradients, computed by hand
  /// (forward with the activations kept, then the backward pass layer by layer: no autograd graph).
  /// The gradients are written into each parameter's .grad() (replacing it). Same value and
  /// gradients as autograd on flow_matching_loss up to rounding (tests/test_mlp.cpp). `weight` may be
  /// undefined (unweighted). The loss: a 0-dim float64 tensor on the network's device. In training
  /// mode with dropout, each hidden activation is masked as forward() masks it (the same draws from
  /// the default generator, layer by layer), and the gradients are the masked network's.
  at::Tensor fused_regression_loss_and_gradients(const at::Tensor& x, const at::Tensor& t, const at::Tensor& target,
                                                 const at::Tensor& weight) override;
  /// The same, with the loss read back.
  double loss_and_gradients(const at::Tensor& x, const at::Tensor& t, const at::Tensor& target, const at::Tensor& weight) {
    return fused_regression_loss_and_gradients(x, t, target, weight).item<double>();
  }

  /// v(x, t) and its divergence in one forward pass carrying the D tangent directions ∂h/∂x_i through
  /// the layers (forward-mode differentiation): D + 1 products per hidden layer, the output layer's
  /// trace contracted directly, no autograd graph. Same values as autograd's divergence up to rounding
  /// (tests/test_mlp.cpp).
  bool supports_divergence() const override { return options.in_dim() == options.dim(); }
  std::pair<at::Tensor, at::Tensor> forward_with_divergence(const at::Tensor& x, const at::Tensor& t) override;

  /// Whether forward passes drop units now: dropout > 0 and training mode.
  bool dropping() const { return options.dropout() > 0 && is_training(); }
  /// A dropout mask in `like`'s shape, dtype and device: 0 with probability p, else 1/(1 − p).
  at::Tensor dropout_mask(const at::Tensor& like) const;

  MLPOptions options;

 private:
  at::Tensor encode_time(const at::Tensor& t, int64_t batch, const at::TensorOptions& opts) const;
  at::Tensor activate(const at::Tensor& h) const;
  void activate_in_place(at::Tensor& h) const;
  /// forward() without autograd on the CPU in float32, in two reused buffers with the bias, SELU and
  /// time column fused into the layers (same values up to float rounding and the exp kernel's ulps).
  at::Tensor forward_without_gradients(const at::Tensor& x, const at::Tensor& t);
  /// d act(z) / dz applied to `grad` (a = act(z), which SELU's derivative uses).
  at::Tensor activation_backward(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& a) const;
  torch::nn::ModuleList layers_{nullptr};
  at::Tensor frequencies_;
};
TORCH_MODULE(MLP);

}  // namespace flowmatch::models
