// flowmatch likelihood: log-likelihoods of data under a trained run by the continuity equation
// (NLL, its standard error, bits per dimension, NFE) and, for 2-D runs, a density map beside the
// target's histogram.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "common.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct LikelihoodFlags {
  CommonFlags common;
  std::string run, checkpoint, data, target, out, density_map, model_file, source;
  int64_t n = 2000, steps = 100, probes = 1, batch = 1000, grid = 120;
  std::string solver = "dopri5", divergence = "exact", probe_distribution = "rademacher";
  double atol = 1e-5, rtol = 1e-5;
};


int run_likelihood(LikelihoodFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  RunFolder run = resolve_run(f.run, f.model_file, f.source, f.target);
  const std::string source_name = run.config["data"].value("source", std::string());
  if (source_name != "gaussian") {
    throw UsageError("likelihood needs a run whose source is 'gaussian' (a known density at t = 0); '" + f.run +
                     "' starts from '" + source_name + "'");
  }
  if (f.solver != "dopri5" && (app->count("--atol") || app->count("--rtol"))) {
    throw UsageError("--atol/--rtol apply to --solver dopri5, not " + f.solver);
  }
  if (f.solver == "dopri5" && app->count("--steps")) throw UsageError("--steps applies to fixed-step solvers, not dopri5");
  if (f.divergence == "exact" && (app->count("--probes") || app->count("--probe-distribution"))) {
    throw UsageError("--probes and --probe-distribution apply to --divergence hutchinson");
  }
  const std::string out = f.out.empty() ? run.dir + "/likelihood.json" : f.out;
  ensure_parent_writable(out);
  auto model = load_run_model(run, f.checkpoint, device);
  // Float64 throughout: adaptive steps on the augmented state would otherwise chase float32 rounding
  // in the divergence integral (several times the NFE at atol 1e-5).
  model->to(at::kDouble);
  RunFlow flow = run_flow(run, model);
  // Where sampling starts: σ₀·x₀ (σ₀ = 1 except on VE paths), so the t = 0 density is N(0, σ₀² I).
  const double source_scale = flow.path->start(at::ones({1, 1}, at::kDouble)).item<double>();

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(f.common.seed + 0x11e1ULL);
  at::Tensor x;
  std::string data_label;
  if (!f.data.empty()) {
    x = fm::data::load_point_cloud(f.data, "--data");
    data_label = f.data;
  } else {
    if (f.target.empty() && !run.config["data"].contains("target")) throw UsageError("with --model-file, give --data or --target");
    const std::string name = f.target.empty() ? run.config["data"]["target"].get<std::string>() : f.target;
    x = fm::data::toy2d_sampler(name)(f.n, gen);
    data_label = name + " (" + std::to_string(f.n) + " fresh samples)";
  }
  const int64_t dim = model->spec().value("options", json::object()).value("dim", x.size(1));
  if (x.size(1) != dim) {
    throw std::runtime_error("the data has dimension " + std::to_string(x.size(1)) + " but the run's model has " +
                             std::to_string(dim));
  }

  auto solver = fm::SolverOptions().method(fm::solver_method_from_string(f.solver)).steps(f.steps).atol(f.atol).rtol(f.rtol);
  auto options = fm::LikelihoodOptions()
                     .solver(solver)
                     .divergence(f.divergence == "exact" ? fm::DivergenceMethod::Exact : fm::DivergenceMethod::Hutchinson)
                     .probes(f.probes)
                     .probe_distribution(f.probe_distribution == "gaussian" ? fm::ProbeDistribution::Gaussian
                                                                            : fm::ProbeDistribution::Rademacher)
                     .source_scale(source_scale);
  // Solved in batches (each its own adaptive solve); NFE is reported per point's solve, summed and max.
  auto log_prob_of = [&](const at::Tensor& points, int64_t& nfe_total, int64_t& nfe_max,
                         const fm::LikelihoodOptions& how) {
    std::vector<at::Tensor> parts;
    for (int64_t k = 0; k < points.size(0); k += f.batch) {
      at::Tensor chunk = points.slice(0, k, std::min(points.size(0), k + f.batch)).to(device, at::kDouble);
      auto r = fm::log_likelihood(flow.field, chunk, how, gen);
      nfe_total += r.nfe;
      nfe_max = std::max(nfe_max, r.nfe);
      parts.push_back(r.log_prob.detach().to(at::kCPU, at::kDouble));
    }
    return at::cat(parts);
  };

  const auto start = std::chrono::steady_clock::now();
  int64_t nfe_total = 0, nfe_max = 0;
  at::Tensor log_prob = log_prob_of(x, nfe_total, nfe_max, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!at::isfinite(log_prob).all().item<bool>()) {
    throw std::runtime_error("the log-likelihood is not finite for some points (the solve diverged; try a tighter "
                             "--atol/--rtol or more --steps)");
  }
  at::Tensor nll_per_point = -log_prob;
  const double nll = nll_per_point.mean().item<double>();
  const double stderr_ = x.size(0) > 1 ? nll_per_point.std().item<double>() / std::sqrt(static_cast<double>(x.size(0))) : 0.0;
  json result = {{"nll", nll},
                 {"nll_stderr", stderr_},
                 {"bpd", nll / (static_cast<double>(dim) * std::log(2.0))},
                 {"nfe", nfe_max},
                 {"nfe_total", nfe_total},
                 {"n", x.size(0)},
                 {"dim", dim},
                 {"data", data_label},
                 {"solver", f.solver},
                 {"divergence", f.divergence},
                 {"seconds", seconds}};
  if (f.solver == "dopri5") {
    result["atol"] = f.atol;
    result["rtol"] = f.rtol;
  } else {
    result["steps"] = f.steps;
  }
  if (f.divergence == "hutchinson") {
    result["probes"] = f.probes;
    result["probe_distribution"] = f.probe_distribution;
  }
  if (source_scale != 1.0) result["source_scale"] = source_scale;

  // Density map for 2-D runs: log p on a grid over the target's range, beside a histogram of the target.
  std::string map_path;
  if (dim == 2 && f.grid > 0) {
    map_path = f.density_map.empty() ? run.dir + "/density.png" : f.density_map;
    ensure_parent_writable(map_path);
    at::Tensor reference = run_sampler(run, "target")(100000, gen).to(at::kDouble);
    at::Tensor q = at::quantile(reference, at::tensor({0.002, 0.998}, at::kDouble), 0);
    const double cx = (q[0][0].item<double>() + q[1][0].item<double>()) / 2;
    const double cy = (q[0][1].item<double>() + q[1][1].item<double>()) / 2;
    const double span = 1.2 * std::max(q[1][0].item<double>() - q[0][0].item<double>(), q[1][1].item<double>() - q[0][1].item<double>());
    const double x_lo = cx - span / 2, x_hi = cx + span / 2, y_lo = cy - span / 2, y_hi = cy + span / 2;
    const int64_t g = f.grid;
    const double cell = span / static_cast<double>(g);
    at::Tensor centres = at::linspace(0.5 * cell, span - 0.5 * cell, g, at::kDouble);
    at::Tensor gx = (centres + x_lo).unsqueeze(0).expand({g, g}), gy = (centres + y_lo).unsqueeze(1).expand({g, g});
    at::Tensor grid_points = at::stack({gx.reshape(-1), gy.reshape(-1)}, 1);  // row-major, row 0 at y_lo
    // A picture, not a figure: Dopri5 at tolerance 1e-3 (or the looser one given) keeps it to seconds;
    // the divergence integral near t = 1 is what drives the NFE up at tight tolerances.
    auto map_options = options;
    if (f.solver == "dopri5") {
      map_options.solver(fm::SolverOptions(solver).atol(std::max(f.atol, 1e-3)).rtol(std::max(f.rtol, 1e-3)));
    }
    int64_t map_nfe = 0, unused_max = 0;
    at::Tensor model_log_p = log_prob_of(grid_points, map_nfe, unused_max, map_options).reshape({g, g});
    // Histogram density estimate on the same cells.
    at::Tensor ix = ((reference.select(1, 0) - x_lo) / cell).floor().to(at::kLong);
    at::Tensor iy = ((reference.select(1, 1) - y_lo) / cell).floor().to(at::kLong);
    at::Tensor inside = (ix >= 0) & (ix < g) & (iy >= 0) & (iy < g);
    at::Tensor counts = at::bincount((iy * g + ix).index({inside}), {}, g * g).to(at::kDouble).reshape({g, g});
    at::Tensor hist_log_p = (counts / (static_cast<double>(reference.size(0)) * cell * cell)).log();
    const double top = std::max(model_log_p.max().item<double>(), hist_log_p.max().item<double>());
    fm::io::PlotStyle style;
    style.width = 560;
    style.height = 560;
    char title[160];
    std::snprintf(title, sizeof title, "model log p (NLL %.3f)", nll);
    fm::io::write_heatmaps_png(map_path,
                               {{model_log_p, x_lo, x_hi, y_lo, y_hi, top - 8, top, title},
                                {hist_log_p, x_lo, x_hi, y_lo, y_hi, top - 8, top, "target log density (histogram)"}},
                               style);
    result["density_map"] = map_path;
  }
  write_json_atomic(out, result);
  std::cout << result.dump() << "\n";
  std::cerr << "NLL " << nll << " +- " << stderr_ << " nats (" << x.size(0) << " points, " << f.solver << ", "
            << f.divergence << " divergence, NFE " << nfe_max << "); wrote " << out
            << (map_path.empty() ? std::string() : " and " + map_path) << "\n";
  return kExitOk;
}

}  // namespace

