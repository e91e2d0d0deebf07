// Particle systems (issue "Equivariant flow matching for molecules"): the mean-free space and
// Gaussian, the EGNN's equivariance, particle alignment, the equivariant OT coupling, the DW4 and
// LJ13 energies and the effective sample size. Tolerances: float64 rounding unless said.
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "flowmatch/assignment.h"
#include "flowmatch/coupling.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/manifold.h"
#include "flowmatch/models/egnn.h"
#include "flowmatch/particles.h"
#include "model_checks.h"

namespace fm = flowmatch;

namespace {

double max_abs_entry(const at::Tensor& t) { return t.abs().max().item<double>(); }

at::Generator generator(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// A random proper rotation (d, d): Q of a Gaussian matrix's QR, its sign fixed, det +1.
at::Tensor random_rotation(int64_t d, uint64_t seed) {
  at::Generator g = generator(seed);
  auto [q, r] = at::linalg_qr(at::randn({d, d}, g, at::kDouble));
  q = q * at::sign(r.diagonal()).unsqueeze(0);
  if (at::linalg_det(q).item<double>() < 0) q.select(1, 0).neg_();
  return q;
}

// Configurations (B, n·d) with rows as (B, n, d): rotate every particle by R, permute particles
// (particle i of the result is particle perm[i] of x), translate by c.
at::Tensor transform(const at::Tensor& x, int64_t n, int64_t d, const at::Tensor& rotation, const at::Tensor& perm, const at::Tensor& shift) {
  at::Tensor p = x.reshape({x.size(0), n, d}).index_select(1, perm);
  return (at::matmul(p, rotation.t()) + shift).reshape({x.size(0), n * d});
}

// An orthonormal basis (n·d, (n − 1)·d) of the mean-free subspace.
at::Tensor mean_free_basis(int64_t n, int64_t d) {
  at::Tensor p = at::eye(n * d, at::kDouble) - at::kron(at::ones({n, n}, at::kDouble) / n, at::eye(d, at::kDouble));
  auto [q, r] = at::linalg_qr(p.slice(1, 0, (n - 1) * d));
  return q;
}

}  // namespace

TEST(Particles, MeanFreeSpaceProjectsAndItsDivergenceIsTheTraceInTheSubspace) {
  const int64_t n = 5, d = 3;
  fm::MeanFreeSpace space(n, d);
  EXPECT_EQ(space.dimension(), (n - 1) * d);
  EXPECT_EQ(space.coordinates(), n * d);
  at::Generator g = generator(1);
  at::Tensor x = at::randn({7, n * d}, g, at::kDouble);
  at::Tensor p = space.project(x);
  EXPECT_LT(max_abs_entry(p.reshape({7, n, d}).sum(1)), 1e-13);
  EXPECT_LT(max_abs_entry(space.project(p) - p), 1e-14);
  EXPECT_LT(max_abs_entry(space.distance_from_manifold(p)), 1e-13);
  // The distance to the subspace is ‖x − Px‖.
  EXPECT_LT(max_abs_entry(space.distance_from_manifold(x) - (x - p).norm(2, 1)), 1e-12);
  // tr(J P) = tr(Qᵀ J Q) for an orthonormal basis Q of the subspace.
  at::Tensor jac = at::randn({7, n * d, n * d}, g, at::kDouble);
  at::Tensor q = mean_free_basis(n, d);
  at::Tensor reference = at::matmul(at::matmul(q.t().unsqueeze(0), jac), q.unsqueeze(0)).diagonal(0, 1, 2).sum(1);
  EXPECT_LT(max_abs_entry(space.tangent_trace(p, jac) - reference), 1e-11);
  // make_manifold rebuilds it; bad descriptions are named.
  auto again = fm::make_manifold(space.spec());
  EXPECT_EQ(again->spec(), space.spec());
  EXPECT_THROW(fm::make_manifold(nlohmann::json{{"type", "mean-free"}, {"particles", 4}}), std::invalid_argument);
  EXPECT_THROW(fm::MeanFreeSpace(1, 3), std::invalid_argument);
}

TEST(Particles, MeanFreeGaussianDensityIsTheSubspaceNormalAndSamplesHaveItsCovariance) {
  const int64_t n = 4, d = 2;
  fm::MeanFreeGaussian source(n, d);
  at::Generator g = generator(2);
  at::Tensor x = source.sample(40000, g, at::TensorOptions().dtype(at::kDouble));
  EXPECT_LT(max_abs_entry(x.reshape({-1, n, d}).sum(1)), 1e-12);
  // Direct computation: coordinates z = Qᵀx in an orthonormal basis, log N(z; 0, I_((n−1)d)).
  at::Tensor q = mean_free_basis(n, d);
  at::Tensor z = at::matmul(x.slice(0, 0, 100), q);
  at::Tensor direct = -0.5 * z.square().sum(1) - 0.5 * (n - 1) * d * std::log(2 * M_PI);
  EXPECT_LT(max_abs_entry(source.log_density(x.slice(0, 0, 100)) - direct), 1e-12);
  // Covariance P = I − (1/n)(11ᵀ ⊗ I): each entry's standard error is about √(2/N) ≈ 0.007; 5 of them.
  at::Tensor cov = at::matmul(x.t(), x) / x.size(0);
  at::Tensor p = at::eye(n * d, at::kDouble) - at::kron(at::ones({n, n}, at::kDouble) / n, at::eye(d, at::kDouble));
  EXPECT_LT(max_abs_entry(cov - p), 5 * std::sqrt(2.0 / 40000));
}

TEST(Particles, LikelihoodOfALinearFlowInTheSubspaceMatchesTheClosedForm) {
  // v(x) = B x, made tangent by the solver: in the subspace x1 = exp(M) x0 with M = P B P, and
  // log p1(x1) = log p0(exp(−M) x1) − tr(P B P), not − tr(B): the divergence is the subspace's.
  const int64_t n = 3, d = 2, D = n * d;
  auto space = std::make_shared<fm::MeanFreeSpace>(n, d);
  fm::MeanFreeGaussian source(n, d);
  at::Generator g = generator(3);
  at::Tensor p = at::eye(D, at::kDouble) - at::kron(at::ones({n, n}, at::kDouble) / n, at::eye(d, at::kDouble));
  at::Tensor bm = at::randn({D, D}, g, at::kDouble) * 0.4;
  at::Tensor m = at::matmul(at::matmul(p, bm), p);
  ASSERT_GT(std::abs(at::trace(bm).item<double>() - at::trace(m).item<double>()), 0.05) << "the test must tell the two traces apart";
  fm::VelocityField field = [bm](const at::Tensor& x, const at::Tensor&) { return at::matmul(x, bm.t()); };
  at::Tensor x1 = source.sample(20, g, at::TensorOptions().dtype(at::kDouble));
  auto r = fm::log_likelihood(field, x1,
                              fm::LikelihoodOptions()
                                  .solver(fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-10).rtol(1e-10).manifold(space))
                                  .source_log_density([&](const at::Tensor& x) { return source.log_density(x); }));
  at::Tensor x0 = at::matmul(x1, at::linalg_matrix_exp(-m).t());
  at::Tensor expected = source.log_density(x0) - at::trace(m);
  EXPECT_LT(max_abs_entry(r.log_prob - expected), 1e-7);
  EXPECT_LT(max_abs_entry(r.x0 - x0), 1e-7);
}

