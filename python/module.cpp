// The `flowmatch` Python module: the C++ library's couplings, transport, paths, solvers and
// likelihoods on torch tensors. Velocity fields are any Python callable v(x, t) -> tensor (a
// torch.nn.Module, a TorchScript module, a lambda), called with t of shape (B) like the CLI's models.
// Import torch first (the module uses PyTorch's tensor conversions).

#include "python_common.h"

#include "flowmatch/assignment.h"
#include "flowmatch/autoregressive.h"
#include "flowmatch/coupling.h"
#include "flowmatch/discrete_path.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/manifold.h"
#include "flowmatch/metrics.h"
#include "flowmatch/run.h"
#include "flowmatch/paths.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/solvers.h"
#include "flowmatch/transport.h"
#include "flowmatch/von_mises_fisher_mixture.h"
#include "flowmatch/wrapped_normal.h"

#include <ATen/CPUGeneratorImpl.h>

namespace {

using fmpy::from_json;
using fmpy::ManifoldPtr;
using fmpy::python_field;
using fmpy::to_json;


fm::SolverOptions solver_options(const std::string& method, int64_t steps, double t0, double t1, double atol,
                                 double rtol, const std::vector<double>& output_times, const ManifoldPtr& manifold = nullptr) {
  return fm::SolverOptions()
      .manifold(manifold)
      .method(fm::solver_method_from_string(method))
      .steps(steps)
      .t0(t0)
      .t1(t1)
      .atol(atol)
      .rtol(rtol)
      .output_times(output_times);
}

c10::Device device_from(const std::string& name) {
  if (name != "cpu" && name != "cuda") throw std::invalid_argument("device must be 'cpu' or 'cuda', got '" + name + "'");
  return c10::Device(name);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "flowmatch: flow matching in C++ (LibTorch) - couplings, optimal transport, paths, ODE solvers, likelihoods";
  py::module_::import("torch");

  m.def(
      "exact_ot",
      [](const at::Tensor& x0, const at::Tensor& x1) {
        auto pairs = fm::ExactOTCoupling().pair(x0, x1);
        return py::make_tuple(pairs.x0, pairs.x1);
      },
      py::arg("x0"), py::arg("x1"),
      "Exact minibatch OT (squared Euclidean): returns (x0, x1 reordered); equal sizes pair without replacement.");
  m.def(
      "assignment",
      [](const at::Tensor& cost) {
        auto a = fm::solve_assignment(cost);
        return py::make_tuple(torch::tensor(a.column_of_row, at::kLong), a.total_cost);
      },
      py::arg("cost"), "Exact linear assignment of a (n, m) cost, n <= m: (column of each row, total cost).");
  m.def(
      "exact_transport",
      [](const at::Tensor& cost) {
        auto plan = fm::exact_transport(cost);
        return py::make_tuple(plan.plan, plan.cost);
      },
      py::arg("cost"), "Exact OT plan between uniform measures (any sizes): (plan (n, m), cost).");
  m.def(
      "sinkhorn",
      [](const at::Tensor& cost, double reg, int64_t max_iterations, double tolerance, bool epsilon_scaling) {
        auto plan = fm::sinkhorn(cost, fm::SinkhornOptions()
                                           .reg(reg)
                                           .max_iterations(max_iterations)
                                           .tolerance(tolerance)
                                           .epsilon_scaling(epsilon_scaling));
        py::dict info;
        info["cost"] = plan.cost;
        info["iterations"] = plan.iterations;
        info["marginal_error"] = plan.marginal_error;
        info["converged"] = plan.converged;
        return py::make_tuple(plan.plan, info);
      },
      py::arg("cost"), py::arg("reg") = 0.05, py::arg("max_iterations") = 2000, py::arg("tolerance") = 1e-6,
      py::arg("epsilon_scaling") = true, "Entropic OT plan (stabilized log-domain Sinkhorn): (plan, info dict).");
  m.def("wasserstein2", &fm::metrics::wasserstein2, py::arg("a"), py::arg("b"),
        "Exact W2 between two point sets (n, D) and (m, D), uniform weights, float64.");
  m.def("scheduler_names", &fm::scheduler_names, "Schedulers accepted by path_sample.");
  m.def(
      "path_sample",
      [](const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t, const std::string& scheduler, double sigma,
         const std::string& noise) {
        // sigma > 0 means noise: constant (I-CFM) unless another kind is named.
        const std::string kind = noise.empty() ? (sigma > 0 ? "constant" : "none") : noise;
        fm::AffinePath path(fm::make_scheduler(scheduler),
                            fm::AffinePathOptions().noise(fm::interpolant_noise_from_string(kind)).noise_scale(sigma));
        auto s = path.sample(x0, x1, t);
        return py::make_tuple(s.x_t, s.velocity);
      },
      py::arg("x0"), py::arg("x1"), py::arg("t"), py::arg("scheduler") = "condot", py::arg("sigma") = 0.0, py::arg("noise") = "",
      "A point on the conditional path and its velocity: (x_t, u_t) = (alpha_t x1 + sigma_t x0 + gamma_t eps, ...);\n"
      "noise: 'constant' (gamma_t = sigma, I-CFM; the default when sigma > 0), 'brownian-bridge' (sigma sqrt(t(1-t))) or 'none'.");
  m.def(
      "solve_ode",
      [](const py::object& velocity, const at::Tensor& x0, const std::string& method, int64_t steps, double t0, double t1,
         double atol, double rtol, const std::vector<double>& output_times, const ManifoldPtr& manifold) {
        auto field = python_field(velocity);
        const auto options = solver_options(method, steps, t0, t1, atol, rtol, output_times, manifold);
        fm::SolveResult r;
        {
          py::gil_scoped_release release;
          r = fm::solve_ode(field, x0, options);
        }
        py::dict info;
        info["nfe"] = r.nfe;
        info["steps"] = r.steps;
        info["rejected_steps"] = r.rejected_steps;
        info["times"] = r.times;
        info["trajectory"] = r.trajectory;
        return py::make_tuple(r.x, info);
      },
      py::arg("velocity"), py::arg("x0"), py::arg("method") = "euler", py::arg("steps") = 100, py::arg("t0") = 0.0,
      py::arg("t1") = 1.0, py::arg("atol") = 1e-5, py::arg("rtol") = 1e-5,
      py::arg("output_times") = std::vector<double>{}, py::arg("manifold") = nullptr,
      "Integrates dx/dt = velocity(x, t): (x at t1, info with the exact NFE and the states at output_times).\n"
      "With a manifold, velocities are made tangent and every step ends on it.");
  m.def(
      "log_likelihood",
      [](const py::object& velocity, const at::Tensor& x1, const std::string& method, int64_t steps, double atol, double rtol,
         const std::string& divergence, int64_t probes, double source_scale, const ManifoldPtr& manifold,
         const py::object& source_log_density) {
        if (divergence != "exact" && divergence != "hutchinson") {
          throw std::invalid_argument("divergence must be 'exact' or 'hutchinson', got '" + divergence + "'");
        }
        auto options = fm::LikelihoodOptions()
                           .solver(solver_options(method, steps, 0.0, 1.0, atol, rtol, {}, manifold))
                           .divergence(divergence == "exact" ? fm::DivergenceMethod::Exact : fm::DivergenceMethod::Hutchinson)
                           .probes(probes)
                           .source_scale(source_scale);
        if (!source_log_density.is_none()) {
          auto density = python_field(source_log_density);  // called as density(x, t): t is ignored
          options.source_log_density([density](const at::Tensor& x) { return density(x, at::zeros({x.size(0)}, x.options())); });
        }
        auto field = python_field(velocity);
        fm::LikelihoodResult r;
        {
          py::gil_scoped_release release;
          r = fm::log_likelihood(field, x1, options);
        }
        return py::make_tuple(r.log_prob, r.nfe);
      },
      py::arg("velocity"), py::arg("x1"), py::arg("method") = "dopri5", py::arg("steps") = 100, py::arg("atol") = 1e-5,
      py::arg("rtol") = 1e-5, py::arg("divergence") = "exact", py::arg("probes") = 1, py::arg("source_scale") = 1.0,
      py::arg("manifold") = nullptr, py::arg("source_log_density") = py::none(),
      "log p1(x1) of the flow by the continuity equation: (log_prob (B), nfe). The source is N(0, s^2 I), or\n"
      "with a manifold its uniform distribution; source_log_density(x, t) overrides either.");

  // ---------------------------------------------------------------- manifolds
  py::class_<fm::Manifold, ManifoldPtr>(m, "Manifold",
                                        "A space a flow lives on (the library's flowmatch::Manifold): points are rows of (B, coordinates)")
      .def(py::init([](const py::object& spec, int64_t dim) {
             if (py::isinstance<py::str>(spec)) return fm::make_manifold(nlohmann::json{{"type", spec.cast<std::string>()}, {"dim", dim}});
             return fm::make_manifold(to_json(spec));
           }),
           py::arg("spec"), py::arg("dim") = 2,
           "Manifold('sphere', dim=2) (S^d as unit vectors in R^(d+1)), Manifold('torus', dim=2) (angles in [-pi, pi)),\n"
           "or a spec dict such as {'type': 'product', 'factors': [{'type': 'sphere', 'dim': 2}, {'type': 'torus', 'dim': 1}]}.")
      .def_property_readonly("name", &fm::Manifold::name)
      .def_property_readonly("spec", [](const fm::Manifold& mf) { return from_json(mf.spec()); })
      .def_property_readonly("dimension", &fm::Manifold::dimension)
      .def_property_readonly("coordinates", &fm::Manifold::coordinates)
      .def_property_readonly("log_volume", &fm::Manifold::log_volume)
      .def("project", &fm::Manifold::project, py::arg("x"), "The nearest point of the manifold to each row.")
      .def("project_tangent", &fm::Manifold::project_tangent, py::arg("x"), py::arg("v"), "v made tangent at x.")
      .def("expmap", &fm::Manifold::expmap, py::arg("x"), py::arg("v"))
      .def("logmap", &fm::Manifold::logmap, py::arg("x"), py::arg("y"))
      .def("distance", &fm::Manifold::distance, py::arg("x"), py::arg("y"), "Geodesic distance per row.")
      .def("pairwise_distance", &fm::Manifold::pairwise_distance, py::arg("x"), py::arg("y"), "(n, m) geodesic distances.")
      .def("distance_from_manifold", &fm::Manifold::distance_from_manifold, py::arg("x"))
      .def(
          "sample_uniform",
          [](const fm::Manifold& mf, int64_t n, uint64_t seed) {
            at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
            return mf.sample_uniform(n, g, at::TensorOptions().dtype(at::kFloat));
          },
          py::arg("n"), py::arg("seed") = 0, "n points of the uniform distribution (float32).")
      .def(
          "sample_wrapped_normal",
          [](const ManifoldPtr& mf, int64_t n, double scale, uint64_t seed) {
            at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
            return fm::WrappedNormal(mf, scale == 0 ? fm::WrappedNormal::notebook_scale(*mf) : scale)
                .sample(n, g, at::TensorOptions().dtype(at::kFloat));
          },
          py::arg("n"), py::arg("scale") = 0.0, py::arg("seed") = 0,
          "n points of the wrapped normal at the origin (torus) or north pole (sphere); scale 0: the notebooks' (1; 1/2).")
      .def(
          "wrapped_normal_log_density",
          [](const ManifoldPtr& mf, const at::Tensor& x, double scale) {
            return fm::WrappedNormal(mf, scale == 0 ? fm::WrappedNormal::notebook_scale(*mf) : scale).log_density(x);
          },
          py::arg("x"), py::arg("scale") = 0.0, "Its exact log-density per row against the volume measure.")
      .def("__repr__", [](const fm::Manifold& mf) { return "flowmatch.Manifold(" + mf.spec().dump() + ")"; });
  py::class_<fm::VonMisesFisherMixture>(m, "VonMisesFisherMixture",
                                        "A mixture of von Mises-Fisher distributions on the sphere S^2 (the library's\n"
                                        "flowmatch::VonMisesFisherMixture; the source of --source vmf-mixture:K)")
      .def(py::init([](const at::Tensor& weights, const at::Tensor& means, const at::Tensor& kappas) {
             fm::VonMisesFisherMixture v{weights.to(at::kDouble), means.to(at::kDouble), kappas.to(at::kDouble)};
             v.check();
             return v;
           }),
           py::arg("weights"), py::arg("means"), py::arg("kappas"), "weights (K) summing to 1, unit means (K, 3), concentrations (K) > 0.")
      .def_static(
          "fit",
          [](const at::Tensor& x, int64_t components, int64_t iterations, uint64_t seed, double max_kappa) {
            at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
            py::gil_scoped_release release;
            return fm::fit_von_mises_fisher_mixture(x, components, iterations, g, max_kappa);
          },
          py::arg("x"), py::arg("components"), py::arg("iterations") = 200, py::arg("seed") = 0, py::arg("max_kappa") = 1e4,
          "EM on unit vectors (N, 3) from k-means++ starts; each kappa the exact maximum-likelihood one, capped at max_kappa.")
      .def_readonly("weights", &fm::VonMisesFisherMixture::weights)
      .def_readonly("means", &fm::VonMisesFisherMixture::means)
      .def_readonly("kappas", &fm::VonMisesFisherMixture::kappas)
      .def("log_density", &fm::VonMisesFisherMixture::log_density, py::arg("x"), "log p per row against the area measure (float64).")
      .def(
          "sample",
          [](const fm::VonMisesFisherMixture& v, int64_t n, uint64_t seed) {
            at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
            return v.sample(n, g, at::TensorOptions().dtype(at::kDouble));
          },
          py::arg("n"), py::arg("seed") = 0, "n exact draws (float64).")
      .def("to_dict", [](const fm::VonMisesFisherMixture& v) { return from_json(v.to_json()); },
           "{'weights', 'means', 'kappas'} as in a run's config.json (data.source_mixture).")
      .def_static("from_dict", [](const py::object& d) { return fm::VonMisesFisherMixture::from_json(to_json(d)); }, py::arg("d"),
                  "From to_dict's form or a run's config.json['data']['source_mixture'].");
  m.def(
      "geodesic_path_sample",
      [](const ManifoldPtr& manifold, const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t, const std::string& scheduler) {
        fm::GeodesicPath path(manifold, fm::make_scheduler(scheduler));
        auto s = path.sample(x0, x1, t);
        return py::make_tuple(s.x_t, s.velocity);
      },
      py::arg("manifold"), py::arg("x0"), py::arg("x1"), py::arg("t"), py::arg("scheduler") = "condot",
      "Riemannian flow matching's geodesic path: (x_t, u_t) with x_t = exp_x0(kappa_t log_x0(x1)), kappa_t the\n"
      "scheduler's alpha_t (condot: t).");

  // ---------------------------------------------------------------- discrete flow matching
  py::class_<fm::MixtureDiscretePath, std::shared_ptr<fm::MixtureDiscretePath>>(
      m, "MixtureDiscretePath", "Discrete flow matching's mixture path over tokens (the library's flowmatch::MixtureDiscretePath)")
      .def(py::init([](const std::string& kappa, const std::string& source, int64_t vocabulary) {
             return std::make_shared<fm::MixtureDiscretePath>(fm::make_kappa_scheduler(kappa), fm::discrete_source_from_string(source),
                                                              vocabulary);
           }),
           py::arg("kappa") = "poly:2", py::arg("source") = "uniform", py::arg("vocabulary") = 2,
           "kappa: 'linear' or 'poly:n'; source: 'uniform' or 'mask' (the extra id vocabulary).")
      .def_property_readonly("spec", [](const fm::MixtureDiscretePath& p) { return from_json(p.spec()); })
      .def_property_readonly("vocabulary", &fm::MixtureDiscretePath::vocabulary)
      .def_property_readonly("input_vocabulary", &fm::MixtureDiscretePath::input_vocabulary)
      .def_property_readonly("mask_token", &fm::MixtureDiscretePath::mask_token)
      .def(
          "sample",
          [](const fm::MixtureDiscretePath& p, const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t, uint64_t seed) {
            at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
            return p.sample(x0, x1, t, g).x_t;
          },
          py::arg("x0"), py::arg("x1"), py::arg("t"), py::arg("seed") = 0, "x_t: each token of x1 kept with probability kappa_t, else x0's.")
      .def("kappa", [](const fm::MixtureDiscretePath& p, const at::Tensor& t) { auto k = p.kappa_at(t); return py::make_tuple(k.first, k.second); },
           py::arg("t"), "(kappa_t, d kappa_t / dt), float64.")
      .def("kappa_inverse", &fm::MixtureDiscretePath::kappa_inverse, py::arg("k"))
      .def(
          "sample_source",
          [](const fm::MixtureDiscretePath& p, int64_t n, int64_t length, uint64_t seed) {
            at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
            return p.sample_source(n, length, g);
          },
          py::arg("n"), py::arg("length"), py::arg("seed") = 0);
  m.def("generalized_kl", &fm::generalized_kl, py::arg("logits"), py::arg("x1"), py::arg("x_t"), py::arg("t"), py::arg("path"),
        "The mixture path's generalized KL per token (B, L) for posterior logits (B, L, V).");
  m.def(
      "negative_elbo",
      [](const py::object& posterior, const at::Tensor& x1, const fm::MixtureDiscretePath& path, int64_t time_points, double epsilon,
         uint64_t seed) {
        auto field = python_field(posterior);
        at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
        py::gil_scoped_release release;
        return fm::discrete_negative_elbo(field, x1, path, fm::DiscreteELBOOptions().time_points(time_points).epsilon(epsilon), g);
      },
      py::arg("posterior"), py::arg("x1"), py::arg("path"), py::arg("time_points") = 64, py::arg("epsilon") = 1e-3, py::arg("seed") = 0,
      "-ELBO per sequence (nats) of tokens x1 (B, L) under posterior(x_t, t) -> logits (B, L, V).");
  m.def(
      "sample_ctmc",
      [](const py::object& posterior, const at::Tensor& x0, const std::shared_ptr<fm::MixtureDiscretePath>& path, int64_t steps,
         const py::object& corrector, bool float64, uint64_t seed) {
        auto field = python_field(posterior);
        at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
        auto options = fm::SolverOptions().steps(steps).path(path).generator(g).categorical_float64(float64);
        if (!corrector.is_none()) {
          if (PyCallable_Check(corrector.ptr())) {
            PyObject* fn = corrector.ptr();
            options.corrector([fn](double t) {
              py::gil_scoped_acquire gil;
              return py::reinterpret_borrow<py::object>(fn)(t).cast<double>();
            });
          } else if (py::isinstance<py::str>(corrector)) {
            options.corrector(fm::corrector_schedule(corrector.cast<std::string>()));
          } else {
            const double c = corrector.cast<double>();
            options.corrector([c](double) { return c; });
          }
        }
        fm::SolveResult r;
        {
          py::gil_scoped_release release;
          r = fm::solve("ctmc-euler", field, x0, options);
        }
        py::dict info;
        info["nfe"] = r.nfe;
        info["steps"] = r.steps;
        return py::make_tuple(r.x, info);
      },
      py::arg("posterior"), py::arg("x0"), py::arg("path"), py::arg("steps") = 64, py::arg("corrector") = py::none(),
      py::arg("float64") = false, py::arg("seed") = 0,
      "CTMC Euler sampling of tokens from source tokens x0 (B, L): (x1, info with the NFE). corrector: a number, c(t), or "
      "'A:a:b' for c(t) = A t^a (1 - t)^b.");
  m.def(
      "autoregressive_nll",
      [](const py::object& model, const at::Tensor& x) {
        auto field = python_field(model);
        py::gil_scoped_release release;
        return fm::autoregressive_negative_log_likelihood(field, x);
      },
      py::arg("model"), py::arg("x"),
      "-log p(x) per sequence (float64 nats) of tokens x (B, L) under a causal model(x, t) -> logits (B, L, V) of p(x_i | x_<i).");
  m.def(
      "sample_autoregressive",
      [](const py::object& model, int64_t n, int64_t length, bool float64, uint64_t seed, const std::string& device) {
        auto field = python_field(model);
        at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
        fm::SolveResult r;
        {
          py::gil_scoped_release release;
          r = fm::solve("autoregressive", field, at::zeros({n, length}, at::TensorOptions().dtype(at::kLong).device(c10::Device(device))),
                        fm::SolverOptions().generator(g).categorical_float64(float64));
        }
        py::dict info;
        info["nfe"] = r.nfe;
        return py::make_tuple(r.x, info);
      },
      py::arg("model"), py::arg("n"), py::arg("length"), py::arg("float64") = false, py::arg("seed") = 0, py::arg("device") = "cpu",
      "Draws n sequences of `length` tokens left to right from a causal model: (x (n, length) int64 on `device`, where the model is called, info with the NFE = length).");

  // ---------------------------------------------------------------- runs: the same API as the CLI
  py::class_<fm::Run>(m, "Run", "A run folder: config.json, checkpoints, metrics (the library's flowmatch::Run)")
      .def_static("open", &fm::Run::open, py::arg("dir"), "Opens a run folder written by flowmatch.train or 'flowmatch train'.")
      .def_property_readonly("dir", &fm::Run::dir)
      .def_property_readonly("config", [](const fm::Run& run) { return from_json(run.config()); })
      .def_property_readonly("domain", [](const fm::Run& run) { return run.domain()->name(); })
      .def("latest_checkpoint", &fm::Run::latest_checkpoint)
      .def("best_checkpoint", &fm::Run::best_checkpoint,
           "checkpoints/best.ckpt: the lowest validation NLL of a run trained with validate='nll' (checkpoint='best' picks it)")
      .def(
          "sample",
          [](const fm::Run& run, int64_t n, const std::string& solver, int64_t steps, uint64_t seed, double atol, double rtol,
             const std::string& scheduler, double sde_noise, const std::string& which_class, double guidance,
             const std::string& checkpoint, const std::string& device) {
            fm::SampleOptions o;
            o.n = n;
            o.solver = solver;
            o.steps = steps;
            o.seed = seed;
            o.atol = atol;
            o.rtol = rtol;
            o.scheduler = scheduler;
            o.noise_scale = sde_noise;
            o.which_class = which_class;
            o.guidance = guidance;
            o.checkpoint = checkpoint;
            o.device = device_from(device);
            fm::SampleResult r;
            {
              py::gil_scoped_release release;
              r = run.sample(o);
            }
            return py::make_tuple(r.x, from_json(r.info));
          },
          py::arg("n") = 0, py::arg("solver") = "", py::arg("steps") = 0, py::arg("seed") = 0, py::arg("atol") = 1e-5,
          py::arg("rtol") = 1e-5, py::arg("scheduler") = "", py::arg("sde_noise") = 1.0, py::arg("class_") = "all",
          py::arg("guidance") = 0.0, py::arg("checkpoint") = "", py::arg("device") = "cpu",
          "Samples as 'flowmatch sample' draws them (same seed, same samples): (x (n, D) float32, info dict with the NFE).\n"
          "Unset n/solver/steps take the data's defaults (points: 10000, euler, 100).")
      .def(
          "evaluate",
          [](const fm::Run& run, int64_t n, uint64_t seed, bool solver_sweep, const std::string& out, const std::string& device) {
            fm::EvaluationOptions o;
            o.n = n;
            o.seed = seed;
            o.solver_sweep = solver_sweep;
            o.device = device_from(device);
            nlohmann::json metrics;
            {
              py::gil_scoped_release release;
              metrics = run.evaluate(o, out);
            }
            return from_json(metrics);
          },
          py::arg("n") = 2000, py::arg("seed") = 0, py::arg("solver_sweep") = false, py::arg("out") = "", py::arg("device") = "cpu",
          "The data domain's evaluation (points: W2 at 1..100 Euler steps, MMD, straightness): a dict, also written to metrics.json.")
      .def(
          "log_likelihood",
          [](const fm::Run& run, const py::object& points, const std::string& split, int64_t n, const std::string& solver,
             int64_t steps, double atol, double rtol, const std::string& error_norm, uint64_t seed, const std::string& checkpoint) {
            fm::LikelihoodRequest q;
            q.checkpoint = checkpoint;
            if (!points.is_none()) q.points = points.cast<at::Tensor>();
            q.split = split;
            q.n = n;
            q.solver = solver;
            q.steps = steps;
            q.atol = atol;
            q.rtol = rtol;
            q.error_norm = error_norm;
            q.seed = seed;
            q.grid = 0;
            fm::LikelihoodSummary s;
            {
              py::gil_scoped_release release;
              s = run.likelihood(q);
            }
            return py::make_tuple(s.log_prob, from_json(s.result));
          },
          py::arg("points") = py::none(), py::arg("split") = "test", py::arg("n") = 2000, py::arg("solver") = "dopri5",
          py::arg("steps") = 100, py::arg("atol") = 1e-5, py::arg("rtol") = 1e-5, py::arg("error_norm") = "sample", py::arg("seed") = 0,
          py::arg("checkpoint") = "",
          "Per-point log p (float64) and the summary dict ('flowmatch likelihood'): of `points`, or (None) of the first n\n"
          "rows of the run's own test or validation split (split='test' or 'validation'). error_norm: dopri5's 'sample' or 'batch'.\n"
          "checkpoint: a file, 'best' (validate='nll' runs), or '' for the newest.");
  m.def(
      "train",
      [](const py::object& config, const std::string& out, bool resume, const std::string& device) {
        const nlohmann::json settings = config.is_none() ? nlohmann::json::object() : to_json(config);
        fm::Run run = fm::Run::prepare(out, settings, resume);
        fm::TrainRunOptions how;
        how.device = device_from(device);
        {
          py::gil_scoped_release release;
          run.train(how);
        }
        return fm::Run::open(out);
      },
      py::arg("config") = py::none(), py::arg("out") = "runs/python", py::arg("resume") = false, py::arg("device") = "cpu",
      "Trains a run from settings named as the 'flowmatch train' flags ({'steps': 2000, 'coupling': 'exact-ot', ...};\n"
      "dashes or underscores) into the folder `out`; returns the Run.");
  m.def("solver_names", []() { return fm::solver_names(); }, "Registered solvers.");
  m.def("model_names", &fm::models::model_names, "Registered network types.");
  m.def("domain_names", &fm::domain_names, "Registered data domains.");
  m.def(
      "run_settings",
      []() {
        py::list out;
        for (const auto& s : fm::run_settings()) {
          py::dict d;
          d["name"] = s.name;
          d["kind"] = s.kind;
          d["default"] = from_json(s.default_value);
          d["help"] = s.help;
          out.append(d);
        }
        return out;
      },
      "The settings flowmatch.train takes (the 'flowmatch train' flags).");

  fmpy::bind_nouns(m);
}
