// Manifolds, the geodesic path, the manifold network, projected solvers and likelihoods on the
// sphere and the torus (issue "Flow matching on manifolds"). Tolerances: float64 rounding unless said.
#include <cmath>
#include <filesystem>
#include <iostream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "flowmatch/coupling.h"
#include "flowmatch/data/pdb.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/manifold.h"
#include "flowmatch/models/manifold_mlp.h"
#include "flowmatch/paths.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/solvers.h"
#include "flowmatch/von_mises_fisher_mixture.h"
#include "flowmatch/von_mises_mixture.h"
#include "flowmatch/wrapped_normal.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {

at::Tensor unit_rows(int64_t n, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor x = at::randn({n, 3}, g, at::kDouble);
  return x / x.norm(2, 1, true);
}

at::Tensor angles(int64_t n, int64_t d, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::rand({n, d}, g, at::kDouble) * (2 * M_PI) - M_PI;
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

}  // namespace

TEST(Manifold, SphereExpInvertsLogDistanceIsTheAngleAndProjectionsAreIdempotent) {
  fm::Sphere s(2);
  at::Tensor x = unit_rows(500, 1), y = unit_rows(500, 2);
  at::Tensor v = s.logmap(x, y);
  EXPECT_LT(max_abs((v * x).sum(1)), 1e-12);                          // tangent at x
  EXPECT_LT(max_abs(s.expmap(x, v) - y), 1e-10);                     // exp_x(log_x y) = y
  EXPECT_LT(max_abs(v.norm(2, 1) - s.distance(x, y)), 1e-12);        // |log| = distance
  EXPECT_LT(max_abs(s.distance(x, y) - at::acos((x * y).sum(1))), 1e-7);  // the angle
  EXPECT_LT(max_abs(s.pairwise_distance(x.slice(0, 0, 7), y.slice(0, 0, 5)).select(1, 3) -
                    s.distance(x.slice(0, 0, 7), y.slice(0, 3, 4).expand({7, 3}))), 1e-7);
  at::Tensor p = s.project(x * 3.7);
  EXPECT_LT(max_abs(s.project(p) - p), 1e-15);
  at::Tensor w = at::randn({500, 3}, at::kDouble);
  at::Tensor t = s.project_tangent(x, w);
  EXPECT_LT(max_abs(s.project_tangent(x, t) - t), 1e-14);
  EXPECT_NEAR(s.log_volume(), std::log(4 * M_PI), 1e-14);
  EXPECT_NEAR(fm::Sphere(1).log_volume(), std::log(2 * M_PI), 1e-14);
  // log at the point itself is zero, and exp of zero stays.
  EXPECT_LT(max_abs(s.logmap(x, x)), 1e-12);
  EXPECT_LT(max_abs(s.expmap(x, at::zeros_like(x)) - x), 1e-15);
}

TEST(Manifold, TorusWrapsExpLogAndDistanceAcrossTheCut) {
  fm::FlatTorus t(2);
  at::Tensor x = angles(400, 2, 3), y = angles(400, 2, 4);
  at::Tensor v = t.logmap(x, y);
  EXPECT_LE(max_abs(v), M_PI + 1e-12);
  EXPECT_LT(max_abs(fm::wrap_angle(t.expmap(x, v) - y)), 1e-12);
  // Across the cut: 3.1 and −3.1 are 2π − 6.2 apart, not 6.2.
  at::Tensor a = at::tensor({3.1, 0.0}, at::kDouble).reshape({1, 2}), b = at::tensor({-3.1, 0.0}, at::kDouble).reshape({1, 2});
  EXPECT_NEAR(t.distance(a, b).item<double>(), 2 * M_PI - 6.2, 1e-12);
  EXPECT_LT(max_abs(t.project(x + 2 * M_PI) - x), 1e-12);
  EXPECT_NEAR(t.log_volume(), 2 * std::log(2 * M_PI), 1e-14);
  // The pairwise matrix agrees with the row-wise distance.
  at::Tensor pd = t.pairwise_distance(x.slice(0, 0, 6), y.slice(0, 0, 4));
  EXPECT_LT(max_abs(pd.select(1, 2) - t.distance(x.slice(0, 0, 6), y.slice(0, 2, 3).expand({6, 2}))), 1e-12);
  // The network's view: (cos, sin); an output read as circle velocities.
  at::Tensor f = t.features(x);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{400, 4}));
  at::Tensor o = at::randn({400, 4}, at::kDouble);
  at::Tensor rate = t.velocity_from_features(x, o);
  // θ̇ is the tangent component: −sinθ·o_cos + cosθ·o_sin.
  EXPECT_LT(max_abs(rate - (-at::sin(x) * o.slice(1, 0, 2) + at::cos(x) * o.slice(1, 2, 4))), 1e-15);
}

