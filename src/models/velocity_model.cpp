#include "flowmatch/models/velocity_model.h"

#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "flowmatch/models/mlp.h"
#include "flowmatch/models/torchscript.h"
#include "flowmatch/models/unet.h"

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

std::shared_ptr<VelocityModel> make_model(const nlohmann::json& spec) {
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    throw std::invalid_argument("model description must be an object with a string \"type\", got " +
                                spec.dump());
  }
  const std::string type = spec["type"];
  const nlohmann::json options = spec.value("options", nlohmann::json::object());
  if (type == "mlp") return std::make_shared<MLPImpl>(mlp_options_from_json(options));
  if (type == "unet") return std::make_shared<UNetImpl>(unet_options_from_json(options));
  if (type == "torchscript") {
    if (!spec.contains("file") || !spec["file"].is_string()) {
      throw std::invalid_argument("torchscript model description needs \"file\", got " + spec.dump());
    }
    return std::make_shared<TorchScriptModel>(spec["file"].get<std::string>());
  }
  throw std::invalid_argument("unknown model type '" + type + "' (expected: mlp, unet, torchscript)");
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
