// flowmatch eval: W2 of a trained run at 1, 10 and 100 Euler steps against fresh target
// samples (metrics.json + pictures), or the exact W2 between two .npy point sets.

#include <cmath>
#include <cstdio>
#include <iostream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "common.h"
#include "eval_images.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/metrics.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct EvalFlags {
  CommonFlags common;
  std::string run, checkpoint, samples, reference, out, scheduler, model_file, source, target;
  int64_t n = 2000;
  bool solver_sweep = false;
  ImageEvalFlags images;
};

// W2 against NFE for every solver on the same source points and the same reference points:
// fixed-step methods at NFE budgets 1..128 (powers of two), Dopri5 at tolerances 1e-2..1e-5.
json solver_sweep(const fm::VelocityField& field, const at::Tensor& x0, const at::Tensor& reference,
                  const std::string& png, json& metrics) {
  json rows = json::array();
  std::vector<fm::io::LineSeries> lines;
  const std::vector<std::pair<std::string, fm::io::Color>> methods = {
      {"euler", {31, 119, 180}}, {"midpoint", {255, 127, 14}}, {"heun", {44, 160, 44}}, {"rk4", {214, 39, 40}}, {"dopri5", {148, 103, 189}}};
  for (const auto& [name, color] : methods) {
    fm::io::LineSeries line{{}, {}, color, name};
    const auto method = fm::solver_method_from_string(name);
    std::vector<fm::SolverOptions> runs;
    if (method == fm::SolverMethod::Dopri5) {
      for (double tol : {1e-2, 1e-3, 1e-4, 1e-5}) runs.push_back(fm::SolverOptions().method(method).atol(tol).rtol(tol));
    } else {
      for (int64_t nfe = fm::evaluations_per_step(method); nfe <= 128; nfe *= 2) {
        runs.push_back(fm::SolverOptions().method(method).steps(nfe / fm::evaluations_per_step(method)));
      }
    }
    for (const auto& options : runs) {
      auto result = fm::solve_ode(field, x0, options);
      const double w2 = fm::metrics::wasserstein2(result.x.to(at::kCPU), reference);
      json row = {{"solver", name}, {"nfe", result.nfe}, {"w2", w2}};
      if (method == fm::SolverMethod::Dopri5) {
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
    lines.push_back(line);
  }
  fm::io::PlotStyle style;
  style.width = 720;
  style.height = 480;
  style.title = "W2 (n = " + std::to_string(x0.size(0)) + ") vs NFE per solver, same points";
  fm::io::write_line_png(png, lines, style, /*log_y=*/true, /*log_x=*/true);
  return rows;
}


int eval_files(EvalFlags& f) {
  at::Tensor a = fm::data::load_point_cloud(f.samples, "--samples");
  at::Tensor b = fm::data::load_point_cloud(f.reference, "--reference");
  if (a.size(1) != b.size(1)) {
    throw std::runtime_error("--samples has dimension " + std::to_string(a.size(1)) + " but --reference has " +
                             std::to_string(b.size(1)));
  }
  const double w2 = fm::metrics::wasserstein2(a, b);
  json result = {{"w2", w2}, {"n_samples", a.size(0)}, {"n_reference", b.size(0)}, {"dim", a.size(1)}};
  if (!f.out.empty()) {
    ensure_parent_writable(f.out);
    write_json_atomic(f.out, result);
  }
  std::cout << result.dump() << "\n";
  return kExitOk;
}

int eval_run(EvalFlags& f) {
  const c10::Device device = apply_common_flags(f.common);
  if (!f.run.empty() && !f.target.empty()) throw UsageError("--target applies to --model-file; a run keeps its own target");
  RunFolder run = resolve_run(f.run, f.model_file, f.source, f.target);
  if (!f.model_file.empty() && f.target.empty()) throw UsageError("with --model-file, give --target NAME to compare with");
  const std::string out = f.out.empty() ? run.metrics_json() : f.out;
  ensure_parent_writable(out);
  const bool scripted = !f.model_file.empty();
  const std::string checkpoint = scripted ? f.checkpoint : f.checkpoint.empty() ? latest_checkpoint(run) : f.checkpoint;
  if (is_image_run(run)) return eval_image_run(run, checkpoint, out, f.images, f.common.seed, device);
  auto model = load_run_model(run, checkpoint, device);
  auto source = run_sampler(run, "source");
  auto target = run_sampler(run, "target");
  // A generator of its own: evaluation draws are fresh, never the training batches.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(f.common.seed + 0x5eed0000ULL);
  RunFlow flow = run_flow(run, model, f.scheduler);
  const auto& field = flow.field;

  c10::InferenceMode guard;
  json metrics = {{"checkpoint", scripted ? f.model_file : checkpoint}, {"step", scripted ? int64_t{-1} : fm::checkpoint_step(checkpoint)}, {"n", f.n},
                  {"prediction", flow.prediction}, {"scheduler", flow.scheduler}};
  at::Tensor shown_generated, shown_target;
  for (int64_t steps : {1, 2, 4, 10, 100}) {
    at::Tensor x0 = flow.path->start(source(f.n, gen)).to(device);
    auto result = fm::solve_ode(field, x0, fm::SolverOptions().method(fm::SolverMethod::Euler).steps(steps));
    at::Tensor reference = target(f.n, gen);
    metrics["w2_euler" + std::to_string(steps)] = fm::metrics::wasserstein2(result.x.to(at::kCPU), reference);
    if (steps == 100) {
      shown_generated = result.x.to(at::kCPU);
      shown_target = reference;
      metrics["nfe"] = result.nfe;
    }
  }
  metrics["w2_floor"] = fm::metrics::wasserstein2(target(f.n, gen), target(f.n, gen));
  {
    // Straightness and normalized path energy along the model's own Euler-100 trajectories
    // (PROTOCOLS.md); W2² between the source points and fresh target points, exact.
    at::Tensor x0 = flow.path->start(source(f.n, gen)).to(device);
    auto m = fm::metrics::trajectory_metrics(field, x0, target(f.n, gen));
    metrics["straightness"] = m.straightness;
    metrics["path_energy"] = m.path_energy;
    metrics["w2_source_target"] = std::sqrt(m.w2_squared);
    metrics["npe"] = m.normalized_path_energy;
  }
  if (f.solver_sweep) {
    at::Tensor x0 = flow.path->start(source(f.n, gen)).to(device);
    metrics["solver_sweep"] = solver_sweep(field, x0, target(f.n, gen), run.dir + "/w2_vs_nfe.png", metrics);
  }
  write_json_atomic(out, metrics);

  const bool planar = shown_generated.size(1) == 2;  // pictures for 2-D data only
  if (planar) {
    fm::io::PlotStyle style;
    char title[128];
    std::snprintf(title, sizeof title, "generated (Euler 100) over target, W2 = %.3f", metrics["w2_euler100"].get<double>());
    style.title = title;
    fm::io::write_scatter_png(run.dir + "/eval.png",
                              {{shown_target, {31, 119, 180}, "target", 0.35f}, {shown_generated, {214, 39, 40}, "generated", 0.35f}},
                              style);
    at::Tensor x0 = flow.path->start(source(300, gen)).to(device);
    auto traj = fm::solve_ode(field, x0, fm::SolverOptions().steps(100).record_trajectory(true));
    fm::io::PlotStyle ts;
    ts.title = "300 trajectories, Euler 100 steps";
    fm::io::write_trajectories_png(run.dir + "/trajectories.png", at::stack(traj.trajectory).to(at::kCPU), ts);
  }

  char line[320];
  std::snprintf(line, sizeof line,
                "W2 (n=%lld): euler1 %.4f  euler2 %.4f  euler4 %.4f  euler10 %.4f  euler100 %.4f  (floor %.4f)\n"
                "straightness %.4f  normalized path energy %.4f (Euler 100)",
                static_cast<long long>(f.n), metrics["w2_euler1"].get<double>(), metrics["w2_euler2"].get<double>(),
                metrics["w2_euler4"].get<double>(), metrics["w2_euler10"].get<double>(),
                metrics["w2_euler100"].get<double>(), metrics["w2_floor"].get<double>(),
                metrics["straightness"].get<double>(), metrics["npe"].get<double>());
  std::cout << line << "\nwrote " << out
            << (planar ? ", " + run.dir + "/eval.png, " + run.dir + "/trajectories.png" : std::string())
            << (f.solver_sweep ? ", " + run.dir + "/w2_vs_nfe.png" : std::string()) << "\n";
  return kExitOk;
}

}  // namespace

Command register_eval(CLI::App& root) {
  auto flags = std::make_shared<EvalFlags>();
  EvalFlags& f = *flags;
  CLI::App* app = root.add_subcommand(
      "eval",
      "Evaluate a run (exact W2 at 1/2/4/10/100 Euler steps, straightness, normalized path energy -> metrics.json, eval.png), "
      "or W2 between two .npy files");
  auto* run = app->add_option("--run", f.run, "run folder written by 'flowmatch train'");
  auto* samples = app->add_option("--samples", f.samples, "points (n, D) as .npy or .pt, compared with --reference");
  auto* reference = app->add_option("--reference", f.reference, "points (m, D) as .npy or .pt");
  samples->needs(reference);
  reference->needs(samples);
  run->excludes(samples)->excludes(reference);
  add_model_file_flags(app, f.model_file, f.source);
  app->add_option("--target", f.target, "with --model-file: the data set to compare with")
      ->check(CLI::IsMember(flowmatch::data::toy2d_names()));
  app->add_option("--n", f.n, "samples per W2 estimate (generated and target)")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--checkpoint", f.checkpoint, "checkpoint file (default: the run's newest)");
  app->add_option("--scheduler", f.scheduler, "evaluate with another scheduler than the run's (schedule transform)")
      ->check(CLI::IsMember(flowmatch::scheduler_names()));
  app->add_option("--out", f.out, "metrics JSON file (default RUN/metrics.json; with --samples, optional)");
  app->add_flag("--solver-sweep", f.solver_sweep,
                "also W2 vs NFE for euler/midpoint/heun/rk4 (NFE 1..128) and dopri5 (tol 1e-2..1e-5) on the same "
                "points: metrics.json solver_sweep and w2_<solver><steps>, RUN/w2_vs_nfe.png");
  add_image_eval_flags(app, f.images);
  add_common_flags(app, f.common);
  return {app, [flags] {
            if (!flags->samples.empty()) return eval_files(*flags);
            if (flags->run.empty() && flags->model_file.empty()) {
              throw UsageError("eval needs --run RUN (or --model-file v.pt), or --samples A.npy --reference B.npy");
            }
            return eval_run(*flags);
          }};
}

}  // namespace fmcli
