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
  PairGeneration generation;
  std::string run, out, model_file, source, target;
  bool quiet = false;
};

int run_distill(DistillFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  check_pair_generation(f.generation, app);
  RunFolder parent = resolve_run(f.run, f.model_file, f.source, f.target);
  ensure_new_output_folder(f.out);
  install_interrupt_handlers();
  TrainRunOptions how;
  how.quiet = f.quiet;
  how.device = device;
  json pairs_info;
  const int code = train_on_model_pairs(parent, f.out, f.generation, f.common.seed + 7919ULL, /*distill=*/true, how, pairs_info);
  if (code == kExitOk) std::cout << "distilled: sample in one step with 'flowmatch sample --run " << f.out << " --steps 1'\n";
  return code;
}

}  // namespace

Command register_distill(CLI::App& root) {
  auto flags = std::make_shared<DistillFlags>();
  DistillFlags& f = *flags;
  CLI::App* app = root.add_subcommand(
      "distill", "One-step generation: train on a run's own (noise, sample) pairs at t = 0 so one Euler step maps noise to data");
  app->footer("Typically the last round of 'flowmatch reflow' (the straighter the flow, the easier the one-step map).\n"
              "OUT is a normal run with its pairs (pairs-x0.npy, pairs-x1.npy); sample it with --steps 1.");
  app->add_option("--run", f.run, "the run whose ODE is distilled");
  add_model_file_flags(app, f.model_file, f.source);
  app->add_option("--target", f.target, "with --model-file: the data set evaluations compare with")
      ->check(CLI::IsMember(flowmatch::data::toy2d_names()));
  app->add_option("--out", f.out, "run folder to create")->required();
  add_pair_generation_flags(app, f.generation);
  app->add_flag("--quiet", f.quiet, "no progress lines");
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_distill(*flags, app); }};
}

}  // namespace fmcli