TEST(Particles, EGNNIsEquivariantToRotationsTranslationsAndPermutationsWithZeroMeanOutput) {
  for (auto [n, d] : {std::pair<int64_t, int64_t>{4, 2}, {13, 3}}) {
    for (bool attention : {false, true}) {
      auto net = fmtest::random_network<fm::models::EGNNImpl>(
          fm::models::EGNNOptions(n, d).width(16).depth(3).attention(attention).time_features(4), 7, 0.3);
      at::Generator g = generator(10 + n);
      at::Tensor x = at::randn({6, n * d}, g, at::kDouble) * 1.5;
      at::Tensor t = at::rand({6}, g, at::kDouble);
      at::Tensor v = net->forward(x, t);
      EXPECT_GT(max_abs_entry(v), 1e-3) << "the network must not be trivially zero";
      EXPECT_LT(max_abs_entry(v.reshape({6, n, d}).sum(1)), 1e-12);
      at::Tensor rotation = random_rotation(d, 20 + n);
      at::Tensor perm = at::randperm(n, g, at::kLong);
      at::Tensor shift = at::randn({1, 1, d}, g, at::kDouble) * 3;
      at::Tensor moved = net->forward(transform(x, n, d, rotation, perm, shift), t);
      at::Tensor expected = transform(v, n, d, rotation, perm, at::zeros({1, 1, d}, at::kDouble));
      EXPECT_LT(max_abs_entry(moved - expected), 1e-10) << n << " particles, attention " << attention;
    }
  }
}

