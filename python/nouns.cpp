// The nouns a user of Meta's flow_matching works with, over flowmatch's C++ implementations:
// scheduler objects (α_t, σ_t, derivatives, SNR inverse), affine path objects (sample and the
// conversions between prediction targets), the schedule transform of a trained field, and an ODE
// solver object with `sample` and `compute_likelihood`. Names and signatures follow flow_matching
// (flow_matching.path, flow_matching.solver) where it has the same thing.

#include "python_common.h"

#include <cmath>

#include "flowmatch/likelihood.h"
#include "flowmatch/paths.h"
#include "flowmatch/prediction.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/solvers.h"

namespace fmpy {

namespace {

using SchedulerPtr = std::shared_ptr<fm::Scheduler>;
using PathPtr = std::shared_ptr<fm::AffinePath>;

// A time grid given as a list, tuple or tensor.
std::vector<double> to_grid(const py::object& grid, const char* who) {
  std::vector<double> out;
  if (THPVariable_Check(grid.ptr())) {
    at::Tensor t = THPVariable_Unpack(grid.ptr()).detach().to(at::kCPU, at::kDouble).contiguous().reshape({-1});
    out.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  } else {
    out = grid.cast<std::vector<double>>();
  }
  if (out.size() < 2) throw std::invalid_argument(std::string(who) + ": time_grid needs at least 2 times, got " + std::to_string(out.size()));
  return out;
}

// torchdiffeq's fixed grid for a step size: start + k·h while inside, then the end exactly.
std::vector<double> grid_from_step_size(double start, double end, double step_size) {
  if (!(step_size > 0) || !std::isfinite(step_size)) {
    throw std::invalid_argument("step_size must be a positive number, got " + std::to_string(step_size));
  }
  const double span = std::fabs(end - start), direction = end >= start ? 1.0 : -1.0;
  const auto n = static_cast<int64_t>(std::ceil(span / step_size - 1e-12));
  if (n > 10'000'000) throw std::invalid_argument("step_size " + std::to_string(step_size) + " gives more than 10^7 steps");
  std::vector<double> grid;
  for (int64_t k = 0; k < n; ++k) grid.push_back(start + direction * static_cast<double>(k) * step_size);
  grid.push_back(end);
  return grid;
}

const fm::Scheduler& scheduler_of(const fm::AffinePath& path, const char* who) {
  if (path.has_interpolant_noise()) {
    throw std::invalid_argument(std::string(who) + ": this path adds interpolant noise, so x_t is not alpha_t x_1 + sigma_t x_0 "
                                "and the prediction targets do not convert");
  }
  return *path.scheduler();
}

at::Tensor convert(const fm::AffinePath& path, const at::Tensor& value, fm::PredictionTarget from, fm::PredictionTarget to,
                   const at::Tensor& x_t, const at::Tensor& t, const char* who) {
  return fm::convert_prediction(value, from, to, x_t, t, scheduler_of(path, who));
}

// flow_matching's ScheduleTransformedModel: a field trained with one scheduler, sampled with another.
struct ScheduleTransformedModel {
  py::object model;
  SchedulerPtr original, wanted;
};

struct ODESolver {
  py::object model;
  ManifoldPtr manifold;

