#include "flowmatch/likelihood.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

namespace flowmatch {

at::Tensor standard_normal_log_density(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "standard_normal_log_density: x needs a batch dimension");
  const double d = static_cast<double>(x.numel() / std::max<int64_t>(1, x.size(0)));
  return x.reshape({x.size(0), -1}).square().sum(1).mul(-0.5).sub(0.5 * d * std::log(2 * M_PI));
}

at::Tensor normal_log_density(const at::Tensor& x, double scale) {
  if (!(scale > 0) || !std::isfinite(scale)) {
    throw std::invalid_argument("normal_log_density: scale must be finite and > 0, got " + std::to_string(scale));
  }
  if (scale == 1.0) return standard_normal_log_density(x);
  const double d = static_cast<double>(x.numel() / std::max<int64_t>(1, x.size(0)));
  return standard_normal_log_density(x / scale) - d * std::log(scale);
}

namespace {

// x with gradients tracked, whether or not it came with a graph.
at::Tensor tracked(const at::Tensor& x, bool create_graph) {
  if (create_graph && x.requires_grad()) return x;
  return x.detach().requires_grad_(true);
}

// ∂(output)/∂(input) as a vector-Jacobian product: zeros when the output does not depend on the input
// (a constant field, or a field that ignores x).
at::Tensor vjp(const at::Tensor& output, const at::Tensor& input, bool retain, bool create_graph) {
  if (!output.requires_grad()) return at::zeros_like(input);
  at::Tensor g = torch::autograd::grad({output}, {input}, {}, retain, create_graph, /*allow_unused=*/true)[0];
  return g.defined() ? g : at::zeros_like(input);
}

}  // namespace

namespace {

// div v from an already computed v = field(xin, t); keeps the graph of v when `keep` is set.
at::Tensor exact_from(const at::Tensor& v, const at::Tensor& xin, bool create_graph, bool keep) {
  const int64_t b = xin.size(0);
  at::Tensor flat = v.reshape({b, -1});
  const int64_t d = flat.size(1);
  at::Tensor div = at::zeros({b}, xin.options());
  for (int64_t k = 0; k < d; ++k) {
    const bool retain = keep || create_graph || k + 1 < d;
    at::Tensor g = vjp(flat.select(1, k).sum(), xin, retain, create_graph);
    div = div + g.reshape({b, -1}).select(1, k);
  }
  return div;
}

at::Tensor hutchinson_from(const at::Tensor& v, const at::Tensor& xin, const at::Tensor& probes, bool create_graph, bool keep) {
  const int64_t b = xin.size(0), k = probes.size(0);
  at::Tensor div = at::zeros({b}, xin.options());
  for (int64_t p = 0; p < k; ++p) {
    const at::Tensor& eps = probes[p];
    const bool retain = keep || create_graph || p + 1 < k;
    at::Tensor g = vjp((v * eps).sum(), xin, retain, create_graph);
    div = div + (g * eps).reshape({b, -1}).sum(1);
  }
  return div / static_cast<double>(k);
}

}  // namespace

at::Tensor divergence_exact(const VelocityField& field, const at::Tensor& x, const at::Tensor& t, bool create_graph) {
  TORCH_CHECK(x.dim() >= 2, "divergence_exact: x must be (B, D...), got ", x.sizes());
  at::AutoGradMode grad(true);
  at::Tensor xin = tracked(x, create_graph);
  at::Tensor div = exact_from(field(xin, t), xin, create_graph, false);
  return create_graph ? div : div.detach();
}

at::Tensor divergence_hutchinson(const VelocityField& field, const at::Tensor& x, const at::Tensor& t,
                                 const at::Tensor& probes, bool create_graph) {
  TORCH_CHECK(probes.dim() == x.dim() + 1 && probes.sizes().slice(1) == x.sizes(),
              "divergence_hutchinson: probes must be (k, ", x.sizes(), "), got ", probes.sizes());
  at::AutoGradMode grad(true);
  at::Tensor xin = tracked(x, create_graph);
  at::Tensor div = hutchinson_from(field(xin, t), xin, probes, create_graph, false);
  return create_graph ? div : div.detach();
}

