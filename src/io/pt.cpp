#include "flowmatch/io/pt.h"

#include <filesystem>
#include <stdexcept>

#include <ATen/ATen.h>
#include <torch/serialize.h>  // torch::pickle_save, torch::pickle_load

#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"

namespace flowmatch::io {

void save_pt(const std::string& path, const at::Tensor& tensor) {
  if (!tensor.defined()) throw std::invalid_argument("save_pt: undefined tensor");
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(tensor.detach().to(at::kCPU).contiguous()));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

at::Tensor load_pt(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("'" + path + "' does not exist or is not a file");
  const std::string bytes = read_file(path);
  c10::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    throw std::runtime_error("'" + path + "' is not a PyTorch tensor file: " + what.substr(0, what.find('\n')));
  }
  if (!value.isTensor()) {
    throw std::runtime_error("'" + path + "' holds a " + value.tagKind() + ", expected one tensor (torch.save(tensor, path))");
  }
  const at::Tensor tensor = value.toTensor();
  if (tensor.is_complex()) {
    throw std::runtime_error("'" + path + "' holds a complex tensor (" + std::string(c10::toString(tensor.scalar_type())) +
                             "); expected real numbers");
  }
  return tensor;
}

namespace {
bool is_pt(const std::string& path) { return std::filesystem::path(path).extension() == ".pt"; }
}  // namespace

void save_array(const std::string& path, const at::Tensor& tensor) {
  if (is_pt(path)) {
    save_pt(path, tensor);
  } else {
    save_npy(path, tensor);
  }
}

at::Tensor load_array(const std::string& path) { return is_pt(path) ? load_pt(path) : load_npy(path); }

}  // namespace flowmatch::io
