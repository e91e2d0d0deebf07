// The points domain: 2-D toy distributions and point clouds (N, D) from .npy/.pt files. Evaluation:
// exact W2 at 1/2/4/10/100 Euler steps against fresh target samples (with the floor of two target
// draws), RBF MMD as TorchCFM reports it, straightness and normalized path energy, optionally W2
// against NFE for every solver; pictures for 2-D data.

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "flowmatch/checkpoint.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/domain.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/metrics.h"
#include "flowmatch/run.h"
#include "flowmatch/solvers.h"

namespace flowmatch {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// W2 against NFE for every fixed-step solver at NFE budgets 1..128 (powers of two) and Dopri5 at
// tolerances 1e-2..1e-5, on the same source and reference points.
json solver_sweep(const VelocityField& field, const std::shared_ptr<const Scheduler>& scheduler, const at::Tensor& x0,
                  const at::Tensor& reference, const std::string& png, json& metrics) {
  json rows = json::array();
  std::vector<io::LineSeries> lines;
  // Tableau's ten colours: one per solver (there are seven ODE solvers).
  const std::vector<io::Color> colors = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
                                         {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  size_t index = 0;
  for (const auto& name : solver_names(/*stochastic=*/false)) {
    const SolverInfo info = solver_info(name);
    if (info.discrete) continue;
    io::LineSeries line{{}, {}, colors[index++ % colors.size()], name};
    std::vector<SolverOptions> runs;
    if (info.adaptive) {
      for (double tol : {1e-2, 1e-3, 1e-4, 1e-5}) runs.push_back(SolverOptions().atol(tol).rtol(tol));
    } else {
      for (int64_t nfe = info.evaluations_per_step; nfe <= 128; nfe *= 2) {
        runs.push_back(SolverOptions().steps(nfe / info.evaluations_per_step));
      }
    }
    for (const auto& options : runs) {
      SolveResult result;
      try {
        result = solve(name, field, x0, SolverOptions(options).scheduler(scheduler));
      } catch (const std::invalid_argument&) {
        if (!scheduler && line.x.empty()) break;  // a solver that needs the path's scheduler (ddim, ...): not here
        throw;
      }
      const double w2 = metrics::wasserstein2(result.x.to(at::kCPU), reference);
      json row = {{"solver", name}, {"nfe", result.nfe}, {"w2", w2}};
      if (info.adaptive) {
        row["atol"] = options.atol();
        row["rtol"] = options.rtol();
      } else {
        row["steps"] = options.steps();
        // w2_euler1/10/100 of the main evaluation keep their own draws; the sweep fills the rest.
        const std::string key = "w2_" + name + std::to_string(options.steps());
        if (!metrics.contains(key)) metrics[key] = w2;
      }
      rows.push_back(row);
      line.x.push_back(static_cast<double>(result.nfe));
      line.y.push_back(w2);
    }
    if (!line.x.empty()) lines.push_back(line);
  }
  io::PlotStyle style;
  style.width = 720;
  style.height = 480;
  style.title = "W2 (n = " + std::to_string(x0.size(0)) + ") vs NFE per solver, same points";
  io::write_line_png(png, lines, style, /*log_y=*/true, /*log_x=*/true);
  return rows;
}

class PointsDomain : public Domain {
 public:
  std::string name() const override { return "points"; }

  json describe_data(const json& s, const std::vector<std::string>& given) const override {
    const std::string data = s.value("data", std::string());
    for (const char* key : {"source", "target"}) {
      const std::string name = s[key].get<std::string>();
      if (!data::is_toy2d(name)) {
        std::string valid;
        for (const auto& n : data::toy2d_names()) valid += (valid.empty() ? "" : ", ") + n;
        throw std::invalid_argument(std::string("--") + key + " '" + name + "': expected one of " + valid +
                                    (name == "uniform" || name == "wrapped-normal" || name.rfind("vmf-mixture:", 0) == 0 ? " (" + name + " is a source for manifold data)" : ""));
      }
    }
    if (data.empty()) return {{"source", s["source"]}, {"target", s["target"]}};
    // A point cloud (N, D) as the target: read and checked now; the source is N(0, I) in D dimensions
    // unless a 2-D toy source is asked for a 2-D cloud.
    const int64_t dim = data::load_point_cloud(data).size(1);
    const bool source_given = std::find(given.begin(), given.end(), "source") != given.end();
    const std::string source = source_given ? s["source"].get<std::string>() : "gaussian";
    if (dim != 2 && source != "gaussian") {
      throw std::invalid_argument("--source " + source + " is 2-D but --data has dimension " + std::to_string(dim) +
                                  "; use --source gaussian");
    }
    return {{"source", source}, {"target", "file"}, {"target_file", fs::absolute(data).string()}, {"dim", dim}};
  }

  std::vector<int64_t> sample_shape(const json& data) const override { return {data.value("dim", int64_t{2})}; }

  data::PointSampler sampler(const json& data, const std::string& which) const {
    if (!data.contains(which) || !data[which].is_string()) {
      throw std::invalid_argument("the run's data has no " + which + " distribution" +
                                  (which == "target" ? " (with --model-file, give --target NAME)" : std::string()));
    }
    const std::string name = data[which].get<std::string>();
    if (name == "file") return data::point_cloud_sampler(data::load_point_cloud(data.at(which + "_file").get<std::string>()));
    const int64_t dim = data.value("dim", int64_t{2});
    if (name == "gaussian" && dim != 2) return data::gaussian_sampler(dim);
    return data::toy2d_sampler(name);
  }

  data::PointSampler source(const json& data) const override { return sampler(data, "source"); }

  std::function<at::Tensor(const at::Tensor&)> source_log_density(const json& data) const override {
    if (data.value("source", std::string()) != "gaussian") return {};
    return [](const at::Tensor& x) {
      const double d = static_cast<double>(x[0].numel());
      return -0.5 * x.reshape({x.size(0), -1}).square().sum(1) - 0.5 * d * std::log(2 * M_PI);
    };
  }

  void add_training_data(const json& data, const std::string&, FlowMatchingProblem& problem) const override {
    problem.target = sampler(data, "target");
  }

  at::Tensor held_out(const json& data, int64_t n, at::Generator& generator) const override {
    return sampler(data, "target")(n, generator);
  }

  std::vector<std::string> picture_samples(const Run&, const SampleResult& samples, const SampleOptions&,
                                           const std::string& stem) const override {
    if (samples.x.dim() != 2 || samples.x.size(1) != 2) return {};  // pictures for 2-D points only
    std::vector<std::string> files;
    io::PlotStyle style;
    style.title = "samples: " + samples.description + ", NFE " + std::to_string(samples.nfe);
    io::write_scatter_png(stem + ".png", {{samples.x, {214, 39, 40}, "generated", 0.3f}}, style);
    files.push_back(stem + ".png");
    if (samples.trajectories.defined()) {
      io::PlotStyle ts;
      ts.title = std::to_string(samples.trajectories.size(1)) + " trajectories, " + samples.description;
      io::write_trajectories_png(stem + "-trajectories.png", samples.trajectories, ts);
      files.push_back(stem + "-trajectories.png");
    }
    return files;
  }

  // Exact W2 of the samples against one draw of n target points, and the floor between two draws.
  std::function<json(const SampleResult&)> sample_quality(const Run& run, int64_t n, uint64_t seed, const std::string&,
                                                          const c10::Device&) const override {
    if (n < 2 || n > 23170) throw std::invalid_argument("sample quality: n must be in [2, 23170] for the exact W2, got " + std::to_string(n));
    auto target = sampler(run.config()["data"], "target");
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 0x5eed0000ULL);
    at::Tensor reference = target(n, gen);
    const double floor = metrics::wasserstein2(target(n, gen), target(n, gen));
    return [reference, floor](const SampleResult& samples) -> json {
      if (samples.x.size(0) != reference.size(0)) {
        throw std::invalid_argument("sample quality: expected " + std::to_string(reference.size(0)) + " samples, got " +
                                    std::to_string(samples.x.size(0)));
      }
      if (!at::isfinite(samples.x).all().item<bool>()) return {{"primary", "w2"}, {"w2", nullptr}, {"w2_floor", floor}, {"finite", false}};
      return {{"primary", "w2"}, {"w2", metrics::wasserstein2(samples.x.to(at::kCPU), reference)}, {"w2_floor", floor}};
    };
  }

  json evaluate(const Run& run, const EvaluationOptions& o, const ReportFunction& report) const override {
    const json& data = run.config()["data"];
    auto model = run.model(o.checkpoint, o.device);
    auto src = source(data);
    auto target = sampler(data, "target");
    // A generator of its own: evaluation draws are fresh, never the training batches.
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 0x5eed0000ULL);
    const int64_t n = o.n;
    // The exact W2 holds an n x n float64 cost matrix (and the network's activations are n rows).
    const double cost_bytes = 8.0 * static_cast<double>(n) * static_cast<double>(n);
    if (n < 2 || cost_bytes > 4.0 * (1 << 30)) {
      throw std::invalid_argument("--n " + std::to_string(n) + ": the exact W2 needs an n x n cost matrix (" +
                                  std::to_string(cost_bytes / (1 << 30)).substr(0, 6) + " GiB); give n in [2, 23170] (4 GiB)");
    }
    SamplingFlow flow = run.flow(model, o.scheduler);
    const auto& field = flow.field;

    c10::InferenceMode guard;
    json metrics = {{"n", n},
                    {"prediction", flow.prediction},
                    {"scheduler", flow.scheduler}};
    at::Tensor shown_generated, shown_target;
    for (int64_t steps : {1, 2, 4, 10, 100}) {
      at::Tensor x0 = flow.path->start(src(n, gen)).to(o.device);
      auto result = solve("euler", field, x0, SolverOptions().steps(steps));
      const int64_t bad = (~at::isfinite(result.x).all(1)).sum().item<int64_t>();
      if (bad > 0) {
        throw std::runtime_error(std::to_string(bad) + " of " + std::to_string(n) + " samples (Euler " + std::to_string(steps) +
                                 " steps) are not finite: the network's weights or the solve diverged; nothing written");
      }
      at::Tensor reference = target(n, gen);
      metrics["w2_euler" + std::to_string(steps)] = metrics::wasserstein2(result.x.to(at::kCPU), reference);
      if (steps == 100) {
        shown_generated = result.x.to(at::kCPU);
        shown_target = reference;
        metrics["nfe"] = result.nfe;
      }
    }
    metrics["w2_floor"] = metrics::wasserstein2(target(n, gen), target(n, gen));
    {
      // Straightness and normalized path energy along the model's own Euler-100 trajectories
      // (PROTOCOLS.md); W2² between the source points and fresh target points, exact.
      at::Tensor x0 = flow.path->start(src(n, gen)).to(o.device);
      auto m = metrics::trajectory_metrics(field, x0, target(n, gen));
      metrics["straightness"] = m.straightness;
      metrics["path_energy"] = m.path_energy;
      metrics["w2_source_target"] = std::sqrt(m.w2_squared);
      metrics["npe"] = m.normalized_path_energy;
    }
    if (o.solver_sweep) {
      at::Tensor x0 = flow.path->start(src(n, gen)).to(o.device);
      metrics["solver_sweep"] = solver_sweep(field, flow.path->scheduler(), x0, target(n, gen), run.dir() + "/w2_vs_nfe.png", metrics);
    }
    // TorchCFM's RBF MMD² on the Euler-100 samples, beside its floor between two target draws (drawn
    // after everything above, so the W2 figures keep their draws).
    metrics["mmd_rbf_euler100"] = metrics::rbf_mmd2(shown_generated, shown_target);
    metrics["mmd_rbf_floor"] = metrics::rbf_mmd2(target(n, gen), target(n, gen));

    if (shown_generated.size(1) == 2) {  // pictures for 2-D data only
      io::PlotStyle style;
      char title[128];
      std::snprintf(title, sizeof title, "generated (Euler 100) over target, W2 = %.3f", metrics["w2_euler100"].get<double>());
      style.title = title;
      io::write_scatter_png(run.dir() + "/eval.png",
                            {{shown_target, {31, 119, 180}, "target", 0.35f}, {shown_generated, {214, 39, 40}, "generated", 0.35f}},
                            style);
      at::Tensor x0 = flow.path->start(src(300, gen)).to(o.device);
      auto traj = solve("euler", field, x0, SolverOptions().steps(100).record_trajectory(true));
      io::PlotStyle ts;
      ts.title = "300 trajectories, Euler 100 steps";
      io::write_trajectories_png(run.dir() + "/trajectories.png", at::stack(traj.trajectory).to(at::kCPU), ts);
      metrics["pictures"] = {run.dir() + "/eval.png", run.dir() + "/trajectories.png"};
    }
    if (report) {
      char line[400];
      std::snprintf(line, sizeof line,
                    "W2 (n=%lld): euler1 %.4f  euler2 %.4f  euler4 %.4f  euler10 %.4f  euler100 %.4f  (floor %.4f)\n"
                    "straightness %.4f  normalized path energy %.4f (Euler 100)  RBF MMD^2 %.2e (floor %.2e)",
                    static_cast<long long>(n), metrics["w2_euler1"].get<double>(), metrics["w2_euler2"].get<double>(),
                    metrics["w2_euler4"].get<double>(), metrics["w2_euler10"].get<double>(),
                    metrics["w2_euler100"].get<double>(), metrics["w2_floor"].get<double>(),
                    metrics["straightness"].get<double>(), metrics["npe"].get<double>(),
                    metrics["mmd_rbf_euler100"].get<double>(), metrics["mmd_rbf_floor"].get<double>());
      report(line);
    }
    return metrics;
  }
};

}  // namespace

std::shared_ptr<Domain> make_points_domain() { return std::make_shared<PointsDomain>(); }
// The fallback domain: the default toy data and any file (read as a point cloud, which names the file
// when it is not one).
bool points_domain_accepts(const std::string&) { return true; }

}  // namespace flowmatch