TEST(Particles, EGNNWithAMaskEqualsTheNetworkOnTheSmallerSystem) {
  // The weights do not depend on the particle count: a 6-particle network with 2 particles masked out
  // gives the 4-particle network's velocity on the 4 that exist (and zero on the others).
  auto big = fmtest::random_network<fm::models::EGNNImpl>(fm::models::EGNNOptions(6, 3).width(12).depth(2).attention(true), 5, 0.3);
  auto small = std::make_shared<fm::models::EGNNImpl>(fm::models::EGNNOptions(4, 3).width(12).depth(2).attention(true));
  small->to(at::kDouble);
  fm::models::copy_parameters(*big, *small);
  at::Generator g = generator(4);
  at::Tensor x = at::randn({5, 4, 3}, g, at::kDouble);
  at::Tensor padded = at::cat({x, at::randn({5, 2, 3}, g, at::kDouble) * 9}, 1);
  at::Tensor mask = at::cat({at::ones({5, 4}, at::kBool), at::zeros({5, 2}, at::kBool)}, 1);
  at::Tensor t = at::rand({5}, g, at::kDouble);
  fm::models::Conditioning c;
  c.mask = mask;
  at::Tensor v = big->forward_with(padded.reshape({5, 18}), t, c).reshape({5, 6, 3});
  at::Tensor expected = small->forward(x.reshape({5, 12}), t).reshape({5, 4, 3});
  EXPECT_LT(max_abs_entry(v.slice(1, 0, 4) - expected), 1e-12);
  EXPECT_EQ(max_abs_entry(v.slice(1, 4, 6)), 0.0);
  fm::models::Conditioning labels;
  labels.labels = at::zeros({5}, at::kLong);
  EXPECT_THROW(big->forward_with(padded.reshape({5, 18}), t, labels), std::invalid_argument);
}

TEST(Particles, EGNNGradientsMatchFiniteDifferencesAndItsRegistrationTakesParticleData) {
  auto net = fmtest::random_network<fm::models::EGNNImpl>(fm::models::EGNNOptions(4, 2).width(8).depth(2).attention(true), 9, 0.3);
  at::Generator g = generator(6);
  at::Tensor x = at::randn({3, 8}, g, at::kDouble), t = at::rand({3}, g, at::kDouble);
  at::Tensor target = at::randn({3, 8}, g, at::kDouble);
  EXPECT_GT(fmtest::expect_gradients_match_finite_differences(*net, [&] { return (net->forward(x, t) - target).square().sum(); }, 1e-6), 0);
  const auto reg = fm::models::model_registration("egnn");
  const nlohmann::json spec = reg.describe({8}, 0, {{"particles", 4}, {"particle_dim", 2}, {"width", 8}, {"depth", 2}});
  EXPECT_EQ(spec["options"]["width"], 8);
  EXPECT_EQ(fm::models::make_model(spec)->spec(), spec);
  EXPECT_THROW(reg.describe({8}, 0, {{"width", 8}}), std::invalid_argument);                                      // no particles
  EXPECT_THROW(reg.describe({9}, 0, {{"particles", 4}, {"particle_dim", 2}}), std::invalid_argument);             // wrong width
  EXPECT_THROW(reg.describe({8}, 0, {{"particles", 4}, {"particle_dim", 2}, {"activation", "relu"}}), std::invalid_argument);
  EXPECT_THROW(reg.describe({8}, 3, {{"particles", 4}, {"particle_dim", 2}}), std::invalid_argument);             // classes
}

TEST(Particles, AlignmentRecoversAKnownRotationAndPermutationExactly) {
  for (auto [n, d] : {std::pair<int64_t, int64_t>{4, 2}, {13, 3}}) {
    at::Generator g = generator(30 + n);
    const int64_t b = 20;
    at::Tensor y = fm::remove_center_of_mass(at::randn({b, n * d}, g, at::kDouble), n, d).reshape({b, n * d});
    // x = y with particles permuted and rotated: aligning x onto y must undo both.
    std::vector<at::Tensor> xs, perms, rotations;
    for (int64_t k = 0; k < b; ++k) {
      at::Tensor r = random_rotation(d, 100 + k);
      at::Tensor perm = at::randperm(n, g, at::kLong);
      xs.push_back(transform(y.slice(0, k, k + 1), n, d, r, perm, at::zeros({1, 1, d}, at::kDouble)));
      perms.push_back(perm);
      rotations.push_back(r);
    }
    at::Tensor x = at::cat(xs);
    const fm::ParticleAlignment a = fm::align_particles(x, y, n, d);
    EXPECT_LT(max_abs_entry(a.aligned - y), 1e-10) << n << " particles";
    EXPECT_LT(a.cost.max().item<double>(), 1e-18 + 1e-20 * n);
    for (int64_t k = 0; k < b; ++k) {
      // x_k[j] = R y[perm[j]]: particle i of y is particle perm⁻¹(i) of x, rotated back by Rᵀ.
      at::Tensor inverse = at::argsort(perms[k]);
      EXPECT_TRUE(at::equal(a.permutation[k], inverse)) << k;
      EXPECT_LT(max_abs_entry(a.rotation[k] - rotations[k].t()), 1e-10) << k;
      EXPECT_NEAR(at::linalg_det(a.rotation[k]).item<double>(), 1.0, 1e-12);
    }
  }
}

