#pragma once
/// \file
/// PyTorch tensor files: a tensor pickled with LibTorch's `torch::pickle_save` (which Python's
/// `torch.load` reads) and files written by Python's `torch.save(tensor, path)` (read with
/// `torch::pickle_load`). Plus one reader/writer for points that picks .npy or .pt by extension.

#include <map>
#include <string>

#include <ATen/Tensor.h>

namespace flowmatch::io {

/// Writes a tensor (CPU copy) atomically as a PyTorch file.
void save_pt(const std::string& path, const at::Tensor& tensor);
/// Reads a PyTorch file holding one tensor; std::runtime_error naming the file when it is missing,
/// not a PyTorch file, or holds something else than a tensor.
at::Tensor load_pt(const std::string& path);

/// Reads a PyTorch file of tensors in (nested) dictionaries, e.g. `torch.save({"state_dict":
/// model.state_dict(), "points": x}, path)`: each tensor under its keys joined by '.'
/// ("state_dict.net.0.weight"); a file of one tensor gives it under "". std::runtime_error naming the
/// file when it is not a PyTorch file or holds anything else than tensors under string keys.
std::map<std::string, at::Tensor> load_pt_tensors(const std::string& path);

/// Writes named tensors (CPU copies) atomically as a PyTorch file of one dictionary, which Python's
/// `torch.load` reads as {name: tensor}.
void save_pt_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors);

/// .pt (PyTorch) or anything else (.npy) by the file's extension.
void save_array(const std::string& path, const at::Tensor& tensor);
at::Tensor load_array(const std::string& path);

}  // namespace flowmatch::io
