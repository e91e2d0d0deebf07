// AutocastGuard (include/flowmatch/autocast.h) over LibTorch's autocast state, whose functions were
// renamed in LibTorch 2.4 (one set per device type became one function taking the device type).

#include "flowmatch/autocast.h"

#include <stdexcept>
#include <string>

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace flowmatch {

namespace {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
void set_enabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
c10::ScalarType dtype(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
void set_dtype(c10::DeviceType d, c10::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
bool enabled(c10::DeviceType d) { return d == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
void set_enabled(c10::DeviceType d, bool on) {
  if (d == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_cpu_enabled(on);
  }
}
c10::ScalarType dtype(c10::DeviceType d) {
  return d == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_dtype(c10::DeviceType d, c10::ScalarType t) {
  if (d == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(t);
  } else {
    at::autocast::set_autocast_cpu_dtype(t);
  }
}
#endif

}  // namespace

AutocastGuard::AutocastGuard(c10::DeviceType device, c10::ScalarType to) : device_(device) {
  if (device != c10::DeviceType::CPU && device != c10::DeviceType::CUDA) {
    throw std::invalid_argument(std::string("autocast: device type ") + c10::DeviceTypeName(device) + " is not supported (expected cpu or cuda)");
  }
  if (to != c10::ScalarType::BFloat16 && to != c10::ScalarType::Half) {
    throw std::invalid_argument(std::string("autocast: dtype ") + c10::toString(to) + " is not supported (expected bfloat16 or float16)");
  }
  was_enabled_ = enabled(device);
  previous_dtype_ = dtype(device);
  set_dtype(device, to);
  set_enabled(device, true);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_enabled(device_, was_enabled_);
  set_dtype(device_, previous_dtype_);
}

}  // namespace flowmatch
