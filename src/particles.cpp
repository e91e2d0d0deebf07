#include "flowmatch/particles.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "flowmatch/assignment.h"

namespace flowmatch {

namespace {

void check_configurations(const at::Tensor& x, int64_t n, int64_t d, const char* who) {
  if (n < 2 || d < 1) {
    throw std::invalid_argument(std::string(who) + ": needs at least 2 particles of dimension at least 1, got " + std::to_string(n) +
                                " of dimension " + std::to_string(d));
  }
  TORCH_CHECK(x.defined() && x.dim() == 2 && x.size(1) == n * d, who, ": configurations must be (B, ", n * d, ") for ", n,
              " particles in ", d, "-D, got ", x.defined() ? x.sizes() : at::IntArrayRef{});
}

// (B, n, n) squared distances between the particles of y (rows) and of a (columns).
// (cdist computes the differences directly for fewer than 25 particles, so equal points are at 0.)
at::Tensor particle_cost(const at::Tensor& y, const at::Tensor& a) { return at::cdist(y, a).square(); }

// One assignment per batch entry of cost (B, n, n): σ (B, n) with σ[b][i] the column of row i.
at::Tensor assign_each(const at::Tensor& cost) {
  at::Tensor c = cost.contiguous();
  const int64_t batch = c.size(0), n = c.size(1);
  at::Tensor sigma = at::empty({batch, n}, at::kLong);
  const double* cp = c.data_ptr<double>();
  int64_t* sp = sigma.data_ptr<int64_t>();
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const Assignment a = solve_assignment(cp + b * n * n, n, n);
      for (int64_t i = 0; i < n; ++i) sp[b * n + i] = a.column_of_row[i];
    }
  });
  return sigma;
}

at::Tensor gather_particles(const at::Tensor& x, const at::Tensor& sigma) {
  return x.gather(1, sigma.unsqueeze(2).expand({x.size(0), x.size(1), x.size(2)}));
}

// Every (source, target) pair as two aligned batches of n0·n1 rows, float64 on the CPU: row i·n1 + j
// holds x0[i] and x1[j].
std::pair<at::Tensor, at::Tensor> every_pair(const at::Tensor& x0, const at::Tensor& x1) {
  const int64_t n0 = x0.size(0), n1 = x1.size(0), width = x0.size(1);
  return {x0.to(at::kCPU, at::kDouble).unsqueeze(1).expand({n0, n1, width}).reshape({n0 * n1, width}),
          x1.to(at::kCPU, at::kDouble).unsqueeze(0).expand({n0, n1, width}).reshape({n0 * n1, width})};
}

struct Aligned {
  at::Tensor aligned, sigma, rotation, cost;
};

// Alternating assignment and Kabsch from a starting rotation. A pair whose permutation did not
// change has reached its fixed point (the same permutation gives the same rotation) and leaves the
// active set; the rest go on, for at most `rounds` rounds.
Aligned iterate(const at::Tensor& x, const at::Tensor& y, at::Tensor rotation, int64_t rounds) {
  const int64_t batch = x.size(0);
  rotation = rotation.clone();
  at::Tensor sigma = at::empty({batch, x.size(1)}, at::kLong);
  at::Tensor active = at::arange(batch, at::kLong);
  for (int64_t r = 0; r < rounds && active.numel() > 0; ++r) {
    const bool all = r == 0;
    at::Tensor xa = all ? x : x.index_select(0, active), ya = all ? y : y.index_select(0, active);
    at::Tensor ra = all ? rotation : rotation.index_select(0, active);
    at::Tensor next = assign_each(particle_cost(ya, at::matmul(xa, ra.transpose(1, 2))));
    at::Tensor changed = all ? at::Tensor() : (next != sigma.index_select(0, active)).any(1);
    sigma.index_copy_(0, active, next);
    rotation.index_copy_(0, active, kabsch_rotation(gather_particles(xa, next), ya));
    if (!all) active = active.masked_select(changed);
  }
  at::Tensor aligned = at::matmul(gather_particles(x, sigma), rotation.transpose(1, 2));
  return {aligned, sigma, rotation, (aligned - y).square().sum({1, 2})};
}

}  // namespace

MeanFreeGaussian::MeanFreeGaussian(int64_t particles, int64_t particle_dim) : n_(particles), d_(particle_dim) {
  if (n_ < 2 || d_ < 1) {
    throw std::invalid_argument("mean-free Gaussian needs at least 2 particles of dimension at least 1, got " + std::to_string(n_) +
                                " of dimension " + std::to_string(d_));
  }
}

