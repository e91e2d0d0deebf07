// flowmatch distill: one-step generation (rectified flow's distillation). Draws noise, solves the
// run's ODE for the (noise, sample) pairs and trains a model on them at t = 0 only, so that a single
// Euler step x0 + v(x0, 0) lands where the run's ODE would.

#include <iostream>

#include "common.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct DistillFlags {
  CommonFlags common;
  RunFlags run;
  fm::PairGenerationOptions pairs;
  std::string out;
  bool quiet = false;
};

int run_distill(DistillFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  check_solver_flags(f.pairs.solver, app);
  fm::Run parent = open_run(f.run);
  ensure_new_output_folder(f.out);
  f.pairs.seed = f.common.seed + 7919ULL;
  f.pairs.distill = true;
  json pairs_info;
  const fm::TrainOutcome outcome = parent.train_on_own_pairs(f.out, f.pairs, training_callbacks(parent, f.quiet, device), pairs_info);
  const int code = report_training(fm::Run::open(f.out), outcome, "flowmatch train --out " + f.out + " --resume");
  if (code == kExitOk) std::cout << "distilled: sample in one step with 'flowmatch sample --run " << f.out << " --steps 1'\n";
  return code;
}

}  // namespace

Command register_distill(CLI::App& root) {
  auto flags = std::make_shared<DistillFlags>();
  DistillFlags& f = *flags;
  CLI::App* app = root.add_subcommand("distill", "One-step generation: train on a run's own (noise, sample) pairs at t = 0 so one Euler step maps noise to data");
  app->footer("Typically the last round of 'flowmatch reflow' (the straighter the flow, the easier the one-step map).\n"
              "OUT is a normal run with its pairs (pairs-x0.npy, pairs-x1.npy); sample it with --steps 1.");
  add_run_flags(app, f.run, true);
  app->add_option("--out", f.out, "run folder to create")->required();
  add_pair_flags(app, f.pairs);
  app->add_flag("--quiet", f.quiet, "no progress lines");
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_distill(*flags, app); }};
}

}  // namespace fmcli
