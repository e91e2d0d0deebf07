#include "flowmatch/coupling.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "flowmatch/assignment.h"
#include "flowmatch/particles.h"

namespace flowmatch {

namespace {

void check_batches(const at::Tensor& x0, const at::Tensor& x1, const char* who) {
  TORCH_CHECK(x0.defined() && x1.defined() && x0.dim() >= 1 && x1.dim() >= 1, who,
              ": undefined or 0-dim batch");
  TORCH_CHECK(x0.sizes().slice(1) == x1.sizes().slice(1), who, ": source ", x0.sizes(),
              " and target ", x1.sizes(), " differ beyond the batch dimension");
  TORCH_CHECK(x0.size(0) > 0 && x1.size(0) > 0, who, ": empty batch (", x0.size(0), " sources, ",
              x1.size(0), " targets)");
}


CoupledBatch gather(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& i0, const at::Tensor& i1) {
  return {x0.index_select(0, i0.to(x0.device())), x1.index_select(0, i1.to(x1.device())), {}};
}

c10::optional<at::Generator> as_c10(const std::optional<at::Generator>& generator) {
  c10::optional<at::Generator> out;
  if (generator) out = *generator;
  return out;
}

// k indices into s rows, each used ⌊k/s⌋ or ⌈k/s⌉ times, in random order.
at::Tensor balanced_indices(int64_t s, int64_t k, std::optional<at::Generator> generator) {
  std::vector<at::Tensor> parts;
  for (int64_t have = 0; have < k; have += s) parts.push_back(at::randperm(s, as_c10(generator), at::kLong));
  return at::cat(parts).slice(0, 0, k);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> draw_pairs_from_plan(const at::Tensor& plan, std::optional<at::Generator> generator) {
  TORCH_CHECK(plan.defined() && plan.dim() == 2 && plan.size(0) > 0 && plan.size(1) > 0,
              "draw_pairs_from_plan: expects a non-empty (n, m) plan");
  at::Tensor p = plan.to(at::kCPU, at::kDouble);
  TORCH_CHECK((p >= 0).all().item<bool>() && at::isfinite(p).all().item<bool>(),
              "draw_pairs_from_plan: the plan has negative or non-finite entries");
  const int64_t n = p.size(0), m = p.size(1);
  if (n >= m) {
    TORCH_CHECK((p.sum(1) > 0).all().item<bool>(), "draw_pairs_from_plan: a source row carries no mass");
    return {at::arange(n, at::kLong), at::multinomial(p, 1, false, as_c10(generator)).squeeze(1)};
  }
  TORCH_CHECK((p.sum(0) > 0).all().item<bool>(), "draw_pairs_from_plan: a target column carries no mass");
  return {at::multinomial(p.t().contiguous(), 1, false, as_c10(generator)).squeeze(1), at::arange(m, at::kLong)};
}

CoupledBatch Coupling::pair_within_labels(const at::Tensor& x0, const at::Tensor& labels0, const at::Tensor& x1,
                                          const at::Tensor& labels1, std::optional<at::Generator> generator) const {
  check_batches(x0, x1, "pair_within_labels");
  auto check_labels = [](const at::Tensor& labels, int64_t rows, const char* side) {
    TORCH_CHECK(labels.dim() == 1 && labels.size(0) == rows, "pair_within_labels: ", side,
                " labels must have shape (", rows, "), got ", labels.sizes());
    TORCH_CHECK(!at::isFloatingType(labels.scalar_type()) && !at::isComplexType(labels.scalar_type()),
                "pair_within_labels: ", side, " labels must be integers, got ", labels.scalar_type());
    return labels.to(at::kCPU, at::kLong).contiguous();
  };
  TORCH_CHECK(labels1.defined(), "pair_within_labels: target labels are required");
  at::Tensor y1 = check_labels(labels1, x1.size(0), "target");
  std::map<int64_t, std::vector<int64_t>> rows1, rows0;
  for (int64_t i = 0; i < y1.size(0); ++i) rows1[y1.data_ptr<int64_t>()[i]].push_back(i);
  if (labels0.defined()) {
    at::Tensor y0 = check_labels(labels0, x0.size(0), "source");
    for (int64_t i = 0; i < y0.size(0); ++i) rows0[y0.data_ptr<int64_t>()[i]].push_back(i);
    for (const auto& [label, rows] : rows0) {
      if (!rows1.count(label)) {
        throw std::invalid_argument("pair_within_labels: label " + std::to_string(label) + " has " +
                                    std::to_string(rows.size()) + " source rows but no target row");
      }
    }
    for (const auto& [label, rows] : rows1) {
      if (!rows0.count(label)) {
        throw std::invalid_argument("pair_within_labels: label " + std::to_string(label) + " has " +
                                    std::to_string(rows.size()) + " target rows but no source row");
      }
    }
  } else {
    TORCH_CHECK(x0.size(0) == x1.size(0), "pair_within_labels: unlabeled sources need as many rows as the targets (",
                x0.size(0), " vs ", x1.size(0), ")");
    int64_t next = 0;
    for (const auto& [label, rows] : rows1) {
      for (size_t k = 0; k < rows.size(); ++k) rows0[label].push_back(next++);
    }
  }
  std::vector<at::Tensor> out0, out1, out_labels;
  for (const auto& [label, rows] : rows1) {
    auto index = [](const std::vector<int64_t>& r) {
      return at::tensor(at::ArrayRef<int64_t>(r), at::kLong);
    };
    const at::Tensor i0 = index(rows0[label]).to(x0.device()), i1 = index(rows).to(x1.device());
    CoupledBatch part = pair(x0.index_select(0, i0), x1.index_select(0, i1), generator);
    out_labels.push_back(at::full({part.x0.size(0)}, label, at::TensorOptions().dtype(at::kLong).device(x1.device())));
    out0.push_back(part.x0);
    out1.push_back(part.x1);
  }
  return {at::cat(out0), at::cat(out1), at::cat(out_labels)};
}

CoupledBatch IndependentCoupling::pair(const at::Tensor& x0, const at::Tensor& x1,
                                       std::optional<at::Generator> generator) const {
  check_batches(x0, x1, "IndependentCoupling");
  const int64_t n = x0.size(0), m = x1.size(0);
  if (n == m) return {x0, x1, {}};
  if (n > m) return gather(x0, x1, at::arange(n, at::kLong), balanced_indices(m, n, generator));
  return gather(x0, x1, balanced_indices(n, m, generator), at::arange(m, at::kLong));
}

nlohmann::json IndependentCoupling::spec() const { return {{"type", "independent"}}; }

CostFunction squared_geodesic_cost(std::shared_ptr<const Manifold> manifold) {
  if (!manifold) throw std::invalid_argument("squared_geodesic_cost: no manifold");
  return [manifold](const at::Tensor& x0, const at::Tensor& x1) {
    return manifold->pairwise_distance(x0.reshape({x0.size(0), -1}).to(at::kDouble), x1.reshape({x1.size(0), -1}).to(at::kDouble))
        .square()
        .to(at::kCPU);
  };
}

at::Tensor squared_euclidean_cost(const at::Tensor& x0, const at::Tensor& x1) {
  return squared_distances(x0.reshape({x0.size(0), -1}).to(at::kCPU, at::kDouble),
                           x1.reshape({x1.size(0), -1}).to(at::kCPU, at::kDouble));
}

void Coupling::set_cost(CostFunction cost) { cost_ = std::move(cost); }

at::Tensor Coupling::cost_matrix(const at::Tensor& x0, const at::Tensor& x1) const {
  if (!cost_) return squared_euclidean_cost(x0, x1);
  at::Tensor c = cost_(x0, x1).to(at::kCPU, at::kDouble).contiguous();
  TORCH_CHECK(c.dim() == 2 && c.size(0) == x0.size(0) && c.size(1) == x1.size(0), "coupling cost returned shape ", c.sizes(),
              " for ", x0.size(0), " sources and ", x1.size(0), " targets (expected (n, m))");
  TORCH_CHECK(at::isfinite(c).all().item<bool>(), "coupling cost returned a non-finite entry");
  return c;
}

CoupledBatch ExactOTCoupling::pair(const at::Tensor& x0, const at::Tensor& x1,
                                   std::optional<at::Generator> generator) const {
  check_batches(x0, x1, "ExactOTCoupling");
  const int64_t n = x0.size(0), m = x1.size(0);
  at::Tensor cost = cost_matrix(x0, x1);
  if (n == m) {
    Assignment plan = solve_assignment(cost);
    at::Tensor index = at::from_blob(plan.column_of_row.data(), {n}, at::kLong).to(x1.device());
    return {x0, x1.index_select(0, index), {}};
  }
  auto [i0, i1] = draw_pairs_from_plan(exact_transport(cost).plan, generator);
  return gather(x0, x1, i0, i1);
}

nlohmann::json ExactOTCoupling::spec() const { return {{"type", "exact-ot"}}; }

SinkhornCoupling::SinkhornCoupling(SinkhornOptions options) : options_(std::move(options)) { validate(options_); }

CoupledBatch SinkhornCoupling::pair(const at::Tensor& x0, const at::Tensor& x1,
                                    std::optional<at::Generator> generator) const {
  check_batches(x0, x1, "SinkhornCoupling");
  TransportPlan plan = sinkhorn(cost_matrix(x0, x1), options_);
  auto [i0, i1] = draw_pairs_from_plan(plan.plan, generator);
  return gather(x0, x1, i0, i1);
}

nlohmann::json SinkhornCoupling::spec() const {
  return {{"type", "sinkhorn"},
          {"reg", options_.reg()},
          {"max_iterations", options_.max_iterations()},
          {"tolerance", options_.tolerance()}};
}

namespace {
SinkhornOptions bridge_options(double sigma, SinkhornOptions options) {
  if (!(sigma > 0) || !std::isfinite(sigma)) {
    throw std::invalid_argument("SchrodingerBridgeCoupling: sigma must be finite and > 0, got " + std::to_string(sigma));
  }
  return options.reg(2 * sigma * sigma);
}
}  // namespace

SchrodingerBridgeCoupling::SchrodingerBridgeCoupling(double sigma, SinkhornOptions options)
    : SinkhornCoupling(bridge_options(sigma, std::move(options))), sigma_(sigma) {}

nlohmann::json SchrodingerBridgeCoupling::spec() const {
  return {{"type", "schrodinger-bridge"},
          {"sigma", sigma_},
          {"reg", options_.reg()},
          {"max_iterations", options_.max_iterations()},
          {"tolerance", options_.tolerance()}};
}

std::vector<std::string> coupling_names() { return {"independent", "exact-ot", "sinkhorn", "schrodinger-bridge", "equivariant-ot"}; }

std::shared_ptr<Coupling> make_coupling(const nlohmann::json& spec) {
  const std::string type = spec.is_string() ? spec.get<std::string>() : spec.value("type", std::string());
  const nlohmann::json params = spec.is_object() ? spec : nlohmann::json::object();
  auto sinkhorn_options = [&] {
    SinkhornOptions o;
    if (params.contains("reg")) o.reg(params["reg"].get<double>());
    if (params.contains("max_iterations")) o.max_iterations(params["max_iterations"].get<int64_t>());
    if (params.contains("tolerance")) o.tolerance(params["tolerance"].get<double>());
    return o;
  };
  if (type == "independent") return std::make_shared<IndependentCoupling>();
  if (type == "exact-ot") return std::make_shared<ExactOTCoupling>();
  if (type == "sinkhorn") return std::make_shared<SinkhornCoupling>(sinkhorn_options());
  if (type == "schrodinger-bridge") {
    if (!params.contains("sigma")) {
      throw std::invalid_argument("schrodinger-bridge coupling needs \"sigma\" (its reg is 2 sigma^2)");
    }
    return std::make_shared<SchrodingerBridgeCoupling>(params["sigma"].get<double>(), sinkhorn_options());
  }
  if (type == "equivariant-ot") {
    auto count = [&](const char* key) {
      if (!params.contains(key) || !params[key].is_number_integer()) {
        throw std::invalid_argument("equivariant-ot coupling needs integer \"" + std::string(key) + "\" (particle data: molecules:dw4, molecules:lj13)");
      }
      return params[key].get<int64_t>();
    };
    return std::make_shared<EquivariantOTCoupling>(count("particles"), count("particle_dim"));
  }
  std::string valid;
  for (const auto& n : coupling_names()) valid += (valid.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown coupling '" + type + "' (expected: " + valid + ")");
}

}  // namespace flowmatch
