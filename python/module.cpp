// The `flowmatch` Python module: the C++ library's couplings, transport, paths, solvers and
// likelihoods on torch tensors. Velocity fields are any Python callable v(x, t) -> tensor (a
// torch.nn.Module, a TorchScript module, a lambda), called with t of shape (B) like the CLI's models.
// Import torch first (the module uses PyTorch's tensor conversions).

#include <torch/extension.h>

#include "flowmatch/assignment.h"
#include "flowmatch/coupling.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/metrics.h"
#include "flowmatch/paths.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/solvers.h"
#include "flowmatch/transport.h"

namespace py = pybind11;
namespace fm = flowmatch;

namespace {

// A Python callable as a VelocityField. The bindings release the GIL while C++ runs (LibTorch's
// autograd engine insists), so the field takes it back for each call. It holds a borrowed pointer:
// the caller's py::object outlives the solve, and no reference count changes without the GIL.
fm::VelocityField python_field(const py::object& velocity) {
  if (!PyCallable_Check(velocity.ptr())) throw std::invalid_argument("velocity must be callable as velocity(x, t)");
  PyObject* callable = velocity.ptr();
  return [callable](const at::Tensor& x, const at::Tensor& t) {
    py::gil_scoped_acquire gil;
    at::Tensor times = t.dim() == 0 ? t.expand({x.size(0)}) : t;
    py::object out = py::reinterpret_borrow<py::object>(callable)(x, times);
    if (!THPVariable_Check(out.ptr())) throw std::runtime_error("velocity(x, t) must return a torch.Tensor");
    return THPVariable_Unpack(out.ptr());
  };
}

fm::SolverOptions solver_options(const std::string& method, int64_t steps, double t0, double t1, double atol,
                                 double rtol, const std::vector<double>& output_times) {
  return fm::SolverOptions()
      .method(fm::solver_method_from_string(method))
      .steps(steps)
      .t0(t0)
      .t1(t1)
      .atol(atol)
      .rtol(rtol)
      .output_times(output_times);
}

}  // namespace

PYBIND11_MODULE(flowmatch, m) {
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
      [](const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t, const std::string& scheduler, double sigma) {
        fm::AffinePath path(fm::make_scheduler(scheduler), fm::AffinePathOptions().noise_scale(sigma));
        auto s = path.sample(x0, x1, t);
        return py::make_tuple(s.x_t, s.velocity);
      },
      py::arg("x0"), py::arg("x1"), py::arg("t"), py::arg("scheduler") = "condot", py::arg("sigma") = 0.0,
      "A point on the conditional path and its velocity: (x_t, u_t) = (alpha_t x1 + sigma_t x0 [+ sigma eps], ...).");
  m.def(
      "solve_ode",
      [](const py::object& velocity, const at::Tensor& x0, const std::string& method, int64_t steps, double t0, double t1,
         double atol, double rtol, const std::vector<double>& output_times) {
        auto field = python_field(velocity);
        const auto options = solver_options(method, steps, t0, t1, atol, rtol, output_times);
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
      py::arg("output_times") = std::vector<double>{},
      "Integrates dx/dt = velocity(x, t): (x at t1, info with the exact NFE and the states at output_times).");
  m.def(
      "log_likelihood",
      [](const py::object& velocity, const at::Tensor& x1, const std::string& method, int64_t steps, double atol, double rtol,
         const std::string& divergence, int64_t probes, double source_scale) {
        if (divergence != "exact" && divergence != "hutchinson") {
          throw std::invalid_argument("divergence must be 'exact' or 'hutchinson', got '" + divergence + "'");
        }
        auto options = fm::LikelihoodOptions()
                           .solver(solver_options(method, steps, 0.0, 1.0, atol, rtol, {}))
                           .divergence(divergence == "exact" ? fm::DivergenceMethod::Exact : fm::DivergenceMethod::Hutchinson)
                           .probes(probes)
                           .source_scale(source_scale);
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
      "log p1(x1) of the flow from N(0, s^2 I) by the continuity equation: (log_prob (B), nfe).");
}