TEST(Particles, AlignedCostIsNeverAboveTheUnalignedAndRotationsAreProper) {
  for (auto [n, d] : {std::pair<int64_t, int64_t>{4, 2}, {13, 3}, {5, 3}}) {
    at::Generator g = generator(40 + n);
    const int64_t b = 300;
    at::Tensor x = fm::remove_center_of_mass(at::randn({b, n * d}, g, at::kDouble), n, d).reshape({b, n * d});
    at::Tensor y = fm::remove_center_of_mass(at::randn({b, n * d}, g, at::kDouble) * 2, n, d).reshape({b, n * d});
    const fm::ParticleAlignment a = fm::align_particles(x, y, n, d);
    at::Tensor unaligned = (x - y).square().sum(1);
    EXPECT_LE((a.cost - unaligned).max().item<double>(), 1e-12);
    EXPECT_LT((a.cost - unaligned).mean().item<double>(), 0) << "alignment must help on average";
    EXPECT_LT(max_abs_entry((a.aligned - y).square().sum(1) - a.cost), 1e-10);
    EXPECT_LT(max_abs_entry(at::linalg_det(a.rotation) - 1), 1e-12);
    // The aligned configuration is x rotated and permuted: its pair distances are x's, as multisets.
    at::Tensor dx = std::get<0>(at::sort(fm::pair_distances(x, n, d), 1));
    at::Tensor da = std::get<0>(at::sort(fm::pair_distances(a.aligned, n, d), 1));
    EXPECT_LT(max_abs_entry(dx - da), 1e-10);
  }
  // A mirror image in 3-D is not reachable by a proper rotation: the cost stays positive.
  at::Generator g = generator(50);
  at::Tensor y = fm::remove_center_of_mass(at::randn({1, 15}, g, at::kDouble), 5, 3).reshape({1, 15});
  at::Tensor mirror = y.reshape({1, 5, 3}) * at::tensor({-1.0, 1.0, 1.0}, at::kDouble);
  const fm::ParticleAlignment a = fm::align_particles(mirror.reshape({1, 15}), y, 5, 3);
  EXPECT_GT(a.cost.item<double>(), 1e-3);
  EXPECT_NEAR(at::linalg_det(a.rotation[0]).item<double>(), 1.0, 1e-12);
}

TEST(Particles, EquivariantOTPairsAlignedSourcesAndCostsNoMoreThanPlainOT) {
  const int64_t n = 13, d = 3, b = 24;
  at::Generator g = generator(60);
  fm::MeanFreeGaussian source(n, d);
  at::Tensor x0 = source.sample(b, g, at::TensorOptions().dtype(at::kDouble));
  at::Tensor x1 = fm::remove_center_of_mass(at::randn({b, n * d}, g, at::kDouble) * 0.5, n, d).reshape({b, n * d});
  fm::EquivariantOTCoupling eq(n, d);
  const fm::CoupledBatch pairs = eq.pair(x0, x1, g);
  // Every target row once; each source row once, aligned (its pair distances kept).
  EXPECT_TRUE(at::equal(std::get<0>(at::sort(pairs.x1.square().sum(1))), std::get<0>(at::sort(x1.square().sum(1)))));
  at::Tensor d0 = std::get<0>(at::sort(fm::pair_distances(x0, n, d), 1));
  at::Tensor dp = std::get<0>(at::sort(fm::pair_distances(pairs.x0, n, d), 1));
  EXPECT_LT(max_abs_entry(std::get<0>(at::sort(d0.sum(1))) - std::get<0>(at::sort(dp.sum(1)))), 1e-9);
  // The pairs' total squared distance is the optimum of the aligned costs, below plain OT's.
  const double equivariant = (pairs.x0 - pairs.x1).square().sum().item<double>();
  const fm::CoupledBatch plain = fm::ExactOTCoupling().pair(x0, x1, g);
  const double ot = (plain.x0 - plain.x1).square().sum().item<double>();
  EXPECT_LT(equivariant, ot);
  at::Tensor cost = fm::aligned_cost_matrix(x0, x1, n, d);
  EXPECT_NEAR(equivariant, fm::solve_assignment(cost).total_cost, 1e-8);
  EXPECT_EQ(fm::make_coupling(eq.spec())->spec(), eq.spec());
  EXPECT_THROW(fm::make_coupling("equivariant-ot"), std::invalid_argument);  // no particle shape
  EXPECT_THROW(eq.pair(x0.slice(1, 0, 12), x1.slice(1, 0, 12)), c10::Error);
  // Unequal sizes: every row of the larger side once, its partner drawn from the exact plan of the
  // aligned costs, the source rows aligned onto their partners.
  const fm::CoupledBatch more = eq.pair(x0, x1.slice(0, 0, 10), g);
  ASSERT_EQ(more.x0.size(0), b);
  for (int64_t i = 0; i < b; ++i) {
    at::Tensor distance_to_targets = (x1.slice(0, 0, 10) - more.x1[i]).square().sum(1);
    EXPECT_EQ(distance_to_targets.min().item<double>(), 0.0) << i;  // a target row, unchanged
  }
  at::Tensor dm = std::get<0>(at::sort(fm::pair_distances(more.x0, n, d), 1));
  EXPECT_LT(max_abs_entry(std::get<0>(at::sort(d0.sum(1))) - std::get<0>(at::sort(dm.sum(1)))), 1e-9);  // each source row once, aligned
}