TEST(Manifold, GeodesicPathEndsAtTheEndpointsAndItsVelocityIsTheTimeDerivative) {
  for (const std::string scheduler : {"condot", "polynomial", "cosine"}) {
    for (const bool sphere : {true, false}) {
      std::shared_ptr<const fm::Manifold> m =
          sphere ? std::shared_ptr<const fm::Manifold>(std::make_shared<fm::Sphere>(2)) : std::make_shared<fm::FlatTorus>(3);
      fm::GeodesicPath path(m, fm::make_scheduler(scheduler));
      const int64_t n = 300;
      at::Tensor x0 = sphere ? unit_rows(n, 5) : angles(n, 3, 5), x1 = sphere ? unit_rows(n, 6) : angles(n, 3, 6);
      EXPECT_LT(max_abs(m->logmap(path.sample(x0, x1, at::zeros({n}, at::kDouble)).x_t, x0)), 1e-12) << scheduler;
      EXPECT_LT(max_abs(m->logmap(path.sample(x0, x1, at::ones({n}, at::kDouble)).x_t, x1)), 1e-9) << scheduler;
      // Central difference in t (h = 1e-5: truncation ~h² |x'''| ~ 1e-9, rounding ~1e-16/h).
      at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
      at::Tensor t = at::rand({n}, g, at::kDouble) * 0.9 + 0.05;
      const double h = 1e-5;
      // In the coordinates: the sphere's embedding, the torus's angles (wrapped across the cut).
      at::Tensor step = path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t;
      at::Tensor fd = (sphere ? step : fm::wrap_angle(step)) / (2 * h);
      at::Tensor u = path.sample(x0, x1, t).velocity;
      EXPECT_LT(max_abs(fd - u), 1e-6) << scheduler << (sphere ? " sphere" : " torus");
      if (sphere && scheduler == "condot") {
        // Chen & Lipman's closed form: u_t = log_{x_t}(x1) / (1 − t).
        at::Tensor xt = path.sample(x0, x1, t).x_t;
        EXPECT_LT(max_abs(u - m->logmap(xt, x1) / (1 - t).unsqueeze(1)), 1e-9);
      }
    }
  }
  // A scheduler that does not start at 0 is refused by name.
  EXPECT_THROW(fm::GeodesicPath(std::make_shared<fm::Sphere>(2), fm::make_scheduler("ve")), std::invalid_argument);
}

TEST(Manifold, ProjectedSolversStayOnTheSphereAndIntegrateARotationExactly) {
  auto sphere = std::make_shared<fm::Sphere>(2);
  // A random manifold network: after 1000 Euler steps every sample is on the sphere to 1e-6.
  at::manual_seed(0);
  auto net = std::make_shared<fm::models::ManifoldMLPImpl>(sphere, fm::models::MLPOptions(3).width(32).depth(2));
  fm::VelocityField field = [&](const at::Tensor& x, const at::Tensor& t) { return net->forward(x, t); };
  at::Tensor x0 = unit_rows(200, 8).to(at::kFloat);
  at::NoGradGuard no_grad;
  for (const std::string solver : {"euler", "midpoint", "rk4"}) {
    auto r = fm::solve(solver, field, x0, fm::SolverOptions().steps(solver == "euler" ? 1000 : 100).manifold(sphere));
    EXPECT_LT(max_abs(r.x.norm(2, 1) - 1), 1e-6) << solver;
  }
  // The rotation field v = ω e_z × x turns every point by ω about the z axis in unit time.
  const double omega = 1.3;
  fm::VelocityField rotation = [&](const at::Tensor& x, const at::Tensor&) {
    return omega * at::stack({-x.select(1, 1), x.select(1, 0), at::zeros_like(x.select(1, 2))}, 1);
  };
  at::Tensor p = unit_rows(100, 9);
  // p turned about the z axis by `angle` (one per row, or one for all).
  auto turned_by = [&](const at::Tensor& angle) {
    at::Tensor c = at::cos(angle), s = at::sin(angle);
    return at::stack({c * p.select(1, 0) - s * p.select(1, 1), s * p.select(1, 0) + c * p.select(1, 1), p.select(1, 2)}, 1);
  };
  at::Tensor expected = turned_by(at::scalar_tensor(omega, at::kDouble));
  auto rk4 = fm::solve("rk4", rotation, p, fm::SolverOptions().steps(50).manifold(sphere));
  EXPECT_LT(max_abs(rk4.x - expected), 1e-7);  // RK4, h = 0.02: error ~ h⁴ ω⁵ ≈ 6e-7 / 5! scale
  auto dopri = fm::solve("dopri5", rotation, p, fm::SolverOptions().atol(1e-10).rtol(1e-10).manifold(sphere));
  EXPECT_LT(max_abs(dopri.x - expected), 1e-8);
  // Dopri5's batch error norm on the sphere: one point turning 16 times faster than the other 99 sets
  // every step under the per-point norm; in the batch RMS its error ratio weighs 1/100, so the steps are
  // longer and that point's error may grow to about sqrt(100) = 10 times the per-point norm's: the bounds
  // at a tolerance of 1e-7 are 10 times it per point (1e-6) and 10 times that in the batch (1e-5), on the sphere.
  at::Tensor speed = at::full({100, 1}, 0.5, at::kDouble);
  speed[0] = 8.0;
  fm::VelocityField uneven = [&](const at::Tensor& x, const at::Tensor&) { return speed * rotation(x, at::Tensor()) / omega; };
  at::Tensor turned = turned_by(speed.squeeze(1));
  const auto tight = fm::SolverOptions().atol(1e-7).rtol(1e-7).manifold(sphere);
  auto per_point = fm::solve("dopri5", uneven, p, tight);
  auto batch = fm::solve("dopri5", uneven, p, fm::SolverOptions(tight).error_norm(fm::ErrorNorm::Batch));
  EXPECT_LT(batch.nfe, per_point.nfe);
  EXPECT_LT(max_abs(per_point.x - turned), 1e-6);
  EXPECT_LT(max_abs(batch.x - turned), 1e-5);
  EXPECT_LT(max_abs(batch.x.norm(2, 1) - 1), 1e-12);
  std::cout << "[ info ] uneven rotation at 1e-7: NFE " << per_point.nfe << " (per point) / " << batch.nfe << " (batch); largest error "
            << max_abs(per_point.x - turned) << " / " << max_abs(batch.x - turned) << "\n";
}