at::Tensor MeanFreeGaussian::sample(int64_t n, at::Generator& generator, const at::TensorOptions& options) const {
  at::Tensor z = at::randn({n, n_ * d_}, generator, options.dtype(at::kDouble).device(at::kCPU));
  return remove_center_of_mass(z, n_, d_).reshape({n, n_ * d_}).to(options);
}

at::Tensor MeanFreeGaussian::log_density(const at::Tensor& x) const {
  check_configurations(x, n_, d_, "mean-free Gaussian");
  return -0.5 * x.square().sum(1) - 0.5 * static_cast<double>((n_ - 1) * d_) * std::log(2 * M_PI);
}

at::Tensor remove_center_of_mass(const at::Tensor& x, int64_t particles, int64_t particle_dim) {
  check_configurations(x, particles, particle_dim, "remove_center_of_mass");
  at::Tensor p = x.reshape({x.size(0), particles, particle_dim});
  return p - p.mean(1, /*keepdim=*/true);
}

at::Tensor kabsch_rotation(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.dim() == 3 && a.sizes() == b.sizes(), "kabsch_rotation: a and b must be (B, n, d) alike, got ", a.sizes(), " and ",
              b.sizes());
  // Σ‖R a_i − b_i‖² = const − 2 tr(R H) with H = Σ a_i b_iᵀ = U S Vᵀ: R = V D Uᵀ, D = diag(1, …, det(V Uᵀ)).
  at::Tensor h = at::matmul(a.transpose(1, 2), b);
  auto [u, s, vh] = at::linalg_svd(h, /*full_matrices=*/true);
  at::Tensor v = vh.transpose(1, 2);
  at::Tensor sign = at::sign(at::linalg_det(at::matmul(v, u.transpose(1, 2))));
  sign = at::where(sign == 0, at::ones_like(sign), sign);
  at::Tensor dvec = at::ones({a.size(0), a.size(2)}, a.options());
  dvec.select(1, a.size(2) - 1).copy_(sign);  // singular values come in decreasing order: flip the smallest
  return at::matmul(v * dvec.unsqueeze(1), u.transpose(1, 2));
}

ParticleAlignment align_particles(const at::Tensor& x, const at::Tensor& y, int64_t particles, int64_t particle_dim,
                                  int64_t max_rounds) {
  check_configurations(x, particles, particle_dim, "align_particles");
  check_configurations(y, particles, particle_dim, "align_particles");
  TORCH_CHECK(x.size(0) == y.size(0), "align_particles: ", x.size(0), " and ", y.size(0), " configurations do not pair up");
  if (max_rounds < 1) throw std::invalid_argument("align_particles: max_rounds must be at least 1, got " + std::to_string(max_rounds));
  const int64_t batch = x.size(0), n = particles, d = particle_dim;
  at::Tensor xd = x.to(at::kCPU, at::kDouble).reshape({batch, n, d});
  at::Tensor yd = y.to(at::kCPU, at::kDouble).reshape({batch, n, d});
  // Start 1: no rotation.
  at::Tensor eye = at::eye(d, at::kDouble).expand({batch, d, d}).contiguous();
  Aligned best = iterate(xd, yd, eye, max_rounds);
  // Start 2: match rotation-invariant descriptors (each particle's sorted distances to the others).
  auto descriptors = [&](const at::Tensor& p) { return std::get<0>(at::sort(particle_cost(p, p).sqrt(), 2)); };
  at::Tensor sigma0 = assign_each(particle_cost(descriptors(yd), descriptors(xd)));
  Aligned other = iterate(xd, yd, kabsch_rotation(gather_particles(xd, sigma0), yd), max_rounds);
  at::Tensor better = other.cost < best.cost;
  best.aligned = at::where(better.reshape({batch, 1, 1}), other.aligned, best.aligned);
  best.sigma = at::where(better.reshape({batch, 1}), other.sigma, best.sigma);
  best.rotation = at::where(better.reshape({batch, 1, 1}), other.rotation, best.rotation);
  best.cost = at::where(better, other.cost, best.cost);
  ParticleAlignment out;
  out.aligned = best.aligned.reshape({batch, n * d}).to(x.options());
  out.permutation = best.sigma;
  out.rotation = best.rotation;
  out.cost = best.cost;
  return out;
}

