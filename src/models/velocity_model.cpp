#include "flowmatch/models/velocity_model.h"

#include <algorithm>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/accumulate.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "flowmatch/models/discrete_mlp.h"
#include "flowmatch/models/dit.h"
#include "flowmatch/models/mmdit.h"
#include "flowmatch/models/egnn.h"
#include "flowmatch/models/manifold_mlp.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/torchscript.h"
#include "flowmatch/models/transformer.h"
#include "flowmatch/models/unet.h"
#include "../registry.h"

namespace flowmatch::models {

std::shared_ptr<VelocityModel> VelocityModel::clone_model() const {
  auto copy = make_model(spec());
  copy_parameters(*this, *copy);
  return copy;
}

at::Tensor VelocityModel::forward_conditional(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  throw std::invalid_argument("this " + spec().value("type", std::string("model")) +
                              " network is not class-conditional (it takes no labels)");
}

void check_labels(const at::Tensor& labels, int64_t batch, int64_t num_classes) {
  if (num_classes <= 0) throw std::invalid_argument("labels given to a network that is not class-conditional");
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != batch || labels.scalar_type() != at::kLong) {
    throw std::invalid_argument("labels must be an int64 tensor of shape (" + std::to_string(batch) + "), got " +
                                (labels.defined() ? std::string(c10::toString(labels.scalar_type())) + " " +
                                                        c10::str(labels.sizes())
                                                  : std::string("undefined")));
  }
  if (batch == 0) return;
  const at::Tensor bad = (labels >= num_classes).logical_or((labels < 0).logical_and(labels != kNullLabel));
  if (bad.any().item<bool>()) {
    const int64_t first = bad.nonzero()[0][0].item<int64_t>();
    throw std::invalid_argument("label " + std::to_string(labels[first].item<int64_t>()) + " at row " + std::to_string(first) +
                                " is outside [0, " + std::to_string(num_classes) + ") and is not the null label " +
                                std::to_string(kNullLabel));
  }
}

at::Tensor VelocityModel::forward_with(const at::Tensor& x, const at::Tensor& t, const Conditioning& c) {
  if (c.context.defined() || c.context_mask.defined() || c.mask.defined()) {
    throw std::invalid_argument("this " + spec().value("type", std::string("model")) +
                                " network takes no " + (c.mask.defined() ? "element mask" : "token context"));
  }
  return c.labels.defined() ? forward_conditional(x, t, c.labels) : forward(x, t);
}

at::Tensor VelocityModel::fused_regression_loss_and_gradients(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                              const at::Tensor&) {
  throw std::invalid_argument("this " + spec().value("type", std::string("model")) +
                              " network has no fused regression loss (supports_fused_regression() is false)");
}

std::pair<at::Tensor, at::Tensor> VelocityModel::forward_with_divergence(const at::Tensor&, const at::Tensor&) {
  throw std::invalid_argument("this " + spec().value("type", std::string("model")) +
                              " network has no fused divergence (supports_divergence() is false)");
}

Conditioning Conditioning::to(const c10::Device& device) const {
  auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  return {move(labels), move(context), move(context_mask), move(mask)};
}

Conditioning Conditioning::narrow(int64_t start, int64_t length) const {
  auto part = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, start, length) : t; };
  return {part(labels), part(context), part(context_mask), part(mask)};
}

nlohmann::json normalized_options(const std::string& type, const nlohmann::json& options, const std::vector<std::string>& known) {
  nlohmann::json out = nlohmann::json::object();
  if (options.is_null()) return out;
  if (!options.is_object()) throw std::invalid_argument("model options must be an object, got " + options.dump());
  for (const auto& [key, value] : options.items()) {
    std::string k = key;
    for (char& ch : k)
      if (ch == '-') ch = '_';
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      std::string list;
      for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
      throw std::invalid_argument("model option '" + key + "' does not apply to model " + type + " (it takes: " +
                                  (list.empty() ? std::string("none") : list) + ")");
    }
    out[k] = value;
  }
  return out;
}

