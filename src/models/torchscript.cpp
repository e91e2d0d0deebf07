#include "flowmatch/models/torchscript.h"

#include <filesystem>
#include <stdexcept>

#include <ATen/ATen.h>
#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/jit/serialization/import.h>

namespace flowmatch::models {

namespace {
constexpr const char* kSignature = "forward(self, x: Tensor, t: Tensor) -> Tensor";
}

TorchScriptModel::TorchScriptModel(const std::string& path) : path_(path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw std::runtime_error("TorchScript model '" + path + "' does not exist or is not a file");
  }
  try {
    module_ = torch::jit::load(path, c10::kCPU);
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (what.find("maximum supported version") != std::string::npos || what.find("too old") != std::string::npos) {
      throw std::runtime_error("TorchScript model '" + path + "' was written by a newer PyTorch than the LibTorch " +
                               std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                               " linked here; save it with a PyTorch of that version or link a newer LibTorch");
    }
    throw std::runtime_error("'" + path + "' is not a TorchScript archive (save the model with torch.jit.save): " +
                             what.substr(0, what.find('\n')));
  }
  if (!module_.find_method("forward")) {
    throw std::runtime_error("TorchScript model '" + path + "' has no forward method; expected " + kSignature);
  }
  const auto& schema = module_.get_method("forward").function().getSchema();
  const size_t inputs = schema.arguments().size();  // self, x, t
  if (inputs != 3 || schema.returns().size() != 1) {
    throw std::runtime_error("TorchScript model '" + path + "' has " + schema.name() + "(" +
                             std::to_string(inputs > 0 ? inputs - 1 : 0) + " arguments); expected " + kSignature +
                             " (class-conditional forward(x, t, y) models are not supported yet)");
  }
  module_.eval();
  // Parameters are shared with the scripted module: registered here so that moving, counting and
  // copying them works as for any VelocityModel.
  for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
    std::string name = p.name;
    for (auto& ch : name)
      if (ch == '.') ch = '_';
    register_parameter(name, p.value, p.value.requires_grad());
  }
}

at::Tensor TorchScriptModel::forward(const at::Tensor& x, const at::Tensor& t) {
  at::Tensor times = time_column(t, x.size(0), x.options()).reshape({x.size(0)});
  c10::IValue out = module_.forward({x, times});
  if (!out.isTensor()) {
    throw std::runtime_error("TorchScript model '" + path_ + "' returned " + out.tagKind() + ", expected a Tensor");
  }
  at::Tensor v = out.toTensor();
  if (v.sizes() != x.sizes()) {
    throw std::runtime_error("TorchScript model '" + path_ + "' returned shape " + c10::str(v.sizes()) + " for x of shape " +
                             c10::str(x.sizes()) + "; the velocity must be shaped like x");
  }
  return v;
}

nlohmann::json TorchScriptModel::spec() const { return {{"type", "torchscript"}, {"file", path_}}; }

}  // namespace flowmatch::models