TEST(Manifold, LikelihoodsOnTheSphereAndTorusMatchClosedForms) {
  auto sphere = std::make_shared<fm::Sphere>(2);
  auto uniform = [](double log_volume) {
    return [log_volume](const at::Tensor& x) { return at::full({x.size(0)}, -log_volume, x.options()); };
  };
  const auto exact = fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-9).rtol(1e-9);
  // A zero field leaves the uniform density exactly uniform: NLL = log 4π (and log (2π)² on T²).
  fm::VelocityField zero = [](const at::Tensor& x, const at::Tensor&) { return at::zeros_like(x) * x; };
  at::Tensor x = unit_rows(50, 10);
  auto r = fm::log_likelihood(zero, x, fm::LikelihoodOptions().solver(fm::SolverOptions(exact).manifold(sphere)).source_log_density(uniform(sphere->log_volume())));
  EXPECT_LT(max_abs(r.log_prob + std::log(4 * M_PI)), 1e-12);
  auto torus = std::make_shared<fm::FlatTorus>(2);
  auto rt = fm::log_likelihood(zero, angles(50, 2, 11),
                               fm::LikelihoodOptions().solver(fm::SolverOptions(exact).manifold(torus)).source_log_density(uniform(torus->log_volume())));
  EXPECT_LT(max_abs(rt.log_prob + 2 * std::log(2 * M_PI)), 1e-12);

  // The field a·(e_z − z x) (the gradient of a·z on the sphere) moves the uniform density toward the
  // north pole: z evolves as ż = a(1 − z²), z(1) = tanh(artanh z0 + a), longitude fixed, so with
  // z0 = tanh(artanh z − a):  log p1(x) = −log 4π + log((1 − z0²)/(1 − z²)).
  // Its Riemannian divergence is −2az (the plain trace would say −4az: this checks tr(PJP)).
  const double a = 0.8;
  fm::VelocityField lift = [&](const at::Tensor& y, const at::Tensor&) {
    at::Tensor ez = at::zeros_like(y);
    ez.select(1, 2).fill_(1);
    return a * (ez - y.select(1, 2).unsqueeze(1) * y);
  };
  at::Tensor pts = unit_rows(60, 12);
  pts = pts.index_select(0, (pts.select(1, 2).abs() < 0.95).nonzero().squeeze(1));
  at::Tensor z = pts.select(1, 2);
  at::Tensor z0 = at::tanh(at::atanh(z) - a);
  at::Tensor expected = -std::log(4 * M_PI) + at::log((1 - z0.square()) / (1 - z.square()));
  auto opts = fm::LikelihoodOptions().solver(fm::SolverOptions(exact).manifold(sphere)).source_log_density(uniform(sphere->log_volume()));
  auto lr = fm::log_likelihood(lift, pts, opts);
  EXPECT_LT(max_abs(lr.log_prob - expected), 1e-7);
  // Dopri5's batch error norm on the sphere (the RMS of the points' error ratios) takes no more steps than
  // the per-point norm at the same tolerance. Its error stays at the tolerance's scale: the RMS bounds any
  // one point's ratio by sqrt(B) (about 7.4 here), and the flow's stretch e^(2a) (about 5) bounds the growth of
  // an error over [0, 1], so 1e-6 allows about 4e-5 per point, 1e-4 below which both must stay.
  const auto loose = fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-6).rtol(1e-6).manifold(sphere);
  auto per_point = fm::log_likelihood(lift, pts, fm::LikelihoodOptions(opts).solver(loose));
  auto batch = fm::log_likelihood(lift, pts, fm::LikelihoodOptions(opts).solver(fm::SolverOptions(loose).error_norm(fm::ErrorNorm::Batch)));
  EXPECT_LE(batch.nfe, per_point.nfe);
  EXPECT_LT(max_abs(per_point.log_prob - expected), 1e-4);
  EXPECT_LT(max_abs(batch.log_prob - expected), 1e-4);
  EXPECT_LT(sphere->distance_from_manifold(batch.x0).max().item<double>(), 1e-12);
  std::cout << "[ info ] lift field at 1e-6: NFE " << per_point.nfe << " (per point) / " << batch.nfe << " (batch); largest error "
            << max_abs(per_point.log_prob - expected) << " / " << max_abs(batch.log_prob - expected) << "\n";
  // Hutchinson with tangent probes is unbiased: 4000 Gaussian probes, mean error within 5 standard errors.
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(13);
  auto hr = fm::log_likelihood(lift, pts.slice(0, 0, 10),
                               fm::LikelihoodOptions(opts)
                                   .solver(fm::SolverOptions().method(fm::SolverMethod::RK4).steps(20).manifold(sphere))
                                   .divergence(fm::DivergenceMethod::Hutchinson)
                                   .probes(4000)
                                   .probe_distribution(fm::ProbeDistribution::Gaussian),
                               g);
  EXPECT_LT(max_abs(hr.log_prob - expected.slice(0, 0, 10)), 0.05);
}