namespace {

// User options: keys as the train flags (dashes or underscores); an unknown key is an error naming
// the type's options.

detail::Registry<ModelRegistration>& model_registry() {
  static auto* registry = [] {
    auto* r = new detail::Registry<ModelRegistration>;
    const std::vector<std::string> mlp_keys = {"width", "depth", "activation", "time_encoding", "time_features", "dropout"};
    r->add("mlp",
         {[mlp_keys](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
            if (classes > 0) throw std::invalid_argument("model mlp is not class-conditional; this data has " + std::to_string(classes) + " classes");
            const nlohmann::json o = normalized_options("mlp", given, mlp_keys);
            MLPOptions mlp(c10::multiply_integers(shape));
            try {
              mlp.width(o.value("width", mlp.width()))
                  .depth(o.value("depth", mlp.depth()))
                  .activation(activation_from_string(o.value("activation", to_string(mlp.activation()))))
                  .time_encoding(time_encoding_from_string(o.value("time_encoding", to_string(mlp.time_encoding()))))
                  .time_features(o.value("time_features", mlp.time_features()))
                  .dropout(o.value("dropout", mlp.dropout()));
            } catch (const nlohmann::json::exception& e) {
              throw std::invalid_argument("model mlp options " + o.dump() + ": " + e.what());
            }
            if (!(mlp.dropout() >= 0 && mlp.dropout() <= MLPOptions::kMaxDropout)) {
              throw std::invalid_argument("model mlp dropout " + std::to_string(mlp.dropout()) + ": expected a number in [0, " +
                                          c10::str(MLPOptions::kMaxDropout) + "]");
            }
            return nlohmann::json{{"type", "mlp"}, {"options", to_json(mlp)}};
          },
          [](const nlohmann::json& spec) -> std::shared_ptr<VelocityModel> {
            return std::make_shared<MLPImpl>(mlp_options_from_json(spec.value("options", nlohmann::json::object())));
          },
          "multilayer perceptron on flattened samples, t as an input (width, depth, activation, time-encoding, dropout)",
          mlp_keys});
    r->add("manifold-mlp", manifold_mlp_registration());
    r->add("discrete-mlp", discrete_mlp_registration());
    r->add("transformer", token_transformer_registration());
    r->add("dit", dit_registration());
    r->add("mmdit", mmdit_registration());
    r->add("egnn", egnn_registration());
    const std::vector<std::string> unet_keys = {"channels", "channel_mult", "blocks", "heads", "dropout", "no_attention"};
    r->add("unet",
         {[unet_keys](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
            if (shape.size() != 3) {
              throw std::invalid_argument("model unet needs images (channels, height, width), got samples of " +
                                          std::to_string(shape.size()) + " dimension(s)");
            }
            if (shape[1] != shape[2]) {
              throw std::invalid_argument("the U-Net needs square images, got " + std::to_string(shape[1]) + "x" + std::to_string(shape[2]));
            }
            const nlohmann::json o = normalized_options("unet", given, unet_keys);
            UNetOptions unet(shape[0], shape[1]);
            // The default levels ×1 ×2 ×2, fewer where the image does not halve that often (a 7×7 latent: one).
            while (unet.channel_multipliers().size() > 1 && shape[1] % (int64_t{1} << (unet.channel_multipliers().size() - 1)) != 0) {
              unet.channel_multipliers().pop_back();
            }
            try {
              unet.base_channels(o.value("channels", unet.base_channels()))
                  .channel_multipliers(o.value("channel_mult", unet.channel_multipliers()))
                  .blocks_per_level(o.value("blocks", unet.blocks_per_level()))
                  .attention(!o.value("no_attention", false))
                  .attention_heads(o.value("heads", unet.attention_heads()))
                  .dropout(o.value("dropout", unet.dropout()))
                  .num_classes(classes);
            } catch (const nlohmann::json::exception& e) {
              throw std::invalid_argument("model unet options " + o.dump() + ": " + e.what());
            }
            return UNetImpl(unet).spec();  // validates
          },
          [](const nlohmann::json& spec) -> std::shared_ptr<VelocityModel> {
            return std::make_shared<UNetImpl>(unet_options_from_json(spec.value("options", nlohmann::json::object())));
          },
          "U-Net on square images with class conditioning (channels, channel-mult, blocks, heads, dropout, no-attention)",
          unet_keys});
    r->add("torchscript",
         {[](const std::vector<int64_t>&, int64_t, const nlohmann::json&) -> nlohmann::json {
            throw std::invalid_argument("model torchscript is loaded from a file (--model-file), not trained");
          },
          [](const nlohmann::json& spec) -> std::shared_ptr<VelocityModel> {
            if (!spec.contains("file") || !spec["file"].is_string()) {
              throw std::invalid_argument("torchscript model description needs \"file\", got " + spec.dump());
            }
            return std::make_shared<TorchScriptModel>(spec["file"].get<std::string>());
          },
          "a TorchScript module saved by PyTorch with forward(x, t)",
          {}});
    return r;
  }();
  return *registry;
}

}  // namespace