at::Tensor aligned_cost_matrix(const at::Tensor& x0, const at::Tensor& x1, int64_t particles, int64_t particle_dim) {
  check_configurations(x0, particles, particle_dim, "aligned_cost_matrix");
  check_configurations(x1, particles, particle_dim, "aligned_cost_matrix");
  const auto [a, b] = every_pair(x0, x1);
  return align_particles(a, b, particles, particle_dim).cost.reshape({x0.size(0), x1.size(0)});
}

EquivariantOTCoupling::EquivariantOTCoupling(int64_t particles, int64_t particle_dim) : n_(particles), d_(particle_dim) {
  if (n_ < 2 || d_ < 1) {
    throw std::invalid_argument("equivariant-ot coupling needs at least 2 particles of dimension at least 1, got " + std::to_string(n_) +
                                " of dimension " + std::to_string(d_));
  }
}

CoupledBatch EquivariantOTCoupling::pair(const at::Tensor& x0, const at::Tensor& x1, std::optional<at::Generator> generator) const {
  check_configurations(x0, n_, d_, "equivariant-ot coupling (source)");
  check_configurations(x1, n_, d_, "equivariant-ot coupling (target)");
  const int64_t n0 = x0.size(0), n1 = x1.size(0);
  const auto [a, b] = every_pair(x0, x1);
  const ParticleAlignment all = align_particles(a, b, n_, d_);
  at::Tensor cost = all.cost.reshape({n0, n1});
  at::Tensor i0, i1;
  if (n0 == n1) {
    const Assignment plan = solve_assignment(cost);
    i0 = at::arange(n0, at::kLong);
    i1 = at::tensor(plan.column_of_row, at::kLong);
  } else {
    std::tie(i0, i1) = draw_pairs_from_plan(exact_transport(cost).plan, generator);
  }
  at::Tensor aligned = all.aligned.index_select(0, i0 * n1 + i1).to(x0.options());
  return {aligned, x1.index_select(0, i1.to(x1.device())), {}};
}

nlohmann::json EquivariantOTCoupling::spec() const { return {{"type", "equivariant-ot"}, {"particles", n_}, {"particle_dim", d_}}; }

at::Tensor pair_distances(const at::Tensor& x, int64_t particles, int64_t particle_dim) {
  check_configurations(x, particles, particle_dim, "pair_distances");
  at::Tensor p = x.reshape({x.size(0), particles, particle_dim});
  at::Tensor upper = at::triu_indices(particles, particles, 1, at::TensorOptions().dtype(at::kLong).device(x.device()));
  at::Tensor diff = p.index_select(1, upper[0]) - p.index_select(1, upper[1]);
  return diff.square().sum(2).sqrt();
}

at::Tensor double_well_energy(const at::Tensor& x) {
  at::Tensor r = pair_distances(x, 4, 2) - 4;
  return (0.9 * r.pow(4) - 4 * r.square()).sum(1);
}

at::Tensor lennard_jones_energy(const at::Tensor& x) {
  at::Tensor r6 = pair_distances(x, 13, 3).pow(-6);
  at::Tensor pairs = 2 * (r6.square() - 2 * r6).sum(1);  // ordered pairs: twice the i < j sum
  return pairs + 0.5 * remove_center_of_mass(x, 13, 3).square().sum({1, 2});
}

MolecularSystem molecular_system(const std::string& name) {
  if (name == "dw4") return {"dw4", 4, 2, double_well_energy};
  if (name == "lj13") return {"lj13", 13, 3, lennard_jones_energy};
  throw std::invalid_argument("unknown molecular system '" + name + "' (expected: dw4, lj13)");
}

double kish_effective_sample_size(const at::Tensor& log_weights) {
  TORCH_CHECK(log_weights.dim() == 1 && log_weights.size(0) > 0, "kish_effective_sample_size: expects (B) log-weights, got ",
              log_weights.sizes());
  at::Tensor lw = log_weights.to(at::kCPU, at::kDouble);
  const double size = static_cast<double>(lw.size(0));
  // +inf dominates every finite weight: the weights are then that many equal ones.
  const int64_t infinite = (lw == std::numeric_limits<double>::infinity()).sum().item<int64_t>();
  if (infinite > 0) return static_cast<double>(infinite) / size;
  lw = at::where(at::isnan(lw), at::full_like(lw, -std::numeric_limits<double>::infinity()), lw);
  const double top = lw.max().item<double>();
  if (!std::isfinite(top)) return 0.0;  // every weight 0
  at::Tensor w = at::exp(lw - top);
  const double sum = w.sum().item<double>(), sum_sq = w.square().sum().item<double>();
  return sum * sum / (size * sum_sq);
}

}  // namespace flowmatch