TEST(Manifold, NetworksGiveTangentVelocitiesAndOTUsesTheGeodesicCost) {
  auto sphere = std::make_shared<fm::Sphere>(2);
  at::manual_seed(1);
  fm::models::ManifoldMLPImpl net(sphere, fm::models::MLPOptions(3).width(16).depth(2));
  at::Tensor x = unit_rows(64, 14).to(at::kFloat);
  at::Tensor v = net.forward(x, at::rand({64}));
  EXPECT_LT(max_abs((v * x).sum(1)), 1e-6);
  auto rebuilt = fm::models::make_model(net.spec());
  EXPECT_EQ(rebuilt->spec(), net.spec());
  // With dropout (training mode) each draw is another field, and every one of them is tangent.
  auto dropping = fm::models::make_model(fm::models::model_registration("manifold-mlp")
                                             .describe({3}, 0, {{"manifold", sphere->spec()}, {"width", 16}, {"dropout", 0.2}}));
  EXPECT_DOUBLE_EQ(dropping->spec()["options"]["dropout"].get<double>(), 0.2);
  const at::Tensor t64 = at::rand({64});
  const at::Tensor v1 = dropping->forward(x, t64), v2 = dropping->forward(x, t64);
  EXPECT_FALSE(at::allclose(v1, v2));
  EXPECT_LT(max_abs((v1 * x).sum(1)), 1e-6);
  dropping->eval();
  EXPECT_TRUE(at::equal(dropping->forward(x, t64), dropping->forward(x, t64)));
  auto torus_net = fm::models::make_model(
      {{"type", "manifold-mlp"}, {"manifold", fm::FlatTorus(2).spec()}, {"options", {{"width", 16}, {"depth", 2}}}});
  EXPECT_EQ(torus_net->forward(angles(5, 2, 1).to(at::kFloat), at::rand({5})).sizes(), (std::vector<int64_t>{5, 2}));
  // The geodesic cost: pairs across the torus's cut are cheap.
  auto cost = fm::squared_geodesic_cost(std::make_shared<fm::FlatTorus>(1));
  at::Tensor c = cost(at::tensor({3.0}, at::kDouble).reshape({1, 1}), at::tensor({-3.0, 0.0}, at::kDouble).reshape({2, 1}));
  EXPECT_NEAR(c[0][0].item<double>(), std::pow(2 * M_PI - 6, 2), 1e-12);
  EXPECT_NEAR(c[0][1].item<double>(), 9.0, 1e-12);
  EXPECT_THROW(fm::make_manifold("cylinder"), std::invalid_argument);
  EXPECT_EQ(fm::make_manifold(fm::ProductManifold({sphere, std::make_shared<fm::FlatTorus>(2)}).spec())->coordinates(), 5);
}