namespace {

// The augmented state [x, Δ] on M × R: the manifold acts on the first d columns.
class AugmentedManifold : public Manifold {
 public:
  AugmentedManifold(std::shared_ptr<const Manifold> base, int64_t d) : base_(std::move(base)), d_(d) {}
  std::string name() const override { return base_->name() + " x R"; }
  at::Tensor project(const at::Tensor& z) const override {
    return at::cat({base_->project(z.slice(1, 0, d_)), z.slice(1, d_)}, 1);
  }
  at::Tensor project_tangent(const at::Tensor& z, const at::Tensor& v) const override {
    return at::cat({base_->project_tangent(z.slice(1, 0, d_), v.slice(1, 0, d_)), v.slice(1, d_)}, 1);
  }

 private:
  std::shared_ptr<const Manifold> base_;
  int64_t d_;
};

// The manifold's divergence: the Jacobian's rows by one vector-Jacobian product each.
at::Tensor manifold_exact_from(const Manifold& space, const at::Tensor& v, const at::Tensor& xin, bool create_graph, bool keep) {
  const int64_t b = xin.size(0);
  at::Tensor flat = v.reshape({b, -1});
  const int64_t d = flat.size(1);
  std::vector<at::Tensor> rows;
  for (int64_t k = 0; k < d; ++k) {
    const bool retain = keep || create_graph || k + 1 < d;
    rows.push_back(vjp(flat.select(1, k).sum(), xin, retain, create_graph).reshape({b, d}));
  }
  return space.tangent_trace(xin.reshape({b, d}), at::stack(rows, 1));
}

LikelihoodResult solve_augmented(const VelocityField& field, const at::Tensor& start, double t_from, double t_to,
                                 const LikelihoodOptions& options, std::optional<at::Generator> generator) {
  if (!field) throw std::invalid_argument("likelihood: velocity field is empty");
  TORCH_CHECK(start.dim() >= 2 && start.is_floating_point(), "likelihood: points must be floating (B, D...), got ",
              start.sizes());
  if (options.probes() < 1) throw std::invalid_argument("likelihood: probes must be >= 1, got " + std::to_string(options.probes()));
  const int64_t b = start.size(0);
  const auto shape = start.sizes().vec();
  const int64_t d = start.numel() / b;
  at::Tensor probes;
  if (options.divergence() == DivergenceMethod::Hutchinson) {
    std::vector<int64_t> pshape = {options.probes()};
    pshape.insert(pshape.end(), shape.begin(), shape.end());
    c10::optional<at::Generator> gen;
    if (generator) gen = *generator;
    probes = options.probe_distribution() == ProbeDistribution::Gaussian
                 ? at::randn(pshape, gen, start.options())
                 : at::randint(0, 2, pshape, gen, start.options()).mul_(2).sub_(1);
  }
  const bool create_graph = options.create_graph();
  std::shared_ptr<const Manifold> space = options.solver().manifold();
  if (space && space->coordinates() == 0) space = nullptr;  // Euclidean: the plain trace
  if (space) {
    if (start.dim() != 2 || start.size(1) != space->coordinates()) {
      throw std::invalid_argument("likelihood on the " + space->name() + ": points must be (B, " +
                                  std::to_string(space->coordinates()) + ")");
    }
  }
  // Augmented state [x (flattened), Δ]: dx/dt = v, dΔ/dt = div v.
  const bool fused = options.field_with_divergence() && options.divergence() == DivergenceMethod::Exact && !space && !create_graph;
  VelocityField augmented = [&](const at::Tensor& z, const at::Tensor& t) {
    at::Tensor x = z.slice(1, 0, d).reshape(shape);
    if (fused) {
      auto [v, div] = options.field_with_divergence()(x, t);
      return at::cat({v.reshape({b, d}), div.reshape({b, 1})}, 1);
    }
    at::AutoGradMode grad(true);
    at::Tensor xin = tracked(x, create_graph);
    at::Tensor v = field(xin, t);
    at::Tensor div;
    if (options.divergence() == DivergenceMethod::Exact) {
      div = space ? manifold_exact_from(*space, v, xin, create_graph, /*keep=*/create_graph)
                  : exact_from(v, xin, create_graph, /*keep=*/create_graph);
    } else if (space) {
      // Tangent probes at the current point: E[(Pε)ᵀ J (Pε)] = tr(J P) for E[εεᵀ] = I.
      std::vector<at::Tensor> tangent;
      for (int64_t p = 0; p < probes.size(0); ++p) tangent.push_back(space->project_tangent(x, probes[p]));
      div = hutchinson_from(v, xin, at::stack(tangent, 0), create_graph, /*keep=*/create_graph);
    } else {
      div = hutchinson_from(v, xin, probes, create_graph, /*keep=*/create_graph);
    }
    at::Tensor out = at::cat({v.reshape({b, d}), div.unsqueeze(1)}, 1);
    return create_graph ? out : out.detach();
  };
  at::Tensor z0 = at::cat({start.reshape({b, d}), at::zeros({b, 1}, start.options())}, 1);
  SolverOptions solver = options.solver();
  solver.t0(t_from).t1(t_to);
  if (space) solver.manifold(std::make_shared<AugmentedManifold>(space, d));
  if (!solver.time_grid().empty()) throw std::invalid_argument("likelihood: give the solver steps or tolerances, not a time grid");
  // The source: as given; else uniform on a curved space (a Gaussian means nothing there); else N(0, s²I).
  // The volume is asked for before the solve, so a space without one fails before the work.
  const bool curved = !options.source_log_density() && space && space->name() != "euclidean";
  const double log_volume = curved ? space->log_volume() : 0.0;
  auto source_log_density = [&](const at::Tensor& x0) {
    if (options.source_log_density()) return options.source_log_density()(x0);
    if (curved) return at::full({x0.size(0)}, -log_volume, x0.options());
    return normal_log_density(x0, options.source_scale());
  };
  SolveResult r = solve_ode(augmented, z0, solver);
  LikelihoodResult out;
  out.nfe = r.nfe;
  at::Tensor end = r.x.slice(1, 0, d).reshape(shape);
  at::Tensor delta = r.x.select(1, d);
  if (t_from > t_to) {  // data → noise: log p1(x1) = log p0(x0) + Δ(0), Δ(1) = 0
    out.x1 = start;
    out.x0 = end;
    out.log_prob = source_log_density(end) + delta;
  } else {  // noise → data: log p1(x1) = log p0(x0) − Δ(1), Δ(0) = 0
    out.x0 = start;
    out.x1 = end;
    out.log_prob = source_log_density(start) - delta;
  }
  return out;
}

}  // namespace

LikelihoodResult log_likelihood(const VelocityField& field, const at::Tensor& x1, const LikelihoodOptions& options,
                                std::optional<at::Generator> generator) {
  return solve_augmented(field, x1, 1.0, 0.0, options, generator);
}

LikelihoodResult sample_with_log_likelihood(const VelocityField& field, const at::Tensor& x0, const LikelihoodOptions& options,
                                            std::optional<at::Generator> generator) {
  return solve_augmented(field, x0, 0.0, 1.0, options, generator);
}

double bits_per_dimension(double nll_nats, int64_t dimensions, bool scaled_to_minus_one_one) {
  if (dimensions < 1) throw std::invalid_argument("bits_per_dimension: dimensions must be >= 1");
  return nll_nats / (static_cast<double>(dimensions) * std::log(2.0)) + (scaled_to_minus_one_one ? 7.0 : 8.0);
}

}  // namespace flowmatch
