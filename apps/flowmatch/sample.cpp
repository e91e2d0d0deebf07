// flowmatch sample: draw samples from a trained run with any registered solver; writes .npy (or .pt),
// the domain's pictures and a .json with the solver and NFE.

#include <iostream>

#include "common.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct SampleFlags {
  CommonFlags common;
  RunFlags run;
  fm::SampleOptions options;
  std::string out, initial;
};

int run_sample(SampleFlags& f, CLI::App* app) {
  fm::SampleOptions& o = f.options;
  o.device = apply_common_flags(f.common);
  o.seed = f.common.seed;
  o.checkpoint = f.run.checkpoint;
  fm::Run run = open_run(f.run);
  if (f.out.empty()) f.out = run.dir() + "/samples.npy";
  check_solver_flags(o.solver.empty() ? "euler" : o.solver, app, /*steps_are_fixed_step_only=*/false);
  if (!f.initial.empty()) o.initial = fm::data::load_point_cloud(f.initial, "--initial");
  const fm::SampleResult samples = run.sample(o);
  const auto files = run.write_samples(f.out, samples, o);
  std::cout << "wrote " << files[0] << " (" << samples.x.size(0) << " x " << samples.x.size(1) << ", " << (samples.x.scalar_type() == at::kLong ? "int64 tokens" : "float32") << ")";
  for (size_t k = 1; k < files.size(); ++k) std::cout << (k + 1 == files.size() ? " and " : ", ") << files[k];
  std::cout << "; NFE " << samples.nfe << (o.guidance > 0 ? " (each a guided pair of network calls on a doubled batch)" : "") << "\n";
  // Text samples are shown as well as written.
  for (const auto& file : files) {
    if (file.size() > 4 && file.compare(file.size() - 4, 4, ".txt") == 0) std::cout << fm::io::read_file(file);
  }
  return kExitOk;
}

}  // namespace

Command register_sample(CLI::App& root) {
  auto flags = std::make_shared<SampleFlags>();
  SampleFlags& f = *flags;
  fm::SampleOptions& o = f.options;
  CLI::App* app = root.add_subcommand("sample", "Generate samples from a trained run (.npy or .pt, a picture, and a .json with the solver and NFE)");
  add_run_flags(app, f.run, false);
  std::string solvers;
  for (const auto& name : fm::solver_names()) solvers += (solvers.empty() ? "" : ", ") + name;
  auto* n = app->add_option("--n", o.n, "number of samples (default: 10000 points, or 10 per class for images)")->check(positive_number());
  app->add_option("--initial", f.initial, "start from these source points (n, D), .npy or .pt, instead of drawing --n")->excludes(n);
  app->add_option("--steps", o.steps, "solver steps from t=0 to t=1 (default 100; images 20)")->check(positive_number());
  app->add_option("--time-shift", o.time_shift,
                  "fixed-step solvers: SD3's time shift s of the grid, sigma' = s sigma / (1 + (s - 1) sigma) with sigma = 1 - t "
                  "(s > 1: more steps near the noise; SD3: sqrt(pixels / base pixels))")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app->add_option("--corrector", o.corrector,
                  "ctmc-euler: corrector schedule A[:a[:b]], c(t) = A t^a (1-t)^b, adding divergence-free jumps (Gat et al.); default none");
  app->add_option("--solver", o.solver, "a solver: " + solvers + " (default euler; images midpoint)")->check(CLI::IsMember(fm::solver_names()));
  app->add_option("--sde-noise", o.noise_scale, "sde: diffusion g(t) = this x sigma_t of the run's path (same marginals); reverse-sde: this x w(t), DDPM's reverse SDE at 1; ancestral: DDIM's eta (1: DDPM's ancestral sampler, 0: DDIM)")
      ->check(non_negative_number())->capture_default_str();
  app->add_option("--atol", o.atol, "dopri5 absolute tolerance")->check(positive_number())->capture_default_str();
  app->add_option("--rtol", o.rtol, "dopri5 relative tolerance")->check(non_negative_number())->capture_default_str();
  app->add_option("--error-norm", o.error_norm,
                  "dopri5: sample (each sample's error within the tolerances) or batch (the RMS over the batch, torchdiffeq's: fewer steps)")
      ->check(CLI::IsMember({"sample", "batch"}))->capture_default_str();
  app->add_option("--out", f.out, "output .npy or .pt (float32, shape (n, D); token runs: int64); default RUN/samples.npy; picture and .json beside it");
  app->add_option("--scheduler", o.scheduler, "sample with another scheduler than the run was trained with (schedule transform)")
      ->check(CLI::IsMember(fm::scheduler_names()));
  app->add_option("--trajectories", o.trajectories, "2-D runs: also plot this many trajectories to OUT-trajectories.png")
      ->check(non_negative_number())->capture_default_str();
  auto* which = app->add_option("--class", o.which_class, "class-conditional runs: all (one row per class), none, a label number or a class name")
      ->capture_default_str();
  app->add_option("--prompt", o.which_class,
                  "caption runs (--data fashion-mnist-captions): the caption to draw, 'a DARKNESS SIZE CLASS' (dark|grey|light, "
                  "small|medium|large; words outside the captions' vocabulary are named)")
      ->excludes(which);
  app->add_option("--guidance", o.guidance, "class-conditional runs: classifier-free guidance w: (1 + w) v(x, t, c) - w v(x, t, none)")
      ->check(non_negative_number())->capture_default_str();
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_sample(*flags, app); }};
}

}  // namespace fmcli