TEST(Manifold, FourierFeaturesFollowFromTheDescriptionStayTangentAndPeriodic) {
  auto sphere = std::make_shared<fm::Sphere>(2);
  at::manual_seed(2);
  const fm::models::ManifoldMLPOptions options =
      fm::models::ManifoldMLPOptions(fm::models::MLPOptions().width(16).depth(2)).fourier_features(2048).fourier_scale(3.0);
  fm::models::ManifoldMLPImpl net(sphere, options);
  at::Tensor x = unit_rows(64, 15).to(at::kFloat);
  at::Tensor t = at::rand({64});
  at::Tensor v = net.forward(x, t);
  EXPECT_LT(max_abs((v * x).sum(1)), 1e-6);
  // The frequencies are N(0, (2π·scale)²) per entry (in radians per unit): 6144 draws put the sample
  // standard deviation within 3 % (its relative error is 1/sqrt(2n) ≈ 0.9 %), the mean within 4 % of σ.
  const at::Tensor b = net.named_buffers()["fourier_frequencies"];
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{2048, 3}));
  EXPECT_NEAR(b.std().item<double>() / (2 * M_PI * 3.0), 1.0, 0.03);
  EXPECT_LT(std::abs(b.mean().item<double>()) / (2 * M_PI * 3.0), 0.04);
  // They follow from the description (their own seed), not from the run's random stream: a model
  // rebuilt from the spec has the same frequencies, and with the weights copied the same field.
  at::manual_seed(99);
  auto rebuilt = fm::models::make_model(net.spec());
  EXPECT_EQ(rebuilt->spec(), net.spec());
  EXPECT_TRUE(at::equal(rebuilt->named_buffers()["fourier_frequencies"], b));
  fm::models::copy_parameters(net, *rebuilt);
  EXPECT_TRUE(at::allclose(rebuilt->forward(x, t), v, 0, 0));
  auto other_seed = fm::models::make_model(
      {{"type", "manifold-mlp"}, {"manifold", sphere->spec()},
       {"options", {{"width", 16}, {"depth", 2}, {"fourier_features", 2048}, {"fourier_scale", 3.0}, {"fourier_seed", 1}}}});
  EXPECT_FALSE(at::equal(other_seed->named_buffers()["fourier_frequencies"], b));
  // On the torus the features of θ and θ + 2π are the same, so the field is periodic.
  auto torus_net = fm::models::make_model({{"type", "manifold-mlp"},
                                            {"manifold", fm::FlatTorus(2).spec()},
                                            {"options", {{"width", 16}, {"depth", 2}, {"fourier_features", 8}}}});
  at::Tensor theta = angles(32, 2, 3).to(at::kFloat);
  EXPECT_LT(max_abs(torus_net->forward(theta + 2 * M_PI, t.slice(0, 0, 32)) - torus_net->forward(theta, t.slice(0, 0, 32))), 1e-4);
  // The network under them has more inputs than outputs: no forward-mode divergence (autograd's is used).
  fm::models::MLPImpl wide(fm::models::MLPOptions(3).input_dim(7));
  EXPECT_FALSE(wide.supports_divergence());
  EXPECT_EQ(wide.forward(at::randn({4, 7}), at::rand({4})).sizes(), (std::vector<int64_t>{4, 3}));
  // Bad values are named.
  for (const auto& [key, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"fourier_scale", 0.0}, {"fourier_features", -1}, {"fourier_seed", -2}, {"fourier_scale", "wide"}}) {
    try {
      fm::models::model_registration("manifold-mlp").describe({3}, 0, {{"manifold", sphere->spec()}, {key, value}});
      ADD_FAILURE() << key << " " << value.dump() << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}

TEST(Proteins, DihedralsHaveTheIupacSignAndRealBackbonesFallInTheRamachandranRegions) {
  // p1 = 0, p2 on the z axis, p0 on x, p3 turned by θ about z (counter-clockwise seen from p2 towards
  // p1, i.e. clockwise looking down the bond from p1 to p2): the IUPAC dihedral is +θ. With it the
  // α-helices below land at φ ≈ −63°, ψ ≈ −43° as in every Ramachandran plot.
  for (double theta : {-2.5, -1.0, 0.3, 1.2, 3.0}) {
    at::Tensor p0 = at::tensor({1.0, 0.0, 0.0}, at::kDouble).reshape({1, 3});
    at::Tensor p1 = at::zeros({1, 3}, at::kDouble);
    at::Tensor p2 = at::tensor({0.0, 0.0, 1.5}, at::kDouble).reshape({1, 3});
    at::Tensor p3 = at::tensor({std::cos(theta), std::sin(theta), 1.5}, at::kDouble).reshape({1, 3});
    EXPECT_NEAR(fm::data::dihedral_angles(p0, p1, p2, p3).item<double>(), theta, 1e-12);
  }
  const std::string file = "/usr/share/doc/theseus/examples/ldh/1a5z_A.pdb.gz";
  ASSERT_TRUE(std::filesystem::exists(file)) << "theseus-examples is not installed (scripts/install-deps.sh installs it)";
  const auto angles = fm::data::read_backbone_angles(file);
  ASSERT_GT(angles.phi_psi.size(0), 250);  // one lactate dehydrogenase chain (~310 residues)
  at::Tensor deg = angles.phi_psi * (180 / M_PI);
  at::Tensor phi = deg.select(1, 0), psi = deg.select(1, 1);
  // LDH is an α/β protein: many residues in the right-handed helix region, many in the β region,
  // and (general residues) almost none with φ > 0 except glycines.
  const double helix = ((phi > -100) & (phi < -30) & (psi > -80) & (psi < 0)).to(at::kDouble).mean().item<double>();
  const double sheet = ((phi > -180) & (phi < -45) & (psi > 90)).to(at::kDouble).mean().item<double>();
  EXPECT_GT(helix, 0.3);
  EXPECT_GT(sheet, 0.1);
  int64_t general_positive = 0, general = 0;
  for (size_t k = 0; k < angles.classes.size(); ++k) {
    if (angles.classes[k] != "general") continue;
    ++general;
    general_positive += phi[static_cast<int64_t>(k)].item<double>() > 0;
  }
  EXPECT_LT(static_cast<double>(general_positive) / static_cast<double>(general), 0.08);
}

TEST(Proteins, AMalformedAtomLineIsNamedByFileAndLine) {
  fmtest::TempDir dir;
  const std::string good = "ATOM      1  N   ALA A   1      11.104  13.207   2.100  1.00  0.00           N\n";
  const std::string bad = "ATOM      2  CA  ALA A   1      11.1x4  13.207   2.100  1.00  0.00           C\n";
  fm::io::write_file_atomic(dir / "bad.pdb", good + bad);
  try {
    fm::data::read_backbone_angles(dir / "bad.pdb");
    ADD_FAILURE() << "malformed coordinate accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("bad.pdb' line 2: coordinate '  11.1x4' is not a number"), std::string::npos) << e.what();
  }
  fm::io::write_file_atomic(dir / "short.pdb", "ATOM      1  N   ALA A   1      11.104\n");
  EXPECT_THROW(fm::data::read_backbone_angles(dir / "short.pdb"), std::invalid_argument);
}

TEST(VonMisesMixture, RecoversTwoWellSeparatedComponentsAndTheirLikelihood) {
  // Two von Mises products (κ = 8 and 4, weights 0.3 / 0.7), drawn by rejection from the uniform.
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(21);
  fm::VonMisesMixture truth;
  truth.weights = at::tensor({0.3, 0.7}, at::kDouble);
  truth.means = at::tensor({-1.5, 2.0, 1.0, -1.0}, at::kDouble).reshape({2, 2});
  truth.kappas = at::tensor({8.0, 8.0, 4.0, 4.0}, at::kDouble).reshape({2, 2});
  at::Tensor proposals = at::rand({400000, 2}, g, at::kDouble) * (2 * M_PI) - M_PI;
  at::Tensor log_p = truth.log_density(proposals);
  const double log_max = log_p.max().item<double>();
  at::Tensor keep = at::rand({proposals.size(0)}, g, at::kDouble).log() < (log_p - log_max);
  at::Tensor x = proposals.index({keep}).slice(0, 0, 20000);
  ASSERT_EQ(x.size(0), 20000);
  fm::VonMisesMixture fit = fm::fit_von_mises_mixture(x, 2, 200, g);
  // The fitted mixture scores the sample as well as the truth does (to 0.01 nats per point)...
  const double nll_fit = -fit.log_density(x).mean().item<double>(), nll_truth = -truth.log_density(x).mean().item<double>();
  EXPECT_NEAR(nll_fit, nll_truth, 0.01);
  // ... and finds the components: the heavier one has weight 0.7 and mean (1, −1).
  const int64_t heavy = fit.weights[0].item<double>() > fit.weights[1].item<double>() ? 0 : 1;
  EXPECT_NEAR(fit.weights[heavy].item<double>(), 0.7, 0.02);
  EXPECT_NEAR(fit.means[heavy][0].item<double>(), 1.0, 0.05);
  EXPECT_NEAR(fit.means[heavy][1].item<double>(), -1.0, 0.05);
  EXPECT_NEAR(fit.kappas[heavy][0].item<double>(), 4.0, 0.4);
  EXPECT_THROW(fm::fit_von_mises_mixture(x.slice(0, 0, 1), 2, 5, g), std::invalid_argument);
}

// The notebooks' source: its density integrates to one (with the windings that matter at a wide
// scale), it is the Gaussian's at the pole, and its samples have the moments the density gives.
TEST(Manifold, WrappedNormalDensityIsNormalisedAndMatchesItsSamples) {
  // Torus, σ = 1: midpoint rule on a 256² grid (periodic and smooth: exponentially accurate).
  auto torus = std::make_shared<fm::FlatTorus>(2);
  fm::WrappedNormal wt(torus, 1.0);
  const int64_t n = 256;
  at::Tensor g = (at::arange(n, at::kDouble) + 0.5) * (2 * M_PI / n) - M_PI;
  auto grid = at::meshgrid({g, g}, "ij");
  at::Tensor pts = at::stack({grid[0].reshape({-1}), grid[1].reshape({-1})}, 1);
  const double cell = (2 * M_PI / n) * (2 * M_PI / n);
  EXPECT_NEAR(wt.log_density(pts).exp().sum().item<double>() * cell, 1.0, 1e-10);
  // At the origin: (Σ_k N(2πk; 0, 1))², by hand.
  double one = 0;
  for (int k = -3; k <= 3; ++k) one += std::exp(-0.5 * std::pow(2 * M_PI * k, 2)) / std::sqrt(2 * M_PI);
  EXPECT_NEAR(wt.log_density(at::zeros({1, 2}, at::kDouble)).item<double>(), 2 * std::log(one), 1e-12);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t m = 200000;
  at::Tensor st = wt.sample(m, gen, at::kDouble);
  EXPECT_LE(st.abs().max().item<double>(), M_PI);
  // E[cos θ] = exp(−σ²/2) whatever the wrapping; |cos| <= 1, so 5/√m bounds five standard errors.
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(at::cos(st.select(1, i)).mean().item<double>(), std::exp(-0.5), 5 / std::sqrt(double(m)));

  // Sphere S²: p depends on the angle r from the north pole only; ∫ p 2π sin r dr = 1 by the midpoint
  // rule (p·sin r stays finite at the antipode, where p itself is infinite).
  auto sphere = std::make_shared<fm::Sphere>(2);
  for (double scale : {0.5, 1.5}) {
    fm::WrappedNormal ws(sphere, scale);
    const int64_t k = 200000;
    at::Tensor r = (at::arange(k, at::kDouble) + 0.5) * (M_PI / k);
    at::Tensor x = at::stack({at::sin(r), at::zeros_like(r), at::cos(r)}, 1);
    at::Tensor mass = ws.log_density(x).exp() * (2 * M_PI) * at::sin(r) * (M_PI / k);
    EXPECT_NEAR(mass.sum().item<double>(), 1.0, 1e-6) << "scale " << scale;
    // The mean height E[cos r] from the density, and from 200 000 samples (|cos r| <= 1).
    at::Tensor ss = ws.sample(m, gen, at::kDouble);
    EXPECT_LT(max_abs(ss.norm(2, 1) - 1), 1e-12);
    EXPECT_NEAR(ss.select(1, 2).mean().item<double>(), (mass * at::cos(r)).sum().item<double>(), 5 / std::sqrt(double(m)))
        << "scale " << scale;
  }
  fm::WrappedNormal notebook(sphere, fm::WrappedNormal::notebook_scale(*sphere));
  EXPECT_NEAR(notebook.log_density(at::tensor({0.0, 0.0, 1.0}, at::kDouble).reshape({1, 3})).item<double>(), std::log(2 / M_PI), 1e-12);
  EXPECT_THROW(fm::WrappedNormal(std::make_shared<fm::EuclideanSpace>(), 1.0), std::invalid_argument);
  EXPECT_THROW(fm::WrappedNormal(sphere, 0.0), std::invalid_argument);
}

namespace {
// A(κ) = E[μ·x] = coth κ − 1/κ and Var[μ·x] = A'(κ) = 1/κ² − 1/sinh² κ: the exponential family's
// mean and variance of its statistic μ·x on S² (κ >= 0.012 here: the cancellation costs below 1e-11).
double mean_height(double k) { return 1 / std::tanh(k) - 1 / k; }
double height_variance(double k) { return 1 / (k * k) - (k < 300 ? 1 / std::pow(std::sinh(k), 2) : 0.0); }

fm::VonMisesFisherMixture one_component(double kappa, at::Tensor mean) {
  return {at::ones({1}, at::kDouble), (mean / mean.norm()).reshape({1, 3}), at::full({1}, kappa, at::kDouble)};
}
}  // namespace

// The density integrates to one, is κ e^κ / (4π sinh κ) at its mean and 1/(4π) as κ → 0, and its
// sampler has the mean and variance of μ·x that the density gives, with a uniform angle around μ.
TEST(VonMisesFisherMixture, DensityIsNormalisedAndTheSamplerMatchesIt) {
  // With μ the pole, p depends on the height z only and the area element is 2π dz: the midpoint rule
  // on 200 000 heights (h = 1e-5) of ∫ e^(κz) falls short by (hκ)²/24 relative (1.7e-7 at κ = 200), the
  // next term 7(hκ)⁴/5760 is 2e-14.
  const int64_t n = 200000;
  at::Tensor z = (at::arange(n, at::kDouble) + 0.5) * (2.0 / n) - 1;
  at::Tensor on_meridian = at::stack({at::sqrt(1 - z.square()), at::zeros_like(z), z}, 1);
  for (double kappa : {1e-6, 0.5, 20.0, 200.0}) {
    auto v = one_component(kappa, at::tensor({0.0, 0.0, 1.0}, at::kDouble));
    const double mass = (v.log_density(on_meridian).exp() * (2 * M_PI * 2.0 / n)).sum().item<double>();
    EXPECT_NEAR(mass, 1.0 - std::pow(kappa * 2.0 / n, 2) / 24, 1e-10) << "kappa " << kappa;
  }
  at::Tensor mu = at::tensor({0.3, -0.8, 0.5}, at::kDouble);
  mu = mu / mu.norm();
  for (double kappa : {0.5, 20.0, 200.0, 1e4}) {
    const double at_mean = fm::VonMisesFisherMixture(one_component(kappa, mu)).log_density(mu.reshape({1, 3})).item<double>();
    // log(κ e^κ / (4π sinh κ)) = log κ − log 2π − log(1 − e^(−2κ)): sinh overflows past κ ≈ 710.
    EXPECT_NEAR(at_mean, std::log(kappa / (2 * M_PI)) - std::log1p(-std::exp(-2 * kappa)), 1e-10 * std::max(1.0, std::log(kappa))) << "kappa " << kappa;
  }
  // κ = 0, as a caller may set it without check(): the uniform density, not NaN.
  EXPECT_NEAR(one_component(0.0, mu).log_density(unit_rows(5, 1)).max().item<double>(), -std::log(4 * M_PI), 1e-8);
  EXPECT_NEAR(one_component(1e-9, mu).log_density(unit_rows(5, 1)).max().item<double>(), -std::log(4 * M_PI), 1e-8);

  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
  const int64_t m = 200000;
  for (double kappa : {0.05, 0.5, 5.0, 500.0}) {
    auto v = one_component(kappa, mu);
    at::Tensor x = v.sample(m, g, at::kDouble);
    EXPECT_LT(max_abs(x.norm(2, 1) - 1), 1e-12);
    at::Tensor h = at::matmul(x, mu);
    // Five standard errors of the mean height, and of its variance: the sample variance's standard
    // error is sqrt((m₄ − s⁴)/m), with m₄ the sample's fourth central moment.
    EXPECT_NEAR(h.mean().item<double>(), mean_height(kappa), 5 * std::sqrt(height_variance(kappa) / m)) << "kappa " << kappa;
    const double s2 = h.var().item<double>(), m4 = (h - h.mean()).pow(4).mean().item<double>();
    EXPECT_NEAR(s2, height_variance(kappa), 5 * std::sqrt((m4 - s2 * s2) / m)) << "kappa " << kappa;
    // Around μ no direction is preferred: the component along any unit vector perpendicular to μ has mean 0
    // and variance (1 − E[h²]) / 2.
    at::Tensor e = at::cross(mu, at::tensor({1.0, 0.0, 0.0}, at::kDouble), 0);
    e = e / e.norm();
    const double side_var = (1 - (height_variance(kappa) + std::pow(mean_height(kappa), 2))) / 2;
    EXPECT_NEAR(at::matmul(x, e).mean().item<double>(), 0.0, 5 * std::sqrt(side_var / m)) << "kappa " << kappa;
  }
  // Two components at opposite poles (κ = 50: each keeps all but e^-50 of its mass in its own
  // hemisphere) are drawn in proportion to their weights.
  fm::VonMisesFisherMixture two{at::tensor({0.2, 0.8}, at::kDouble), at::tensor({0.0, 0.0, 1.0, 0.0, 0.0, -1.0}, at::kDouble).reshape({2, 3}),
                                at::tensor({50.0, 50.0}, at::kDouble)};
  two.check();
  const double north = (two.sample(m, g, at::kDouble).select(1, 2) > 0).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(north, 0.2, 5 * std::sqrt(0.2 * 0.8 / m));
  at::Tensor xf = two.sample(10, g, at::kFloat);
  EXPECT_EQ(xf.scalar_type(), at::kFloat);
  // A's inverse: κ back from E[μ·x] to 1e-9 relative, over five decades.
  for (double kappa : {0.012, 0.05, 0.099, 0.101, 0.5, 3.0, 50.0, 1e4}) EXPECT_NEAR(fm::von_mises_fisher_kappa(mean_height(kappa)), kappa, 1e-9 * kappa);
  EXPECT_EQ(fm::von_mises_fisher_kappa(0.0), 0.0);
  EXPECT_THROW(fm::von_mises_fisher_kappa(1.0), std::invalid_argument);
  // The JSON form is exact, and malformed mixtures are named.
  const fm::VonMisesFisherMixture back = fm::VonMisesFisherMixture::from_json(two.to_json());
  EXPECT_TRUE(at::equal(back.weights, two.weights) && at::equal(back.means, two.means) && at::equal(back.kappas, two.kappas));
  nlohmann::json bad = two.to_json();
  bad["means"][1] = {0.0, 0.0, -2.0};
  try {
    fm::VonMisesFisherMixture::from_json(bad);
    ADD_FAILURE() << "a mean off the sphere accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("a mean is not a unit vector"), std::string::npos) << e.what();
  }
  bad = two.to_json();
  bad.erase("kappas");
  EXPECT_THROW(fm::VonMisesFisherMixture::from_json(bad), std::invalid_argument);
  bad = two.to_json();
  bad["weights"] = {0.5, 0.6};
  EXPECT_THROW(fm::VonMisesFisherMixture::from_json(bad), std::invalid_argument);
}

// EM finds three well-separated components of a known mixture: weights, means and concentrations
// within a few standard errors of 30 000 draws, and the truth's likelihood.
TEST(VonMisesFisherMixture, EMRecoversThreeComponentsAndTheirLikelihood) {
  fm::VonMisesFisherMixture truth{at::tensor({0.2, 0.3, 0.5}, at::kDouble),
                                  at::tensor({1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0}, at::kDouble).reshape({3, 3}),
                                  at::tensor({20.0, 50.0, 200.0}, at::kDouble)};
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(17);
  at::Tensor x = truth.sample(30000, g, at::kDouble);
  const fm::VonMisesFisherMixture fit = fm::fit_von_mises_fisher_mixture(x, 3, 100, g);
  fit.check();
  const double nll_fit = -fit.log_density(x).mean().item<double>(), nll_truth = -truth.log_density(x).mean().item<double>();
  // The fit maximises the sample's likelihood: at least the truth's, and not by more than the
  // few nats per parameter (11 here: 2 weights, 3 means of 2 angles each, 3 κ) over 30 000 points that chance allows.
  EXPECT_LE(nll_fit, nll_truth + 1e-9);
  EXPECT_GT(nll_fit, nll_truth - 1e-3);
  for (int64_t k = 0; k < 3; ++k) {
    const int64_t j = at::matmul(fit.means, truth.means[k]).argmax().item<int64_t>();
    const double w = truth.weights[k].item<double>(), kappa = truth.kappas[k].item<double>(), count = 30000 * w;
    EXPECT_NEAR(fit.weights[j].item<double>(), w, 5 * std::sqrt(w * (1 - w) / 30000)) << k;
    // The mean direction's error is about 1/sqrt(κ n) radians per axis; κ's relative error about 1/sqrt(n).
    EXPECT_LT(std::acos(std::min(1.0, at::dot(fit.means[j], truth.means[k]).item<double>())), 5 / std::sqrt(kappa * count)) << k;
    EXPECT_NEAR(fit.kappas[j].item<double>(), kappa, 5 * kappa / std::sqrt(count)) << k;
  }
  // κ is capped: a component on one repeated point stays finite.
  at::Tensor same = at::tensor({0.0, 0.0, 1.0}, at::kDouble).reshape({1, 3}).expand({50, 3}).contiguous();
  EXPECT_EQ(fm::fit_von_mises_fisher_mixture(same, 1, 5, g, 1e3).kappas.item<double>(), 1e3);
  // Points that cancel (x and −x): the resultant is 0, so is the maximum-likelihood κ (the 1e-8 floor),
  // and the density is uniform.
  at::Tensor opposite = at::cat({same, -same});
  const fm::VonMisesFisherMixture flat = fm::fit_von_mises_fisher_mixture(opposite, 1, 5, g);
  EXPECT_LE(flat.kappas.item<double>(), 1e-8);
  EXPECT_NEAR(-flat.log_density(opposite).mean().item<double>(), std::log(4 * M_PI), 1e-8);
  EXPECT_THROW(fm::fit_von_mises_fisher_mixture(x.slice(0, 0, 2), 3, 5, g), std::invalid_argument);
  EXPECT_THROW(fm::fit_von_mises_fisher_mixture(x.narrow(1, 0, 2), 1, 5, g), std::invalid_argument);
}
