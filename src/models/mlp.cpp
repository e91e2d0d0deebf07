#include "flowmatch/models/mlp.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "../enum_names.h"
#include "flowmatch/models/selu.h"

namespace flowmatch::models {

namespace {
constexpr detail::EnumNames<Activation, 4> kActivationNames{
    {{Activation::SELU, "selu"}, {Activation::SiLU, "silu"}, {Activation::ReLU, "relu"}, {Activation::GELU, "gelu"}}};
constexpr detail::EnumNames<TimeEncoding, 2> kEncodingNames{
    {{TimeEncoding::Plain, "plain"}, {TimeEncoding::Sinusoidal, "sinusoidal"}}};
}  // namespace

Activation activation_from_string(const std::string& name) {
  return detail::enum_from_name(kActivationNames, name, "activation");
}
std::string to_string(Activation activation) { return detail::enum_name(kActivationNames, activation); }
TimeEncoding time_encoding_from_string(const std::string& name) {
  return detail::enum_from_name(kEncodingNames, name, "time encoding");
}
std::string to_string(TimeEncoding encoding) { return detail::enum_name(kEncodingNames, encoding); }

nlohmann::json to_json(const MLPOptions& o) {
  nlohmann::json j = {{"dim", o.dim()},
                      {"width", o.width()},
                      {"depth", o.depth()},
                      {"activation", to_string(o.activation())},
                      {"time_encoding", to_string(o.time_encoding())},
                      {"time_features", o.time_features()}};
  if (o.input_dim() > 0) j["input_dim"] = o.input_dim();
  if (o.dropout() > 0) j["dropout"] = o.dropout();  // absent at 0, so older descriptions read the same
  return j;
}

MLPOptions mlp_options_from_json(const nlohmann::json& j) {
  MLPOptions o(j.value("dim", int64_t{2}));
  o.width(j.value("width", o.width()))
      .depth(j.value("depth", o.depth()))
      .activation(activation_from_string(j.value("activation", to_string(o.activation()))))
      .time_encoding(time_encoding_from_string(j.value("time_encoding", to_string(o.time_encoding()))))
      .time_features(j.value("time_features", o.time_features()))
      .input_dim(j.value("input_dim", o.input_dim()))
      .dropout(j.value("dropout", o.dropout()));
  return o;
}

MLPImpl::MLPImpl(MLPOptions options_) : options(std::move(options_)) { reset(); }

void MLPImpl::reset() {
  TORCH_CHECK(options.dim() >= 1, "MLP dim must be >= 1, got ", options.dim());
  TORCH_CHECK(options.width() >= 1, "MLP width must be >= 1, got ", options.width());
  TORCH_CHECK(options.depth() >= 1, "MLP depth must be >= 1, got ", options.depth());
  TORCH_CHECK(options.input_dim() >= 0 && options.input_dim() <= (int64_t{1} << 20), "MLP input_dim must be in [0, 2^20], got ",
              options.input_dim());
  TORCH_CHECK(options.dropout() >= 0 && options.dropout() <= MLPOptions::kMaxDropout, "MLP dropout must be in [0, ",
              MLPOptions::kMaxDropout, "], got ", options.dropout());
  const bool sinusoidal = options.time_encoding() == TimeEncoding::Sinusoidal;
  TORCH_CHECK(!sinusoidal || (options.time_features() >= 2 && options.time_features() % 2 == 0),
              "MLP time_features must be even and >= 2, got ", options.time_features());
  // A description read from a file must not ask for an absurd network (gigabytes from one number).
  TORCH_CHECK(options.dim() <= (int64_t{1} << 20) && options.width() <= 65536 && options.depth() <= 1024 &&
                  options.time_features() <= 65536,
              "MLP dim (", options.dim(), "), width (", options.width(), "), depth (", options.depth(),
              ") or time_features (", options.time_features(), ") above the limits 2^20, 65536, 1024, 65536");
  {
    // Each limit alone still allows terabytes together: bound the parameter count before allocating.
    const double w = static_cast<double>(options.width()), d = static_cast<double>(options.dim());
    const double in = static_cast<double>(options.in_dim()) + static_cast<double>(options.time_encoding() == TimeEncoding::Sinusoidal ? options.time_features() : 1);
    const double parameters = in * w + (static_cast<double>(options.depth()) - 1) * w * w + w * d;
    TORCH_CHECK(parameters <= double(1 << 28), "MLP of dim ", options.dim(), ", width ", options.width(), " and depth ", options.depth(),
                " would have ", static_cast<int64_t>(parameters), " parameters (", parameters * 4 / double(1 << 30),
                " GiB), more than the 2^28 allowed");
  }
  const int64_t time_width = sinusoidal ? options.time_features() : 1;
  TORCH_CHECK(static_cast<double>(options.width()) * static_cast<double>(options.width() + options.in_dim() + time_width) *
                      static_cast<double>(options.depth()) <= 2.5e8,
              "MLP with width ", options.width(), " and depth ", options.depth(), " has over 2.5e8 weights (1 GB)");
  layers_ = register_module("layers", torch::nn::ModuleList());
  int64_t in = options.in_dim() + time_width;
  for (int64_t i = 0; i < options.depth(); ++i) {
    layers_->push_back(torch::nn::Linear(in, options.width()));
    in = options.width();
  }
  layers_->push_back(torch::nn::Linear(in, options.dim()));
  if (sinusoidal) {
    const int64_t half = options.time_features() / 2;
    frequencies_ = register_buffer(
        "frequencies", at::exp2(at::arange(half, at::kFloat)).mul_(static_cast<float>(M_PI)));
  }
}

// 16 random bits per unit, two from each 32-bit draw: 0.1 ms for 65536 units on one core, against
// 0.65 ms for bernoulli_ (one draw and one double comparison per unit), which made dropout cost a
// third of a manifold MLP's training step. The probability is rounded to a multiple of 2^-16.
at::Tensor MLPImpl::dropout_mask(const at::Tensor& like) const {
  const int64_t n = like.numel();
  const int64_t dropped = std::llround(options.dropout() * 65536.0);  // of the 65536 values of 16 bits
  const at::Tensor bits = at::randint(std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), {(n + 1) / 2},
                                      like.options().dtype(at::kInt));
  const at::Tensor halves = bits.view(at::kShort).narrow(0, 0, n).view(like.sizes());  // uniform on [-32768, 32767]
  return halves.ge(dropped - 32768).to(like.scalar_type()).div_(1.0 - static_cast<double>(dropped) / 65536.0);
}

