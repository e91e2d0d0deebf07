// flowmatch sample: draw points from a trained run with an ODE solver; writes .npy and PNG.

#include <cstdio>
#include <iostream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "common.h"
#include "images.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/sde.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct SampleFlags {
  CommonFlags common;
  std::string run, out, checkpoint, solver = "euler", scheduler, initial, model_file, source;
  int64_t n = 10000, steps = 100, trajectories = 0;
  double atol = 1e-5, rtol = 1e-5, sde_noise = 1.0;
  // Image runs.
  std::string which_class = "all";
  double guidance = 0;
};

// Image runs: guided samples by class, written as .npy (n, C·H·W in [−1, 1]) and a PNG grid.
int run_sample_images(SampleFlags& f, CLI::App* app, RunFolder& run, const c10::Device& device) {
  for (const char* flag : {"--initial", "--scheduler", "--trajectories"}) {
    if (app->count(flag) > 0) throw UsageError(std::string(flag) + " does not apply to image runs");
  }
  if (f.solver == "sde") throw UsageError("--solver sde does not apply to image runs (use an ODE solver)");
  if (app->count("--n") == 0) f.n = 10 * std::max<int64_t>(1, run.config["data"].value("num_classes", int64_t{1}));
  if (app->count("--solver") == 0) f.solver = "midpoint";
  if (app->count("--steps") == 0) f.steps = 20;
  if (!(f.guidance >= 0)) throw UsageError("--guidance must be >= 0");
  auto model = load_run_model(run, f.checkpoint, device);
  const at::Tensor labels = image_labels(run, f.which_class, f.n);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(f.common.seed);
  const auto options = fm::SolverOptions().method(fm::solver_method_from_string(f.solver)).steps(f.steps).atol(f.atol).rtol(f.rtol);
  int64_t nfe = 0;
  at::Tensor x = sample_images(run, model, labels, f.guidance, options, gen, device, nfe);
  fm::io::save_array(f.out, x);
  const std::string png = with_extension(f.out, ".png");
  char title[160];
  std::snprintf(title, sizeof title, "%s %s, guidance w = %g, NFE %lld", f.solver.c_str(),
                f.solver == "dopri5" ? "" : (std::to_string(f.steps) + " steps").c_str(), f.guidance, static_cast<long long>(nfe));
  write_run_image_grid(run, png, x, f.which_class, title);
  json info = {{"run", f.run}, {"n", f.n}, {"solver", f.solver}, {"steps", f.steps}, {"nfe", nfe}, {"seed", f.common.seed},
               {"guidance", f.guidance}, {"class", f.which_class}, {"labels", std::vector<int64_t>(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel())},
               {"range", "[-1, 1]; pixel = floor((x + 1) * 128) clamped to [0, 255]"}};
  const std::string info_path = with_extension(f.out, ".json");
  write_json_atomic(info_path, info);
  std::cout << "wrote " << f.out << " (" << x.size(0) << " x " << x.size(1) << ", float32 in [-1, 1]), " << png << " and " << info_path
            << "; NFE " << nfe << (f.guidance > 0 ? " (each a guided pair of network calls on a doubled batch)" : "") << "\n";
  return kExitOk;
}

