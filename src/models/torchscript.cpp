#include "flowmatch/models/torchscript.h"

#include "flowmatch/io/atomic_file.h"
#include "flowmatch/models/mlp.h"

#include <filesystem>
#include <sstream>
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
  c10::IValue out;
  try {
    out = module_.forward({x, times});
  } catch (const std::exception& e) {
    // The interpreter's message (a c10::Error, or a torch::jit::JITException for an exception raised in
    // the script) starts with "The following operation failed in the TorchScript interpreter." and a
    // traceback; the cause is its last "...Error: ..." line.
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    const std::string what = c10_error ? c10_error->what_without_backtrace() : e.what();
    std::string cause;
    size_t start = 0;
    while (start < what.size()) {
      size_t end = what.find('\n', start);
      if (end == std::string::npos) end = what.size();
      const std::string line = what.substr(start, end - start);
      if (line.find("Error: ") != std::string::npos && line.find("Traceback") == std::string::npos) cause = line;
      start = end + 1;
    }
    if (cause.empty()) cause = what.substr(0, what.find('\n'));
    throw std::runtime_error("TorchScript model '" + path_ + "' failed on x of shape " + c10::str(x.sizes()) + ": " + cause);
  }
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

void export_torchscript(const VelocityModel& model, const std::string& path) {
  const auto* mlp = dynamic_cast<const MLPImpl*>(&model);
  if (!mlp) throw std::invalid_argument("export_torchscript: supports MLP models, got " + model.spec().dump());
  int64_t bad = 0, total = 0;
  for (const auto& p : mlp->parameters()) {
    bad += (~at::isfinite(p)).sum().item<int64_t>();
    total += p.numel();
  }
  if (bad > 0) {
    throw std::runtime_error("the network's weights are not finite (" + std::to_string(bad) + " of " + std::to_string(total) +
                             " values); nothing exported");
  }
  const MLPOptions& o = mlp->options;
  torch::jit::Module module("FlowmatchMLP");
  std::ostringstream code;
  code << "def forward(self, x, t):\n"
       << "    if t.dim() == 0:\n"
       << "        t = t.expand(x.shape[0])\n"
       << "    t = t.reshape(-1, 1).to(x.dtype)\n";
  if (o.time_encoding() == TimeEncoding::Sinusoidal) {
    code << "    a = t * self.frequencies.to(x.dtype).unsqueeze(0)\n"
         << "    h = torch.cat([x, torch.sin(a), torch.cos(a)], 1)\n";
  } else {
    code << "    h = torch.cat([x, t], 1)\n";
  }
  torch::NoGradGuard no_grad;
  int64_t layer = 0;
  for (const auto& p : mlp->named_parameters(/*recurse=*/true)) {
    // layers.<k>.weight / layers.<k>.bias, in order.
    const std::string name = p.key();
    const std::string kind = name.substr(name.rfind('.') + 1);
    const std::string index = name.substr(name.find('.') + 1, name.rfind('.') - name.find('.') - 1);
    module.register_parameter((kind == "weight" ? "w" : "b") + index, p.value().detach().to(at::kCPU, at::kFloat).clone(), false);
    if (kind == "weight") layer = std::max<int64_t>(layer, std::stoll(index) + 1);
  }
  for (const auto& b : mlp->named_buffers(/*recurse=*/true)) {
    module.register_buffer(b.key(), b.value().detach().to(at::kCPU, at::kFloat).clone());
  }
  for (int64_t k = 0; k < layer; ++k) {
    code << "    h = torch.matmul(h, self.w" << k << ".to(x.dtype).t()) + self.b" << k << ".to(x.dtype)\n";
    if (k + 1 == layer) break;
    switch (o.activation()) {
      case Activation::SELU: code << "    h = torch.selu(h)\n"; break;
      case Activation::ReLU: code << "    h = torch.relu(h)\n"; break;
      case Activation::SiLU: code << "    h = h * torch.sigmoid(h)\n"; break;
      case Activation::GELU: code << "    h = 0.5 * h * (1.0 + torch.erf(h * 0.7071067811865476))\n"; break;
    }
  }
  code << "    return h\n";
  module.define(code.str());
  std::ostringstream bytes;
  module.save(bytes);
  io::write_file_atomic(path, bytes.str());
}

}  // namespace flowmatch::models
