#include "flowmatch/transport.h"

#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <lemon/network_simplex.h>
#include <lemon/static_graph.h>

#include "flowmatch/assignment.h"

namespace flowmatch {

namespace {

at::Tensor checked_cost(const at::Tensor& cost, const char* who) {
  TORCH_CHECK(cost.defined() && cost.dim() == 2, who, ": cost must be a 2-D (n, m) tensor, got ",
              cost.defined() ? cost.sizes() : at::IntArrayRef{});
  if (cost.size(0) < 1 || cost.size(1) < 1) {
    throw std::invalid_argument(std::string(who) + ": empty cost matrix " + c10::str(cost.sizes()));
  }
  at::Tensor c = cost.to(at::kCPU, at::kDouble).contiguous();
  if (!at::isfinite(c).all().item<bool>()) {
    at::Tensor bad = (~at::isfinite(c)).nonzero()[0];
    throw std::invalid_argument(std::string(who) + ": non-finite cost at (" +
                                std::to_string(bad[0].item<int64_t>()) + ", " +
                                std::to_string(bad[1].item<int64_t>()) + ")");
  }
  return c;
}

double marginal_error(const at::Tensor& plan) {
  const double n = static_cast<double>(plan.size(0)), m = static_cast<double>(plan.size(1));
  return (plan.sum(1) - 1.0 / n).abs().sum().item<double>() + (plan.sum(0) - 1.0 / m).abs().sum().item<double>();
}

// Transport between uniform measures of n and m atoms on a complete bipartite graph: supplies
// m/g per source and n/g per target (g = gcd) keep the problem integral, so the network simplex
// is exact; each unit of flow carries mass g / (n m).
TransportPlan network_simplex_plan(const at::Tensor& cost) {
  const int64_t n = cost.size(0), m = cost.size(1);
  const int64_t g = std::gcd(n, m);
  const int64_t supply = m / g, demand = n / g;
  std::vector<std::pair<int, int>> arcs;
  arcs.reserve(static_cast<size_t>(n * m));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) arcs.emplace_back(static_cast<int>(i), static_cast<int>(n + j));
  lemon::StaticDigraph graph;
  graph.build(static_cast<int>(n + m), arcs.begin(), arcs.end());
  lemon::StaticDigraph::ArcMap<double> arc_cost(graph);
  lemon::StaticDigraph::NodeMap<int64_t> supplies(graph);
  const double* c = cost.data_ptr<double>();
  for (int64_t k = 0; k < n * m; ++k) arc_cost[graph.arc(static_cast<int>(k))] = c[k];
  for (int64_t i = 0; i < n; ++i) supplies[graph.node(static_cast<int>(i))] = supply;
  for (int64_t j = 0; j < m; ++j) supplies[graph.node(static_cast<int>(n + j))] = -demand;
  lemon::NetworkSimplex<lemon::StaticDigraph, int64_t, double> simplex(graph);
  simplex.costMap(arc_cost).supplyMap(supplies);
  if (simplex.run() != decltype(simplex)::OPTIMAL) {
    throw std::runtime_error("exact_transport: the network simplex found no optimal plan");
  }
  const double unit = 1.0 / static_cast<double>(n * supply);  // = g / (n m)
  TransportPlan result;
  result.plan = at::zeros({n, m}, at::kDouble);
  double* p = result.plan.data_ptr<double>();
  for (int64_t k = 0; k < n * m; ++k) {
    const int64_t flow = simplex.flow(graph.arc(static_cast<int>(k)));
    if (flow != 0) p[k] = static_cast<double>(flow) * unit;
  }
  result.cost = simplex.totalCost<double>() * unit;
  return result;
}

}  // namespace