at::Tensor MLPImpl::encode_time(const at::Tensor& t, int64_t batch, const at::TensorOptions& opts) const {
  at::Tensor column = time_column(t, batch, opts);
  if (options.time_encoding() == TimeEncoding::Plain) return column;
  at::Tensor angles = column * frequencies_.to(opts).unsqueeze(0);
  return at::cat({at::sin(angles), at::cos(angles)}, 1);
}

at::Tensor MLPImpl::activate(const at::Tensor& h) const {
  switch (options.activation()) {
    case Activation::SELU: return at::selu(h);
    case Activation::SiLU: return at::silu(h);
    case Activation::ReLU: return at::relu(h);
    case Activation::GELU: return at::gelu(h);
  }
  return h;
}

at::Tensor MLPImpl::forward(const at::Tensor& x, const at::Tensor& t) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options.in_dim(), "MLP expects x of shape (B, ",
              options.in_dim(), "), got ", x.sizes());
  if (!at::GradMode::is_enabled() && !dropping() && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
      layers_[0]->as<torch::nn::Linear>()->weight.scalar_type() == at::kFloat) {
    return forward_without_gradients(x, t);
  }
  at::Tensor h = at::cat({x, encode_time(t, x.size(0), x.options())}, 1);
  const size_t n = layers_->size();
  for (size_t i = 0; i < n; ++i) {
    h = layers_[i]->as<torch::nn::Linear>()->forward(h);
    if (i + 1 < n) {
      h = activate(h);
      if (dropping()) h = h * dropout_mask(h);
    }
  }
  return h;
}

void MLPImpl::activate_in_place(at::Tensor& h) const {
  switch (options.activation()) {
    case Activation::SELU: selu_in_place(h); return;
    case Activation::SiLU: at::silu_(h); return;
    case Activation::ReLU: at::relu_(h); return;
    case Activation::GELU: at::gelu_(h); return;
  }
}