int run_sample(SampleFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  RunFolder run = resolve_run(f.run, f.model_file, f.source, "");
  if (f.out.empty()) f.out = run.dir + "/samples.npy";
  ensure_parent_writable(f.out);
  if (is_image_run(run)) return run_sample_images(f, app, run, device);
  for (const char* flag : {"--class", "--guidance"}) {
    if (app->count(flag) > 0) throw UsageError(std::string(flag) + " applies to class-conditional image runs only");
  }
  auto model = load_run_model(run, f.checkpoint, device);
  RunFlow flow = run_flow(run, model, f.scheduler);
  auto source = run_sampler(run, "source");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(f.common.seed);
  const bool sde = f.solver == "sde";
  if (sde && !flow.path->scheduler()) throw UsageError("--solver sde needs a run on an affine path (a scheduler)");
  auto options = fm::SolverOptions().steps(f.steps).atol(f.atol).rtol(f.rtol);
  if (!sde) options.method(fm::solver_method_from_string(f.solver));
  const auto sde_options = fm::SDEOptions().steps(f.steps).noise_scale(f.sde_noise);
  auto solve = [&](const at::Tensor& start, bool record) {
    if (sde) return fm::solve_sde(flow.field, *flow.path->scheduler(), start, fm::SDEOptions(sde_options).record_trajectory(record), gen);
    return fm::solve_ode(flow.field, start, fm::SolverOptions(options).record_trajectory(record));
  };

  c10::InferenceMode guard;
  at::Tensor x0;
  if (!f.initial.empty()) {
    // Given source points (reproducible runs): validated, then moved to where the path starts.
    at::Tensor given = fm::data::load_point_cloud(f.initial, "--initial");
    const int64_t dim = model->spec().value("options", json::object()).value("dim", given.size(1));
    if (given.size(1) != dim) {
      throw std::runtime_error("--initial '" + f.initial + "' has dimension " + std::to_string(given.size(1)) +
                               " but the run's model has " + std::to_string(dim));
    }
    x0 = flow.path->start(given.to(at::kFloat)).to(device);
    f.n = x0.size(0);
  } else {
    x0 = flow.path->start(source(f.n, gen)).to(device);
  }
  fm::SolveResult result = solve(x0, false);
  at::Tensor x = result.x.to(at::kCPU);
  fm::io::save_array(f.out, x);
  const std::string png = with_extension(f.out, ".png");
  fm::io::PlotStyle style;
  std::string how = f.solver == "dopri5" ? "dopri5" : f.solver + " " + std::to_string(f.steps) + " steps";
  if (sde) {
    char noise[48];
    std::snprintf(noise, sizeof noise, ", noise %.3g", f.sde_noise);
    how += noise;
  }
  if (!f.scheduler.empty()) how += ", " + flow.scheduler;
  style.title = "samples: " + how + ", NFE " + std::to_string(result.nfe);
  const bool planar = x.size(1) == 2;  // pictures for 2-D points only
  if (planar) fm::io::write_scatter_png(png, {{x, {214, 39, 40}, "generated", 0.3f}}, style);
  // What produced the samples, beside them: solver, settings and the exact NFE.
  json info = {{"run", f.run}, {"n", f.n}, {"solver", f.solver}, {"nfe", result.nfe}, {"steps", result.steps},
               {"seed", f.common.seed}, {"scheduler", flow.scheduler}};
  if (f.solver == "dopri5") {
    info["atol"] = f.atol;
    info["rtol"] = f.rtol;
    info["rejected_steps"] = result.rejected_steps;
  }
  if (sde) info["sde_noise"] = f.sde_noise;
  const std::string info_path = with_extension(f.out, ".json");
  write_json_atomic(info_path, info);
  std::cout << "wrote " << f.out << " (" << x.size(0) << " x " << x.size(1) << ", float32), "
            << (planar ? png + " and " : std::string()) << info_path << "; NFE " << result.nfe << "\n";
  if (f.trajectories > 0 && planar) {
    const int64_t k = std::min(f.trajectories, f.n);
    auto traj = solve(x0.slice(0, 0, k), true);
    const std::string tpng = with_extension(f.out, "") + "-trajectories.png";
    fm::io::PlotStyle ts;
    ts.title = std::to_string(k) + " trajectories, " + how;
    fm::io::write_trajectories_png(tpng, at::stack(traj.trajectory).to(at::kCPU), ts);
    std::cout << "wrote " << tpng << "\n";
  }
  return kExitOk;
}

}  // namespace

Command register_sample(CLI::App& root) {
  auto flags = std::make_shared<SampleFlags>();
  SampleFlags& f = *flags;
  CLI::App* app = root.add_subcommand(
      "sample", "Generate samples from a trained run (NumPy .npy, PNG scatter plot, and a .json with the solver and NFE)");
  app->add_option("--run", f.run, "run folder written by 'flowmatch train'");
  add_model_file_flags(app, f.model_file, f.source);
  auto* n = app->add_option("--n", f.n, "number of samples")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--initial", f.initial, "start from these source points (n, D), .npy or .pt, instead of drawing --n")->excludes(n);
  app->add_option("--steps", f.steps, "solver steps from t=0 to t=1")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--solver", f.solver,
                  "euler, midpoint, heun, rk4 (fixed --steps), dopri5 (adaptive, --atol/--rtol) or sde (Euler-Maruyama, --steps)")
      ->check(CLI::IsMember({"euler", "midpoint", "heun", "rk4", "dopri5", "sde"}))->capture_default_str();
  app->add_option("--sde-noise", f.sde_noise, "sde: diffusion g(t) = this x sigma_t of the run's path (same marginals)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--atol", f.atol, "dopri5 absolute tolerance")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--rtol", f.rtol, "dopri5 relative tolerance")->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--out", f.out, "output .npy, or .pt (PyTorch) by extension (float32, shape (n, D)); default RUN/samples.npy; PNG and .json beside it");
  app->add_option("--checkpoint", f.checkpoint, "checkpoint file (default: the run's newest)");
  app->add_option("--scheduler", f.scheduler,
                  "sample with another scheduler than the run was trained with (schedule transform; default parameters)")
      ->check(CLI::IsMember(flowmatch::scheduler_names()));
  app->add_option("--trajectories", f.trajectories, "also plot this many trajectories to OUT-trajectories.png")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--class", f.which_class,
                  "image runs: all (one row per class), none (unconditional), a label number or a class name")
      ->capture_default_str();
  app->add_option("--guidance", f.guidance, "image runs: classifier-free guidance scale w: (1 + w) v(x, t, c) - w v(x, t, none)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->footer("Image runs default to --solver midpoint --steps 20 and --n 10 per class, and write a PNG grid.");
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_sample(*flags, app); }};
}

}  // namespace fmcli