TransportPlan exact_transport(const at::Tensor& cost) {
  at::Tensor c = checked_cost(cost, "exact_transport");
  const int64_t n = c.size(0), m = c.size(1);
  TransportPlan result;
  if (n == m) {
    Assignment a = solve_assignment(c.data_ptr<double>(), n, m);
    result.plan = at::zeros({n, m}, at::kDouble);
    double* p = result.plan.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) p[i * m + a.column_of_row[i]] = 1.0 / static_cast<double>(n);
    result.cost = a.total_cost / static_cast<double>(n);
  } else {
    result = network_simplex_plan(c);
  }
  result.marginal_error = marginal_error(result.plan);
  return result;
}

void validate(const SinkhornOptions& o) {
  auto bad = [](const std::string& what, const std::string& value, const std::string& expected) {
    throw std::invalid_argument("Sinkhorn " + what + " must be " + expected + ", got " + value);
  };
  if (!(o.reg() > 0) || !std::isfinite(o.reg())) bad("regularization", std::to_string(o.reg()), "finite and > 0");
  if (o.max_iterations() < 1) bad("iterations", std::to_string(o.max_iterations()), ">= 1");
  if (!(o.tolerance() > 0) || !std::isfinite(o.tolerance())) bad("tolerance", std::to_string(o.tolerance()), "finite and > 0");
}

