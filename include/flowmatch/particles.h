#pragma once
/// \file
/// Systems of identical particles (equivariant flow matching, Klein, Krämer & Noé 2023). A
/// configuration of n particles in R^d is a row of n·d coordinates, particle by particle; its
/// density is invariant to rotations, translations and permutations of the particles, so flows run
/// in the mean-free subspace (`MeanFreeSpace`, manifold.h) from a Gaussian restricted to it.
/// - `MeanFreeGaussian`: the source, its samples and its log-density in the (n − 1)·d subspace;
/// - `align_particles`: the permutation (assignment on squared distances) and proper rotation
///   (Kabsch) that bring one configuration closest to another;
/// - `EquivariantOTCoupling`: exact minibatch OT on the aligned cost, pairs returned aligned;
/// - `MolecularSystem`: the DW4 and LJ13 energies, pair distances, the Kish effective sample size.

#include <functional>
#include <optional>
#include <string>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>

#include "flowmatch/coupling.h"

namespace flowmatch {

/// N(0, I) on R^(n·d) restricted to the mean-free subspace: samples are N(0, I) with the centre of
/// mass subtracted; log p(x) = −½‖x‖² − ((n − 1)·d / 2)·log 2π for x in the subspace.
class MeanFreeGaussian {
 public:
  MeanFreeGaussian(int64_t particles, int64_t particle_dim);
  at::Tensor sample(int64_t n, at::Generator& generator, const at::TensorOptions& options) const;
  /// Per row (B); the rows must be mean-free (they are not projected).
  at::Tensor log_density(const at::Tensor& x) const;
  int64_t particles() const { return n_; }
  int64_t particle_dim() const { return d_; }

 private:
  int64_t n_, d_;
};

/// (B, n·d) rows as (B, n, d) with each configuration's centre of mass subtracted.
at::Tensor remove_center_of_mass(const at::Tensor& x, int64_t particles, int64_t particle_dim);

/// The alignment of configurations x onto y, row by row.
struct ParticleAlignment {
  at::Tensor aligned;      ///< (B, n·d): R·x_σ(i) for each particle i of y
  at::Tensor permutation;  ///< (B, n) int64: σ(i), the particle of x matched to particle i of y
  at::Tensor rotation;     ///< (B, d, d): proper (det +1)
  at::Tensor cost;         ///< (B) float64: ‖aligned − y‖²
};

/// For each row pair (x_b, y_b) of mean-free configurations (B, n·d), a permutation σ and a proper
/// rotation R that make Σ_i ‖R·x_σ(i) − y_i‖² small: the assignment on squared particle distances
/// followed by Kabsch (rotations with det −1 excluded), iterated (each step lowers the cost) from
/// two starts, the identity rotation and the assignment of rotation-invariant particle descriptors
/// (each particle's sorted distances to the others), keeping the better. The cost is never above
/// ‖x − y‖², and a configuration rotated and permuted is aligned back exactly (generic positions).
/// Computed in float64 on the CPU: `aligned` is returned in x's dtype and device, the rest float64 (int64)
/// on the CPU.
ParticleAlignment align_particles(const at::Tensor& x, const at::Tensor& y, int64_t particles, int64_t particle_dim,
                                  int64_t max_rounds = 8);

/// The proper rotation R (d, d) minimising Σ_i ‖R·a_i − b_i‖² over rows a_i, b_i of a and b (n, d),
/// batched over a leading dimension: a, b (B, n, d) → (B, d, d).
at::Tensor kabsch_rotation(const at::Tensor& a, const at::Tensor& b);

/// The aligned cost between every source row and every target row: (n0, n1) float64.
at::Tensor aligned_cost_matrix(const at::Tensor& x0, const at::Tensor& x1, int64_t particles, int64_t particle_dim);

/// Equivariant OT (Klein et al. 2023): each (source, target) pair is aligned (align_particles), exact
/// OT runs on the aligned costs, and the pairs come back with the source rows replaced by their
/// alignment onto their partner, so the path runs between aligned configurations. The source's
/// distribution (a rotation- and permutation-invariant Gaussian) is unchanged by the alignment.
/// Ignores `set_cost`: its cost is the aligned one. Spec {"type": "equivariant-ot", "particles": n,
/// "particle_dim": d}.
class EquivariantOTCoupling : public Coupling {
 public:
  EquivariantOTCoupling(int64_t particles, int64_t particle_dim);
  CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;

 private:
  int64_t n_, d_;
};

/// Pair distances ‖x_i − x_j‖ over i < j: (B, n(n − 1)/2).
at::Tensor pair_distances(const at::Tensor& x, int64_t particles, int64_t particle_dim);

/// A many-particle system with its energy U at temperature 1 (target density ∝ exp(−U)).
struct MolecularSystem {
  std::string name;
  int64_t particles = 0, particle_dim = 0;
  /// U per row (B) of configurations (B, n·d).
  std::function<at::Tensor(const at::Tensor&)> energy;
};

/// DW4: 4 particles in 2-D, U = Σ_{i<j} 0.9·(d_ij − 4)⁴ − 4·(d_ij − 4)².
at::Tensor double_well_energy(const at::Tensor& x);
/// LJ13: 13 particles in 3-D, U = Σ_{i≠j} (r_ij⁻¹² − 2·r_ij⁻⁶) + ½·Σ_i ‖x_i − x̄‖² (the pair sum over
/// ordered pairs, as the data's conventions say).
at::Tensor lennard_jones_energy(const at::Tensor& x);
/// "dw4" or "lj13"; std::invalid_argument naming the known ones otherwise.
MolecularSystem molecular_system(const std::string& name);

/// The Kish effective sample size of importance weights given as log w (B): (Σw)² / (B·Σw²) in [1/B, 1];
/// a NaN log-weight counts as weight 0 (0 when every weight is 0), +inf ones as equal weights that
/// outweigh every finite one.
double kish_effective_sample_size(const at::Tensor& log_weights);

}  // namespace flowmatch
