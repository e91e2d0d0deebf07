#pragma once
// What the binding files of the `flowmatch` Python module share: Python callables as velocity fields,
// Python objects <-> JSON.

#include <torch/extension.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "flowmatch/manifold.h"
#include "flowmatch/velocity_field.h"

namespace py = pybind11;
namespace fm = flowmatch;

namespace fmpy {

using ManifoldPtr = std::shared_ptr<fm::Manifold>;

// A Python callable as a VelocityField, called as velocity(x, t, **extras) (flow_matching's model
// extras; null: none). The bindings release the GIL while C++ runs (LibTorch's autograd engine insists),
// so the field takes it back for each call. It holds borrowed pointers: the caller's objects outlive
// the solve, and no reference count changes without the GIL.
inline fm::VelocityField python_field(const py::object& velocity, const py::dict* extras = nullptr) {
  if (!PyCallable_Check(velocity.ptr())) throw std::invalid_argument("velocity must be callable as velocity(x, t)");
  PyObject* callable = velocity.ptr();
  PyObject* kwargs = extras != nullptr ? extras->ptr() : nullptr;
  return [callable, kwargs](const at::Tensor& x, const at::Tensor& t) {
    py::gil_scoped_acquire gil;
    at::Tensor times = t.dim() == 0 ? t.expand({x.size(0)}) : t;
    auto f = py::reinterpret_borrow<py::object>(callable);
    py::object out = kwargs != nullptr ? f(x, times, **py::reinterpret_borrow<py::dict>(kwargs)) : f(x, times);
    if (!THPVariable_Check(out.ptr())) throw std::runtime_error("velocity(x, t) must return a torch.Tensor");
    return THPVariable_Unpack(out.ptr());
  };
}

// Python objects (dicts, lists, numbers) <-> JSON, through Python's json module.
inline nlohmann::json to_json(const py::object& value) {
  return nlohmann::json::parse(py::module_::import("json").attr("dumps")(value).cast<std::string>());
}
inline py::object from_json(const nlohmann::json& value) { return py::module_::import("json").attr("loads")(value.dump()); }

// The schedulers, paths, schedule transform and ODE solver objects (nouns.cpp).
void bind_nouns(py::module_& m);

}  // namespace fmpy