  // The solver's options for `grid` (flow_matching's time_grid); `grid_steps` tells whether the grid's own
  // points are the steps (a fixed-step method without step_size), so the trajectory holds every grid time.
  fm::SolverOptions options(const std::string& method, const std::vector<double>& grid, const py::object& step_size,
                            double atol, double rtol, bool intermediates, bool& grid_steps) const {
    auto o = fm::SolverOptions().manifold(manifold).method(fm::solver_method_from_string(method)).atol(atol).rtol(rtol);
    const bool adaptive = o.method() == fm::SolverMethod::Dopri5;
    if (adaptive && !step_size.is_none()) throw std::invalid_argument("step_size is for fixed-step methods; dopri5 takes atol and rtol");
    grid_steps = !adaptive && step_size.is_none();
    if (grid_steps) {
      o.time_grid(grid).record_trajectory(intermediates);
    } else {
      if (adaptive) {
        o.t0(grid.front()).t1(grid.back());
      } else {
        o.time_grid(grid_from_step_size(grid.front(), grid.back(), step_size.cast<double>()));
      }
      if (intermediates && grid.size() > 2) o.output_times(std::vector<double>(grid.begin() + 1, grid.end() - 1));
    }
    return o;
  }
};

}  // namespace

void bind_nouns(py::module_& m) {
  // ---------------------------------------------------------------- schedulers
  py::class_<fm::SchedulerValues>(m, "SchedulerOutput", "alpha_t, sigma_t and their time derivatives (flow_matching's SchedulerOutput)")
      .def_readonly("alpha_t", &fm::SchedulerValues::alpha)
      .def_readonly("sigma_t", &fm::SchedulerValues::sigma)
      .def_readonly("d_alpha_t", &fm::SchedulerValues::d_alpha)
      .def_readonly("d_sigma_t", &fm::SchedulerValues::d_sigma)
      .def("__repr__", [](const fm::SchedulerValues& v) { return "SchedulerOutput(alpha_t, sigma_t, d_alpha_t, d_sigma_t) of shape " + c10::str(v.alpha.sizes()); });

  py::class_<fm::Scheduler, SchedulerPtr>(
      m, "Scheduler",
      "The scheduler of an affine path x_t = alpha_t x_1 + sigma_t x_0 (t = 0 noise, t = 1 data). Scheduler(spec) builds any\n"
      "from its name or spec dict (flowmatch.scheduler_names()); the subclasses below take their parameters.")
      .def(py::init([](const py::object& spec) { return fm::make_scheduler(to_json(spec)); }), py::arg("spec"))
      .def("__call__", [](const fm::Scheduler& s, const at::Tensor& t) { return s(t); }, py::arg("t"),
           "alpha_t, sigma_t, d_alpha_t, d_sigma_t at times t (any shape), in closed form.")
      .def("snr_inverse", &fm::Scheduler::time_at_snr, py::arg("snr"),
           "The time t at which alpha_t / sigma_t equals snr (>= 0, may be inf); outside the scheduler's range, the nearer end.")
      .def_property_readonly("spec", [](const fm::Scheduler& s) { return from_json(s.spec()); }, "The parameters, as a dict.")
      .def_property_readonly("name", &fm::Scheduler::name)
      .def("__repr__", [](const fm::Scheduler& s) { return "flowmatch.Scheduler(" + s.spec().dump() + ")"; });
  py::class_<fm::CondOTScheduler, fm::Scheduler, std::shared_ptr<fm::CondOTScheduler>>(
      m, "CondOTScheduler", "alpha = t, sigma = 1 - (1 - sigma_min) t (the straight line for sigma_min = 0).")
      .def(py::init([](double sigma_min) { return std::make_shared<fm::CondOTScheduler>(fm::CondOTSchedulerOptions().sigma_min(sigma_min)); }),
           py::arg("sigma_min") = 0.0);
  py::class_<fm::PolynomialScheduler, fm::Scheduler, std::shared_ptr<fm::PolynomialScheduler>>(
      m, "PolynomialConvexScheduler", "alpha = t^n, sigma = 1 - t^n.")
      .def(py::init([](double n) { return std::make_shared<fm::PolynomialScheduler>(fm::PolynomialSchedulerOptions().exponent(n)); }),
           py::arg("n"));
  py::class_<fm::CosineScheduler, fm::Scheduler, std::shared_ptr<fm::CosineScheduler>>(
      m, "CosineScheduler", "alpha = sin(pi t / 2), sigma = cos(pi t / 2).")
      .def(py::init([]() { return std::make_shared<fm::CosineScheduler>(); }));
  py::class_<fm::VPScheduler, fm::Scheduler, std::shared_ptr<fm::VPScheduler>>(
      m, "VPScheduler", "Song et al.'s variance-preserving SDE's marginals in flow time (beta from beta_min to beta_max).")
      .def(py::init([](double beta_min, double beta_max) {
             return std::make_shared<fm::VPScheduler>(fm::VPSchedulerOptions().beta_min(beta_min).beta_max(beta_max));
           }),
           py::arg("beta_min") = 0.1, py::arg("beta_max") = 20.0);
  py::class_<fm::LinearVPScheduler, fm::Scheduler, std::shared_ptr<fm::LinearVPScheduler>>(
      m, "LinearVPScheduler", "alpha = t, sigma = sqrt(1 - t^2).")
      .def(py::init([]() { return std::make_shared<fm::LinearVPScheduler>(); }));
  py::class_<fm::VEScheduler, fm::Scheduler, std::shared_ptr<fm::VEScheduler>>(
      m, "VEScheduler", "Variance exploding: alpha = 1, sigma from sigma_max (t = 0) to sigma_min (t = 1), geometric.")
      .def(py::init([](double sigma_min, double sigma_max) {
             return std::make_shared<fm::VEScheduler>(fm::VESchedulerOptions().sigma_min(sigma_min).sigma_max(sigma_max));
           }),
           py::arg("sigma_min") = 0.01, py::arg("sigma_max") = 30.0);
  py::class_<fm::DDPMScheduler, fm::Scheduler, std::shared_ptr<fm::DDPMScheduler>>(
      m, "DDPMScheduler", "DDPM's discrete chain (linear or cosine betas) in flow time: step n is t = 1 - n/steps.")
      .def(py::init([](const std::string& beta_schedule, int64_t steps, double beta_start, double beta_end) {
             return std::make_shared<fm::DDPMScheduler>(
                 fm::DDPMSchedulerOptions().beta_schedule(beta_schedule).steps(steps).beta_start(beta_start).beta_end(beta_end));
           }),
           py::arg("beta_schedule") = "linear", py::arg("steps") = 1000, py::arg("beta_start") = 1e-4, py::arg("beta_end") = 0.02)
      .def_property_readonly("alpha_bar", &fm::DDPMScheduler::alpha_bar, "alpha-bar_n for n = 0 .. steps (float64).");

  // ---------------------------------------------------------------- paths
  py::class_<fm::PathSample>(m, "PathSample", "A draw from a conditional path: x_0, x_1, t, x_t and dx_t (flow_matching's PathSample)")
      .def_readonly("x_0", &fm::PathSample::x0)
      .def_readonly("x_1", &fm::PathSample::x1)
      .def_readonly("t", &fm::PathSample::t)
      .def_readonly("x_t", &fm::PathSample::x_t)
      .def_readonly("dx_t", &fm::PathSample::velocity)
      .def("__repr__", [](const fm::PathSample& s) { return "PathSample(x_0, x_1, t, x_t, dx_t) of shape " + c10::str(s.x_t.sizes()); });

  py::class_<fm::AffinePath, PathPtr>(
      m, "AffineProbPath",
      "x_t = alpha_t x_1 + sigma_t x_0 (+ gamma_t z with interpolant noise), dx_t its time derivative; and the conversions\n"
      "between velocity, data (target), noise (epsilon) and score predictions on this path.")
      .def(py::init([](const SchedulerPtr& scheduler, const std::string& noise, double noise_scale) {
             if (!scheduler) throw std::invalid_argument("AffineProbPath: scheduler must not be None");
             return std::make_shared<fm::AffinePath>(
                 scheduler, fm::AffinePathOptions().noise(fm::interpolant_noise_from_string(noise)).noise_scale(noise_scale));
           }),
           py::arg("scheduler"), py::arg("noise") = "none", py::arg("noise_scale") = 0.0,
           "noise: 'none', 'constant' (gamma_t = noise_scale, I-CFM) or 'brownian-bridge' (noise_scale sqrt(t (1 - t))).")
      .def(
          "sample",
          [](const fm::AffinePath& p, const at::Tensor& x_0, const at::Tensor& x_1, const at::Tensor& t) {
            if (t.dim() != 1 || x_0.dim() < 1 || t.size(0) != x_0.size(0)) {
              throw std::invalid_argument("AffineProbPath.sample: t must have shape (B,) with B = x_0.shape[0], got " +
                                          c10::str(t.sizes()) + " for x_0 " + c10::str(x_0.sizes()));
            }
            return p.sample(x_0, x_1, t);
          },
          py::arg("x_0"), py::arg("x_1"), py::arg("t"), "x_t and dx_t at times t (B,); interpolant noise from torch's global generator.")
      .def_property_readonly("scheduler", [](const fm::AffinePath& p) { return std::const_pointer_cast<fm::Scheduler>(p.scheduler()); })
      .def_property_readonly("spec", [](const fm::AffinePath& p) { return from_json(p.spec()); })
      .def(
          "convert",
          [](const fm::AffinePath& p, const at::Tensor& value, const std::string& from, const std::string& to, const at::Tensor& x_t,
             const at::Tensor& t) {
            return convert(p, value, fm::prediction_target_from_string(from), fm::prediction_target_from_string(to), x_t, t, "convert");
          },
          py::arg("value"), py::arg("from_"), py::arg("to"), py::arg("x_t"), py::arg("t"),
          "A prediction of kind from_ at (x_t, t) as kind to: 'velocity', 'data', 'noise' or 'score' (t: (B,) or a scalar).")
      .def("target_to_velocity", [](const fm::AffinePath& p, const at::Tensor& x_1, const at::Tensor& x_t, const at::Tensor& t) {
             return convert(p, x_1, fm::PredictionTarget::Data, fm::PredictionTarget::Velocity, x_t, t, "target_to_velocity");
           }, py::arg("x_1"), py::arg("x_t"), py::arg("t"))
      .def("epsilon_to_velocity", [](const fm::AffinePath& p, const at::Tensor& epsilon, const at::Tensor& x_t, const at::Tensor& t) {
             return convert(p, epsilon, fm::PredictionTarget::Noise, fm::PredictionTarget::Velocity, x_t, t, "epsilon_to_velocity");
           }, py::arg("epsilon"), py::arg("x_t"), py::arg("t"))
      .def("velocity_to_target", [](const fm::AffinePath& p, const at::Tensor& velocity, const at::Tensor& x_t, const at::Tensor& t) {
             return convert(p, velocity, fm::PredictionTarget::Velocity, fm::PredictionTarget::Data, x_t, t, "velocity_to_target");
           }, py::arg("velocity"), py::arg("x_t"), py::arg("t"))
      .def("velocity_to_epsilon", [](const fm::AffinePath& p, const at::Tensor& velocity, const at::Tensor& x_t, const at::Tensor& t) {
             return convert(p, velocity, fm::PredictionTarget::Velocity, fm::PredictionTarget::Noise, x_t, t, "velocity_to_epsilon");
           }, py::arg("velocity"), py::arg("x_t"), py::arg("t"))
      .def("target_to_epsilon", [](const fm::AffinePath& p, const at::Tensor& x_1, const at::Tensor& x_t, const at::Tensor& t) {
             return convert(p, x_1, fm::PredictionTarget::Data, fm::PredictionTarget::Noise, x_t, t, "target_to_epsilon");
           }, py::arg("x_1"), py::arg("x_t"), py::arg("t"))
      .def("epsilon_to_target", [](const fm::AffinePath& p, const at::Tensor& epsilon, const at::Tensor& x_t, const at::Tensor& t) {
             return convert(p, epsilon, fm::PredictionTarget::Noise, fm::PredictionTarget::Data, x_t, t, "epsilon_to_target");
           }, py::arg("epsilon"), py::arg("x_t"), py::arg("t"))
      .def("__repr__", [](const fm::AffinePath& p) { return "flowmatch.AffineProbPath(" + p.spec().dump() + ")"; });
  py::class_<fm::CondOTPath, fm::AffinePath, std::shared_ptr<fm::CondOTPath>>(
      m, "CondOTProbPath", "The straight path x_t = (1 - t) x_0 + t x_1, dx_t = x_1 - x_0 (sigma: I-CFM's constant noise).")
      .def(py::init([](double sigma) { return std::make_shared<fm::CondOTPath>(fm::CondOTPathOptions().sigma(sigma)); }),
           py::arg("sigma") = 0.0);

  // ---------------------------------------------------------------- schedule transform
  py::class_<ScheduleTransformedModel>(
      m, "ScheduleTransformedModel",
      "velocity_model trained on original_scheduler's path, as the velocity of new_scheduler's path with the same\n"
      "final distribution (exact for the marginal field): u'(x, r) = (ds/dr / s) x + s dt/dr u(x / s, t_r).")
      .def(py::init([](const py::object& velocity_model, const SchedulerPtr& original_scheduler, const SchedulerPtr& new_scheduler) {
             if (!original_scheduler || !new_scheduler) throw std::invalid_argument("ScheduleTransformedModel: schedulers must not be None");
             if (!PyCallable_Check(velocity_model.ptr())) throw std::invalid_argument("velocity_model must be callable as velocity_model(x, t)");
             return ScheduleTransformedModel{velocity_model, original_scheduler, new_scheduler};
           }),
           py::arg("velocity_model"), py::arg("original_scheduler"), py::arg("new_scheduler"))
      .def(
          "__call__",
          [](const ScheduleTransformedModel& s, const at::Tensor& x, const at::Tensor& t, const py::kwargs& extras) {
            const py::dict kwargs(extras);
            at::Tensor times = t.dim() == 0 ? t.expand({x.size(0)}) : t;
            return fm::schedule_transformed_field(python_field(s.model, &kwargs), s.original, s.wanted)(x, times);
          },
          py::arg("x"), py::arg("t"), "The transformed velocity at (x, t); t a scalar or (B,); keyword arguments go to the model.");

  // ---------------------------------------------------------------- solver
  py::class_<ODESolver>(m, "ODESolver",
                        "Solves dx/dt = velocity_model(x, t, **model_extras) (flow_matching's ODESolver) with flowmatch's solvers;\n"
                        "with a manifold every step stays on it.")
      .def(py::init([](const py::object& velocity_model, const ManifoldPtr& manifold) { return ODESolver{velocity_model, manifold}; }),
           py::arg("velocity_model"), py::arg("manifold") = nullptr)
      .def(
          "sample",
          [](const ODESolver& s, const at::Tensor& x_init, const py::object& step_size, const std::string& method, double atol,
             double rtol, const py::object& time_grid, bool return_intermediates, const py::kwargs& model_extras) {
            const auto grid = to_grid(time_grid, "ODESolver.sample");
            const py::dict kwargs(model_extras);
            const auto field = python_field(s.model, &kwargs);
            bool grid_steps = false;
            const auto options = s.options(method, grid, step_size, atol, rtol, return_intermediates, grid_steps);
            fm::SolveResult r;
            {
              py::gil_scoped_release release;
              r = fm::solve_ode(field, x_init, options);
            }
            if (!return_intermediates) return r.x;
            if (grid_steps) return at::stack(r.trajectory);  // every grid time, the start included
            std::vector<at::Tensor> states{x_init};        // else: the interior output times between the ends
            states.insert(states.end(), r.trajectory.begin(), r.trajectory.end());
            states.push_back(r.x);
            return at::stack(states);
          },
          py::arg("x_init"), py::arg("step_size") = py::none(), py::arg("method") = "euler", py::arg("atol") = 1e-5,
          py::arg("rtol") = 1e-5, py::arg("time_grid") = std::vector<double>{0.0, 1.0}, py::arg("return_intermediates") = false,
          "x at time_grid[-1] from x_init at time_grid[0]. method: euler, midpoint, heun, rk4 (fixed steps of step_size, or the\n"
          "time_grid's own points when step_size is None) or dopri5 (atol, rtol). With return_intermediates, the states at every\n"
          "time_grid time, stacked (len(time_grid), ...). Keyword arguments go to every model call.")
      .def(
          "compute_likelihood",
          [](const ODESolver& s, const at::Tensor& x_1, const py::object& log_p0, const py::object& step_size, const std::string& method,
             double atol, double rtol, const py::object& time_grid, bool exact_divergence, int64_t probes, const py::object& seed,
             const py::kwargs& model_extras) {
            const auto grid = to_grid(time_grid, "ODESolver.compute_likelihood");
            if (grid.size() != 2 || grid.front() != 1.0 || grid.back() != 0.0) {
              throw std::invalid_argument("ODESolver.compute_likelihood: time_grid must be [1.0, 0.0] (data to noise)");
            }
            auto solver = fm::SolverOptions().manifold(s.manifold).method(fm::solver_method_from_string(method)).atol(atol).rtol(rtol);
            if (solver.method() == fm::SolverMethod::Dopri5 && !step_size.is_none()) {
              throw std::invalid_argument("ODESolver.compute_likelihood: step_size is for fixed-step methods; dopri5 takes atol and rtol");
            }
            if (solver.method() != fm::SolverMethod::Dopri5) {
              if (step_size.is_none()) throw std::invalid_argument("ODESolver.compute_likelihood: a fixed-step method needs step_size");
              solver.steps(static_cast<int64_t>(grid_from_step_size(1.0, 0.0, step_size.cast<double>()).size()) - 1);
            }
            auto options = fm::LikelihoodOptions()
                               .solver(solver)
                               .divergence(exact_divergence ? fm::DivergenceMethod::Exact : fm::DivergenceMethod::Hutchinson)
                               .probes(probes);
            py::object density = log_p0;
            if (!log_p0.is_none()) {
              if (!PyCallable_Check(log_p0.ptr())) throw std::invalid_argument("log_p0 must be callable as log_p0(x) -> (B,)");
              PyObject* callable = log_p0.ptr();
              options.source_log_density([callable](const at::Tensor& x) {
                py::gil_scoped_acquire gil;
                py::object out = py::reinterpret_borrow<py::object>(callable)(x);
                if (!THPVariable_Check(out.ptr())) throw std::runtime_error("log_p0(x) must return a torch.Tensor");
                return THPVariable_Unpack(out.ptr());
              });
            }
            const py::dict kwargs(model_extras);
            const auto field = python_field(s.model, &kwargs);
            std::optional<at::Generator> generator;
            if (!seed.is_none()) {
              generator = at::detail::createCPUGenerator(seed.cast<uint64_t>());
            }
            fm::LikelihoodResult r;
            {
              py::gil_scoped_release release;
              r = fm::log_likelihood(field, x_1, options, generator);
            }
            return py::make_tuple(r.x0, r.log_prob);
          },
          py::arg("x_1"), py::arg("log_p0") = py::none(), py::arg("step_size") = py::none(), py::arg("method") = "dopri5",
          py::arg("atol") = 1e-5, py::arg("rtol") = 1e-5, py::arg("time_grid") = std::vector<double>{1.0, 0.0},
          py::arg("exact_divergence") = true, py::arg("probes") = 1, py::arg("seed") = py::none(),
          "(x_0, log p_1(x_1)) by the continuity equation, solved from x_1 at t = 1 back to t = 0 (fixed-step methods: ceil(1 /\n"
          "step_size) equal steps; flow_matching's defaults are euler and Hutchinson, ours dopri5 and exact). log_p0(x) is the source's\n"
          "log-density per row (default: N(0, I), or the manifold's uniform distribution). exact_divergence=False uses\n"
          "Hutchinson's estimate with `probes` Rademacher probes (seeded by `seed`). Keyword arguments go to every model call.");
}

}  // namespace fmpy