TEST(Particles, EnergiesMatchADoubleLoop) {
  at::Generator g = generator(70);
  auto loop = [](const at::Tensor& x, int64_t n, int64_t d, bool lj) {
    std::vector<double> out;
    for (int64_t b = 0; b < x.size(0); ++b) {
      auto at_ = [&](int64_t i, int64_t a) { return x[b][i * d + a].item<double>(); };
      double u = 0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          if (i == j || (!lj && j < i)) continue;
          double r2 = 0;
          for (int64_t a = 0; a < d; ++a) r2 += std::pow(at_(i, a) - at_(j, a), 2);
          const double r = std::sqrt(r2);
          u += lj ? std::pow(r, -12) - 2 * std::pow(r, -6) : 0.9 * std::pow(r - 4, 4) - 4 * std::pow(r - 4, 2);
        }
      }
      if (lj) {
        for (int64_t a = 0; a < d; ++a) {
          double mean = 0;
          for (int64_t i = 0; i < n; ++i) mean += at_(i, a) / n;
          for (int64_t i = 0; i < n; ++i) u += 0.5 * std::pow(at_(i, a) - mean, 2);
        }
      }
      out.push_back(u);
    }
    return at::tensor(out, at::kDouble);
  };
  at::Tensor dw = at::randn({10, 8}, g, at::kDouble) * 2;
  EXPECT_LT(max_abs_entry(fm::double_well_energy(dw) - loop(dw, 4, 2, false)), 1e-9);
  at::Tensor lj = at::randn({10, 39}, g, at::kDouble) * 1.2 + 0.3;
  at::Tensor reference = loop(lj, 13, 3, true);
  EXPECT_LT(max_abs_entry((fm::lennard_jones_energy(lj) - reference) / reference.abs().clamp_min(1)), 1e-12);
  EXPECT_EQ(fm::molecular_system("lj13").energy(lj).sizes(), reference.sizes());
  EXPECT_THROW(fm::molecular_system("lj55"), std::invalid_argument);
}

TEST(Particles, KishESSIsOneForTheTargetDensityAndFallsWithUnevenWeights) {
  at::Generator g = generator(80);
  at::Tensor x = at::randn({500, 8}, g, at::kDouble) * 2;
  at::Tensor energy = fm::double_well_energy(x);
  // The model's density is the target's, up to its normalising constant: log q = −U − log Z.
  EXPECT_NEAR(fm::kish_effective_sample_size(-energy - (-energy - 3.7)), 1.0, 1e-12);
  EXPECT_NEAR(fm::kish_effective_sample_size(at::tensor({0.0, -1e9, -1e9, -1e9}, at::kDouble)), 0.25, 1e-12);
  // Two weights w and 1: (1 + w)² / (2 (1 + w²)).
  const double w = std::exp(1.3);
  EXPECT_NEAR(fm::kish_effective_sample_size(at::tensor({1.3, 0.0}, at::kDouble)), (1 + w) * (1 + w) / (2 * (1 + w * w)), 1e-12);
  // A NaN log-weight counts as weight 0; +inf ones outweigh the rest.
  EXPECT_NEAR(fm::kish_effective_sample_size(at::tensor({0.0, std::nan("")}, at::kDouble)), 0.5, 1e-12);
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_NEAR(fm::kish_effective_sample_size(at::tensor({0.0, inf, 2.0, inf}, at::kDouble)), 0.5, 1e-12);
}