void register_model(const std::string& type, ModelRegistration registration) {
  if (type.empty() || !registration.describe || !registration.build) {
    throw std::invalid_argument("register_model: a type name, describe and build are required");
  }
  model_registry().add(type, std::move(registration));
}

std::vector<std::string> model_names() { return model_registry().names(); }

ModelRegistration model_registration(const std::string& type) {
  const auto registration = model_registry().find(type);
  if (!registration) throw std::invalid_argument("unknown model type '" + type + "' (expected: " + model_registry().known() + ")");
  return *registration;
}

std::shared_ptr<VelocityModel> make_model(const nlohmann::json& spec) {
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    throw std::invalid_argument("model description must be an object with a string \"type\", got " +
                                spec.dump());
  }
  return model_registration(spec["type"].get<std::string>()).build(spec);
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto src = from.named_parameters(true);
  auto dst = to.named_parameters(true);
  if (src.size() != dst.size()) {
    throw std::invalid_argument("copy_parameters: " + std::to_string(src.size()) +
                                " parameters in the source, " + std::to_string(dst.size()) +
                                " in the destination");
  }
  for (const auto& item : src) {
    auto* target = dst.find(item.key());
    if (target == nullptr || !target->sizes().equals(item.value().sizes())) {
      throw std::invalid_argument("copy_parameters: parameter '" + item.key() +
                                  "' is missing or has another shape in the destination");
    }
    target->copy_(item.value());
  }
  auto src_buffers = from.named_buffers(true);
  auto dst_buffers = to.named_buffers(true);
  for (const auto& item : src_buffers) {
    auto* target = dst_buffers.find(item.key());
    if (target != nullptr && target->sizes().equals(item.value().sizes())) target->copy_(item.value());
  }
}

at::Tensor time_column(const at::Tensor& t, int64_t batch, const at::TensorOptions& options) {
  TORCH_CHECK(t.defined(), "time tensor is undefined");
  at::Tensor tt = t.to(options);
  if (tt.dim() == 0) return tt.reshape({1, 1}).expand({batch, 1});
  if (tt.dim() == 1 && tt.size(0) == batch) return tt.unsqueeze(1);
  if (tt.dim() == 1 && tt.size(0) == 1) return tt.reshape({1, 1}).expand({batch, 1});
  if (tt.dim() == 2 && tt.size(0) == batch && tt.size(1) == 1) return tt;
  TORCH_CHECK(false, "time tensor of shape ", tt.sizes(), " does not fit a batch of ", batch,
              " (expected a 0-dim tensor, (", batch, ") or (", batch, ", 1))");
}

}  // namespace flowmatch::models
