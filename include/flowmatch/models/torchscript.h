#pragma once
/// \file
/// A velocity model from a TorchScript file (`torch.jit.script` or `torch.jit.trace`, saved with
/// `torch.jit.save`), so a model trained in PyTorch samples, gives likelihoods and is evaluated in C++.
///
/// Expected signature: `forward(self, x: Tensor, t: Tensor) -> Tensor` with x of shape (B, ...), t of
/// shape (B) (one time per row, x's dtype) and a result shaped like x.

#include <memory>
#include <string>

#include <torch/csrc/jit/api/module.h>

#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

class TorchScriptModel : public VelocityModel {
 public:
  /// Loads and checks `path`. Throws std::runtime_error naming the file when it is missing, is not a
  /// TorchScript archive, comes from a newer PyTorch than the LibTorch linked here, or has no
  /// `forward(x, t)`.
  explicit TorchScriptModel(const std::string& path);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  /// {"type": "torchscript", "file": path}.
  nlohmann::json spec() const override;
  const std::string& file() const { return path_; }

 private:
  std::string path_;
  torch::jit::Module module_;
};

/// Writes `model` (an `MLP`) as a TorchScript file that PyTorch loads with `torch.jit.load(path)` and calls
/// as `v(x, t)` (x: (B, D), t: (B) or a scalar), the same function as the C++ model (float32 weights).
/// Throws std::invalid_argument for a model type it cannot express, std::runtime_error when writing fails.
void export_torchscript(const VelocityModel& model, const std::string& path);

}  // namespace flowmatch::models