Command register_likelihood(CLI::App& root) {
  auto flags = std::make_shared<LikelihoodFlags>();
  LikelihoodFlags& f = *flags;
  CLI::App* app = root.add_subcommand(
      "likelihood",
      "Log-likelihood of data under a run by the continuity equation: NLL (nats), standard error, bits/dim, NFE "
      "-> JSON; for 2-D runs a density map beside the target's histogram");
  app->footer(
      "The run's source must be 'gaussian'. Each batch of points is one solve from t = 1 back to 0 carrying\n"
      "the divergence: exact (one vector-Jacobian product per dimension) or Hutchinson with --probes k.\n"
      "bpd = NLL / (D ln 2) for continuous data.");
  app->add_option("--run", f.run, "run folder written by 'flowmatch train'");
  add_model_file_flags(app, f.model_file, f.source);
  auto* data = app->add_option("--data", f.data, "points (n, D) as .npy or .pt");
  auto* target = app->add_option("--target", f.target, "draw --n fresh points from this data set (default: the run's target)")
                     ->check(CLI::IsMember(flowmatch::data::toy2d_names()));
  data->excludes(target);
  app->add_option("--n", f.n, "points to draw with --target")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--solver", f.solver, "euler, midpoint, heun, rk4 or dopri5")
      ->check(CLI::IsMember({"euler", "midpoint", "heun", "rk4", "dopri5"}))->capture_default_str();
  app->add_option("--steps", f.steps, "fixed-step solvers: steps from t=1 to t=0")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--atol", f.atol, "dopri5 absolute tolerance")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--rtol", f.rtol, "dopri5 relative tolerance")->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--divergence", f.divergence, "exact or hutchinson")
      ->check(CLI::IsMember({"exact", "hutchinson"}))->capture_default_str();
  app->add_option("--probes", f.probes, "hutchinson: probes per point, fixed within a solve")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--probe-distribution", f.probe_distribution, "hutchinson: rademacher or gaussian")
      ->check(CLI::IsMember({"rademacher", "gaussian"}))->capture_default_str();
  app->add_option("--batch", f.batch, "points per solve")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--grid", f.grid, "2-D runs: density map resolution (cells per side; 0: no map)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--density-map", f.density_map, "2-D runs: density map PNG (default RUN/density.png)");
  app->add_option("--checkpoint", f.checkpoint, "checkpoint file (default: the run's newest)");
  app->add_option("--out", f.out, "result JSON (default RUN/likelihood.json); also printed");
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_likelihood(*flags, app); }};
}

}  // namespace fmcli