// Sinkhorn with the stabilized scaling of Schmitzer (2019): the plan is diag(u)·K·diag(v) with
// K = exp((f_i + g_j − C_ij)/ε). Iterations are two matrix-vector products (u = a / Kv, v = b / Kᵀu);
// whenever u or v leave [e^−50, e^50] they are absorbed into the potentials f += ε log u,
// g += ε log v and K is rebuilt, so nothing overflows or underflows whatever ε. If a product
// still underflows to 0 the step is redone in the log domain with log-sum-exp. ε-scaling runs a few
// iterations at ε = max C, max C / 2, ... before the target ε, starting each stage from the
// potentials of the last.
TransportPlan sinkhorn(const at::Tensor& cost, const SinkhornOptions& options) {
  validate(options);
  at::Tensor cost64 = checked_cost(cost, "sinkhorn");
  const int64_t n = cost64.size(0), m = cost64.size(1);
  const double* c = cost64.data_ptr<double>();
  const double a = 1.0 / static_cast<double>(n), b = 1.0 / static_cast<double>(m);
  const double target = options.reg();
  std::vector<double> schedule;
  if (options.epsilon_scaling()) {
    for (double e = cost64.max().item<double>(); e > 2 * target; e *= 0.5) schedule.push_back(e);
  }
  schedule.push_back(target);
  constexpr int64_t kPerStage = 5;
  constexpr double kBound = 1e22;  // ≈ e^50: u, v outside [1/kBound, kBound] are absorbed

  // Plain loops over contiguous float64: these small matrix-vector products are bound by memory
  // and call overhead, not arithmetic.
  std::vector<double> f(n, 0.0), g(m, 0.0), u(n, 1.0), v(m, 1.0), u_next(n), v_next(m), kv(n);
  std::vector<double> kernel(static_cast<size_t>(n * m));
  double eps = target;
  auto rebuild = [&]() {  // K = exp((f ⊕ g − C)/ε)
    const double inv = 1.0 / eps;
    for (int64_t i = 0; i < n; ++i) {
      double* k = kernel.data() + i * m;
      const double* ci = c + i * m;
      for (int64_t j = 0; j < m; ++j) k[j] = std::exp((f[i] + g[j] - ci[j]) * inv);
    }
  };
  auto absorb = [&]() {  // fold u, v into f, g and rebuild K at the current ε
    for (int64_t i = 0; i < n; ++i) f[i] += eps * std::log(u[i]), u[i] = 1.0;
    for (int64_t j = 0; j < m; ++j) g[j] += eps * std::log(v[j]), v[j] = 1.0;
    rebuild();
  };
  auto log_domain_step = [&]() {  // u = v = 1 on entry: one row and one column update by log-sum-exp
    const double inv = 1.0 / eps;
    for (int64_t i = 0; i < n; ++i) {
      const double* ci = c + i * m;
      double top = -INFINITY;
      for (int64_t j = 0; j < m; ++j) top = std::max(top, (g[j] - ci[j]) * inv);
      double sum = 0;
      for (int64_t j = 0; j < m; ++j) sum += std::exp((g[j] - ci[j]) * inv - top);
      f[i] = eps * (std::log(a) - top - std::log(sum));
    }
    std::vector<double> top(m, -INFINITY), sum(m, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) top[j] = std::max(top[j], (f[i] - c[i * m + j]) * inv);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) sum[j] += std::exp((f[i] - c[i * m + j]) * inv - top[j]);
    for (int64_t j = 0; j < m; ++j) g[j] = eps * (std::log(b) - top[j] - std::log(sum[j]));
    rebuild();
  };
  auto usable = [&](const std::vector<double>& x) {  // every entry in (0, ∞): nothing under/overflowed
    for (double value : x)
      if (!(value > 0) || !std::isfinite(value)) return false;
    return true;
  };
  auto multiply = [&](const std::vector<double>& vector, std::vector<double>& out) {  // out = K · vector
    for (int64_t i = 0; i < n; ++i) {
      const double* k = kernel.data() + i * m;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four partial sums: lets the compiler use vector units
      int64_t j = 0;
      for (; j + 4 <= m; j += 4) {
        s0 += k[j] * vector[j];
        s1 += k[j + 1] * vector[j + 1];
        s2 += k[j + 2] * vector[j + 2];
        s3 += k[j + 3] * vector[j + 3];
      }
      for (; j < m; ++j) s0 += k[j] * vector[j];
      out[i] = (s0 + s1) + (s2 + s3);
    }
  };
  auto multiply_transposed = [&](const std::vector<double>& vector, std::vector<double>& out) {  // out = Kᵀ · vector
    std::fill(out.begin(), out.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* k = kernel.data() + i * m;
      const double w = vector[i];
      for (int64_t j = 0; j < m; ++j) out[j] += k[j] * w;
    }
  };

  TransportPlan result;
  result.converged = false;
  int64_t iterations = 0;
  for (size_t stage = 0; stage < schedule.size(); ++stage) {
    const bool last = stage + 1 == schedule.size();
    absorb();  // potentials carry the last stage's scalings; u = v = 1
    eps = schedule[stage];
    rebuild();
    const int64_t budget = last ? options.max_iterations() - iterations
                                : std::min(kPerStage, options.max_iterations() - iterations - 1);
    for (int64_t k = 0; k < budget; ++k) {
      multiply(v, kv);
      if (last && k > 0) {
        // The plan diag(u) K diag(v) has exact columns; its row sums are u ⊙ Kv.
        double error = 0;
        for (int64_t i = 0; i < n; ++i) error += std::abs(u[i] * kv[i] - a);
        if (error <= options.tolerance()) {
          result.converged = true;
          break;
        }
      }
      for (int64_t i = 0; i < n; ++i) u_next[i] = a / kv[i];
      multiply_transposed(u_next, v_next);
      for (int64_t j = 0; j < m; ++j) v_next[j] = b / v_next[j];
      ++iterations;
      if (!usable(u_next) || !usable(v_next)) {
        absorb();  // back to the last good scalings, then one exact log-domain step
        log_domain_step();
        continue;
      }
      u.swap(u_next);
      v.swap(v_next);
      bool spread = false;
      for (double x : u) spread = spread || x > kBound || x < 1 / kBound;
      for (double x : v) spread = spread || x > kBound || x < 1 / kBound;
      if (spread) absorb();
    }
    if (iterations >= options.max_iterations()) break;
  }
  at::Tensor plan = at::empty({n, m}, at::kDouble);
  double* p = plan.data_ptr<double>();
  double total = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      p[i * m + j] = u[i] * kernel[i * m + j] * v[j];
      total += p[i * m + j] * c[i * m + j];
    }
  result.plan = plan;
  result.cost = total;
  result.iterations = iterations;
  result.marginal_error = marginal_error(plan);
  return result;
}

}  // namespace flowmatch
