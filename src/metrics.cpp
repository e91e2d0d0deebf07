#include "flowmatch/metrics.h"

#include <cmath>
#include <numeric>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <lemon/network_simplex.h>
#include <lemon/static_graph.h>

#include "flowmatch/assignment.h"

namespace flowmatch::metrics {

namespace {

// Transport between uniform measures of n and m atoms: supplies m/g and n/g (g = gcd) keep
// the problem integral; the network simplex is exact.
double transport_cost(const at::Tensor& cost) {
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
    throw std::runtime_error("wasserstein2: network simplex found no optimal plan");
  }
  return simplex.totalCost<double>() / static_cast<double>(n * supply);
}

}  // namespace

double wasserstein2(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.defined() && b.defined() && a.dim() == 2 && b.dim() == 2,
              "wasserstein2: expects two 2-D tensors (n, D), got ",
              a.defined() ? a.sizes() : at::IntArrayRef{}, " and ",
              b.defined() ? b.sizes() : at::IntArrayRef{});
  TORCH_CHECK(a.size(1) == b.size(1), "wasserstein2: dimensions differ (", a.size(1), " vs ",
              b.size(1), ")");
  TORCH_CHECK(a.size(0) > 0 && b.size(0) > 0, "wasserstein2: empty point set");
  at::Tensor ad = a.to(at::kCPU, at::kDouble).contiguous();
  at::Tensor bd = b.to(at::kCPU, at::kDouble).contiguous();
  TORCH_CHECK(at::isfinite(ad).all().item<bool>(), "wasserstein2: first point set has NaN or Inf");
  TORCH_CHECK(at::isfinite(bd).all().item<bool>(), "wasserstein2: second point set has NaN or Inf");
  at::Tensor cost = squared_distances(ad, bd).contiguous();
  double mean_cost;
  if (a.size(0) == b.size(0)) {
    mean_cost = solve_assignment(cost).total_cost / static_cast<double>(a.size(0));
  } else {
    mean_cost = transport_cost(cost);
  }
  return std::sqrt(std::max(mean_cost, 0.0));
}

}  // namespace flowmatch::metrics