// Two activation buffers used in turn (nothing allocated per layer), bias and activation applied in
// place after each product (SELU: one vectorised pass for both), and with one time for the whole
// batch the time features' share of the first layer folded into its bias once. (Pushing the batch
// through in row blocks that stay in cache was tried: no faster at 1 thread on a 32 MiB-L3 machine,
// and at 2 threads the smaller products split badly, 0.3x.)
at::Tensor MLPImpl::forward_without_gradients(const at::Tensor& x, const at::Tensor& t) {
  const int64_t batch = x.size(0), dim = options.in_dim(), width = options.width();
  const size_t n = layers_->size();
  const auto opts = x.options();
  at::Tensor out = at::empty({batch, options.dim()}, opts);
  if (batch == 0) return out;
  auto& first = *layers_[0]->as<torch::nn::Linear>();
  const at::Tensor w_x = first.weight.narrow(1, 0, dim).t();
  const at::Tensor w_t = first.weight.narrow(1, dim, first.weight.size(1) - dim).t();
  at::Tensor first_bias = first.bias, time_features;
  if (t.numel() == 1) {
    first_bias = at::addmv(first.bias, w_t.t(), encode_time(t.reshape({1}), 1, opts).reshape({-1}));
  } else {
    time_features = encode_time(t, batch, opts);
  }
  at::Tensor buffers[2] = {at::empty({batch, width}, opts), at::empty({batch, width}, opts)};
  const at::Tensor xc = x.contiguous();
  at::Tensor h;
  for (size_t i = 0; i < n; ++i) {
    auto& layer = *layers_[i]->as<torch::nn::Linear>();
    if (i + 1 == n) {
      at::addmm_out(out, layer.bias, h, layer.weight.t());
      break;
    }
    // Hidden layer: the product alone, then bias and activation (SELU: both in one pass; addmm
    // would first copy the bias into every row, one more pass over the activations).
    at::Tensor& next = buffers[i % 2];
    if (i == 0 && !time_features.defined() && options.activation() == Activation::SELU) {
      selu_of_linear(next, xc, w_x.t(), first_bias);  // product, bias and SELU in one pass
      h = next;
      continue;
    }
    if (i == 0) {
      at::mm_out(next, xc, w_x);
      if (time_features.defined()) next.addmm_(time_features, w_t);
    } else {
      at::mm_out(next, h, layer.weight.t());
    }
    const at::Tensor& bias = i == 0 ? first_bias : layer.bias;
    if (i + 2 == n && options.activation() == Activation::SELU) {
      // The last SELU and the output layer in one pass.
      auto& last = *layers_[n - 1]->as<torch::nn::Linear>();
      linear_of_selu(out, next, bias, last.weight, last.bias);
      break;
    }
    if (options.activation() == Activation::SELU) {
      selu_in_place(next, bias);
    } else {
      next.add_(bias);
      activate_in_place(next);
    }
    h = next;
  }
  return out;
}

at::Tensor MLPImpl::activation_backward(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& a) const {
  switch (options.activation()) {
    // SELU(z) = scale·ELU_alpha(z); ATen's ELU backward takes both constants. From the output a:
    // SELU'(z) = scale for z > 0, a + scale·alpha otherwise (no second exponential).
    case Activation::SELU: return at::elu_backward(grad, 1.6732632423543772848170429916717, 1.0507009873554804934193349852946, 1.0, true, a);
    case Activation::SiLU: return at::silu_backward(grad, z);
    case Activation::ReLU: return at::threshold_backward(grad, z, 0);
    case Activation::GELU: return at::gelu_backward(grad, z);
  }
  return grad;
}

