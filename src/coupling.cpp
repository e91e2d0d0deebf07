#include "flowmatch/coupling.h"

#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "flowmatch/assignment.h"

namespace flowmatch {

namespace {
void check_batches(const at::Tensor& x0, const at::Tensor& x1, const char* who) {
  TORCH_CHECK(x0.defined() && x1.defined() && x0.dim() >= 1 && x1.dim() >= 1, who,
              ": undefined or 0-dim batch");
  TORCH_CHECK(x0.sizes().slice(1) == x1.sizes().slice(1), who, ": source ", x0.sizes(),
              " and target ", x1.sizes(), " differ beyond the batch dimension");
}
}  // namespace

CoupledBatch IndependentCoupling::pair(const at::Tensor& x0, const at::Tensor& x1,
                                       std::optional<at::Generator>) const {
  check_batches(x0, x1, "IndependentCoupling");
  TORCH_CHECK(x0.size(0) == x1.size(0), "IndependentCoupling: batch sizes differ (", x0.size(0),
              " vs ", x1.size(0), ")");
  return {x0, x1};
}

nlohmann::json IndependentCoupling::spec() const { return {{"type", "independent"}}; }

CoupledBatch ExactOTCoupling::pair(const at::Tensor& x0, const at::Tensor& x1,
                                   std::optional<at::Generator>) const {
  check_batches(x0, x1, "ExactOTCoupling");
  TORCH_CHECK(x0.size(0) == x1.size(0), "ExactOTCoupling: batch sizes differ (", x0.size(0), " vs ",
              x1.size(0), "); equal sizes give a permutation plan");
  const int64_t n = x0.size(0);
  at::Tensor cost = squared_distances(x0.reshape({n, -1}).to(at::kCPU, at::kDouble),
                                      x1.reshape({n, -1}).to(at::kCPU, at::kDouble));
  Assignment plan = solve_assignment(cost);
  at::Tensor index = at::from_blob(plan.column_of_row.data(), {n}, at::kLong).to(x1.device());
  return {x0, x1.index_select(0, index)};
}

nlohmann::json ExactOTCoupling::spec() const { return {{"type", "exact-ot"}}; }

std::vector<std::string> coupling_names() { return {"independent", "exact-ot"}; }

std::shared_ptr<Coupling> make_coupling(const nlohmann::json& spec) {
  const std::string type = spec.is_string() ? spec.get<std::string>() : spec.value("type", std::string());
  if (type == "independent") return std::make_shared<IndependentCoupling>();
  if (type == "exact-ot") return std::make_shared<ExactOTCoupling>();
  std::string valid;
  for (const auto& n : coupling_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown coupling '" + type + "' (expected: " + valid + ")");
}

}  // namespace flowmatch
