#include "images.h"

#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "flowmatch/guidance.h"
#include "flowmatch/io/plot.h"

namespace fmcli {

namespace fm = flowmatch;

at::Tensor image_labels(const RunFolder& run, const std::string& which, int64_t n) {
  const json& data = run.config["data"];
  const int64_t classes = data.value("num_classes", int64_t{0});
  if (classes <= 0) throw UsageError("--class: the run is not class-conditional");
  if (which == "all") {
    if (n % classes != 0) {
      throw UsageError("--n " + std::to_string(n) + " must be a multiple of the " + std::to_string(classes) +
                       " classes for --class all (one row per class)");
    }
    return fm::grid_labels(n, classes);
  }
  if (which == "none") return at::full({n}, fm::models::kNullLabel, at::kLong);
  const auto names = data.value("class_names", std::vector<std::string>());
  for (size_t k = 0; k < names.size(); ++k) {
    if (names[k] == which) return at::full({n}, static_cast<int64_t>(k), at::kLong);
  }
  try {
    size_t used = 0;
    const int64_t k = std::stoll(which, &used);
    if (used == which.size() && k >= 0 && k < classes) return at::full({n}, k, at::kLong);
  } catch (const std::exception&) {
  }
  std::string known;
  for (const auto& name : names) known += (known.empty() ? "" : ", ") + name;
  throw UsageError("--class '" + which + "' is not all, none, a label in [0, " + std::to_string(classes) + ") or a class name (" +
                   known + ")");
}

at::Tensor sample_images(const RunFolder& run, std::shared_ptr<fm::models::VelocityModel> model, const at::Tensor& labels,
                         double guidance, const fm::SolverOptions& solver, at::Generator& generator, const c10::Device& device,
                         int64_t& nfe, int64_t chunk) {
  const int64_t n = labels.size(0), d = run.config["data"].at("dim").get<int64_t>();
  c10::InferenceMode inference;
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t b = std::min(chunk, n - start);
    at::Tensor part_labels = labels.narrow(0, start, b).to(device);
    RunFlow flow = run_flow(run, model, "", fm::guided_velocity_field(model, part_labels, guidance));
    at::Tensor x0 = flow.path->start(at::randn({b, d}, generator)).to(device);
    fm::SolveResult result = fm::solve_ode(flow.field, x0, solver);
    nfe = result.nfe;
    parts.push_back(result.x.to(at::kCPU));
  }
  return at::cat(parts);
}

void write_run_image_grid(const RunFolder& run, const std::string& path, const at::Tensor& x, const std::string& which,
                          const std::string& title) {
  const auto shape = run.config["data"].at("image_shape").get<std::vector<int64_t>>();
  at::Tensor pixels = fm::data::unit_range_to_pixels(x).reshape({x.size(0), shape[0], shape[1], shape[2]});
  const int64_t classes = run.config["data"].value("num_classes", int64_t{0});
  std::vector<std::string> rows;
  int64_t columns = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(x.size(0)))));
  if (which == "all" && classes > 0) {
    columns = x.size(0) / classes;
    rows = run.config["data"].value("class_names", std::vector<std::string>());
    if (static_cast<int64_t>(rows.size()) != classes) rows.clear();
  }
  fm::io::write_image_grid_png(path, pixels, columns, 3, rows, title);
}

}  // namespace fmcli