at::Tensor MLPImpl::fused_regression_loss_and_gradients(const at::Tensor& x, const at::Tensor& t, const at::Tensor& target,
                                                        const at::Tensor& weight) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options.in_dim(), "MLP expects x of shape (B, ", options.in_dim(), "), got ", x.sizes());
  TORCH_CHECK(target.dim() == 2 && target.size(0) == x.size(0) && target.size(1) == options.dim(), "MLP loss: target ",
              target.sizes(), " must have shape (", x.size(0), ", ", options.dim(), ")");
  at::NoGradGuard no_grad;
  const size_t n = layers_->size();
  const bool drop = dropping();
  // activations[i]: act(preactivations[i]) before the mask (the activation's backward needs it);
  // masks[i]: dropout_mask's 0 or 1/keep per unit, so that inputs[i + 1] = activations[i] * masks[i].
  std::vector<at::Tensor> inputs(n), preactivations(n), activations(n), masks(n);
  at::Tensor h = at::cat({x, encode_time(t, x.size(0), x.options())}, 1);
  for (size_t i = 0; i < n; ++i) {
    auto& layer = *layers_[i]->as<torch::nn::Linear>();
    inputs[i] = h;
    preactivations[i] = at::addmm(layer.bias, h, layer.weight.t());
    if (i + 1 < n) {
      h = preactivations[i].clone();
      activate_in_place(h);
      activations[i] = h;
      if (drop) {
        masks[i] = dropout_mask(h);
        h = h * masks[i];
      }
    }
  }
  const at::Tensor& out = preactivations[n - 1];
  at::Tensor diff = out - target;
  const double count = static_cast<double>(diff.numel());
  at::Tensor grad;  // dL/d out
  at::Tensor loss;  // the sum in the parameters' dtype, divided in float64 (not read back here)
  if (!weight.defined()) {
    loss = diff.square().sum().to(at::kDouble).div_(count);
    grad = diff.mul(2.0 / count);
  } else {
    TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(0), "MLP loss: weight must have shape (", x.size(0), ")");
    at::Tensor w = weight.to(diff.options()).unsqueeze(1);
    loss = (diff.square() * w).sum().to(at::kDouble).div_(count);
    grad = diff.mul(w).mul_(2.0 / count);
  }
  for (size_t k = n; k-- > 0;) {
    auto& layer = *layers_[k]->as<torch::nn::Linear>();
    at::Tensor& gw = layer.weight.mutable_grad();
    at::Tensor& gb = layer.bias.mutable_grad();
    if (gw.defined()) {
      at::mm_out(gw, grad.t(), inputs[k]);
    } else {
      gw = at::mm(grad.t(), inputs[k]);
    }
    if (gb.defined()) {
      at::sum_out(gb, grad, {0});
    } else {
      gb = grad.sum(0);
    }
    if (k > 0) {
      at::Tensor g = at::mm(grad, layer.weight);
      if (drop) g.mul_(masks[k - 1]);
      grad = activation_backward(g, preactivations[k - 1], activations[k - 1]);
    }
  }
  return loss;
}

std::pair<at::Tensor, at::Tensor> MLPImpl::forward_with_divergence(const at::Tensor& x, const at::Tensor& t) {
  TORCH_CHECK(options.in_dim() == options.dim(), "MLP divergence: input width ", options.in_dim(), " is not the output's ", options.dim());
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options.dim(), "MLP expects x of shape (B, ", options.dim(), "), got ", x.sizes());
  TORCH_CHECK(!dropping(), "MLP divergence in training mode with dropout ", options.dropout(),
              ": the divergence is of the whole network; call eval() first");
  at::NoGradGuard no_grad;
  const int64_t batch = x.size(0), dim = options.dim();
  const size_t n = layers_->size();
  at::Tensor h = at::cat({x, encode_time(t, batch, x.options())}, 1);
  at::Tensor tangent;  // (B, D, width): ∂h_k/∂x_i of the current layer's output, per input direction i
  for (size_t i = 0; i + 1 < n; ++i) {
    auto& layer = *layers_[i]->as<torch::nn::Linear>();
    at::Tensor z = at::addmm(layer.bias, h, layer.weight.t());
    at::Tensor a = activate(z);
    at::Tensor slope = activation_backward(at::ones_like(z), z, a);  // act'(z)
    // The first layer's tangents are its weight columns for x, the same for every sample.
    at::Tensor tz = i == 0 ? layer.weight.narrow(1, 0, dim).t().unsqueeze(0)
                           : at::mm(tangent.reshape({batch * dim, -1}), layer.weight.t()).reshape({batch, dim, -1});
    tangent = tz * slope.unsqueeze(1);
    h = a;
  }
  auto& last = *layers_[n - 1]->as<torch::nn::Linear>();
  at::Tensor v = at::addmm(last.bias, h, last.weight.t());
  // div = Σ_i ∂v_i/∂x_i = Σ_i Σ_k W[i, k]·∂h_k/∂x_i: only the diagonal of the output's Jacobian.
  at::Tensor div = (tangent * last.weight.unsqueeze(0)).sum({1, 2});
  return {v, div};
}

nlohmann::json MLPImpl::spec() const { return {{"type", "mlp"}, {"options", to_json(options)}}; }

}  // namespace flowmatch::models
