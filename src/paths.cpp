#include "flowmatch/paths.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace flowmatch {

at::Tensor expand_time_like(const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.defined() && x.defined(), "expand_time_like: undefined tensor");
  if (t.dim() == 0) return t.to(x.options());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(0), "time of shape ", t.sizes(),
              " does not match a batch of shape ", x.sizes(), " (expected (", x.size(0), "))");
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  return t.to(x.options()).view(shape);
}

CondOTPath::CondOTPath(CondOTPathOptions options) : options_(options) {
  if (!(options_.sigma() >= 0.0) || !std::isfinite(options_.sigma())) {
    throw std::invalid_argument("CondOTPath: sigma must be finite and >= 0, got " +
                                std::to_string(options_.sigma()));
  }
}

PathSample CondOTPath::sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                              std::optional<at::Generator> generator) const {
  TORCH_CHECK(x0.sizes() == x1.sizes(), "CondOTPath: x0 ", x0.sizes(), " and x1 ", x1.sizes(),
              " must have the same shape");
  at::Tensor tt = expand_time_like(t, x0);
  PathSample out;
  out.velocity = x1 - x0;
  out.x_t = at::addcmul(x0, tt, out.velocity);  // (1 − t) x0 + t x1
  if (options_.sigma() > 0.0) {
    c10::optional<at::Generator> gen;
    if (generator) gen = *generator;
    out.x_t.add_(at::randn(x0.sizes(), gen, x0.options()), options_.sigma());
  }
  return out;
}

nlohmann::json CondOTPath::spec() const { return {{"type", "condot"}, {"sigma", options_.sigma()}}; }

std::shared_ptr<ProbabilityPath> make_path(const nlohmann::json& spec) {
  const std::string type = spec.is_string() ? spec.get<std::string>() : spec.value("type", std::string());
  if (type == "condot") {
    const double sigma = spec.is_object() ? spec.value("sigma", 0.0) : 0.0;
    return std::make_shared<CondOTPath>(CondOTPathOptions().sigma(sigma));
  }
  throw std::invalid_argument("unknown path '" + type + "' (expected: condot)");
}

}  // namespace flowmatch
