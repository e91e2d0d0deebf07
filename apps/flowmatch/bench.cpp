// flowmatch bench: the benchmark set (flowmatch/benchmarks.h, docs/BENCHMARKS.md), one JSON object per case.

#include <iostream>

#include "common.h"
#include "flowmatch/benchmarks.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct BenchFlags {
  CommonFlags common;
  std::string out;
  std::vector<std::string> cases;
  fm::benchmarks::BenchmarkOptions options;
};

int run_bench(BenchFlags& f) {
  f.options.device = apply_common_flags(f.common);
  const json all = fm::benchmarks::run(f.cases, f.options, [](const json& row) { std::cout << row.dump() << std::endl; });
  if (!f.out.empty()) fm::write_json_file(f.out, all);
  return kExitOk;
}

}  // namespace

Command register_bench(CLI::App& root) {
  auto flags = std::make_shared<BenchFlags>();
  BenchFlags& f = *flags;
  CLI::App* app = root.add_subcommand("bench", "Run the benchmark set and print one JSON object per case");
  app->footer("Cases: train-independent, train-exact-ot (the setting of ../shared/bench/ref_cfm_2d.py), sample-euler100,\n"
              "sample-dopri5 (batch 10 000, the trained independent model), likelihood-exact (2-D, Dopri5 1e-5, forward-mode\n"
              "and autograd divergence), likelihood-fixed (ref_likelihood_2d.py's weights and points from --weights: RK4 20 steps),\n"
              "coupling (exact OT, batch 256 and 1024), gemm-peak, mlp-roofline (training step FLOP/s vs the GEMM peak,\n"
              "by LibTorch's autograd and Adam and by the trainer's hand-written backward and fused Adam),\n"
              "unet-train (the Fashion-MNIST U-Net, batch 64, images/s), unet-sample (guided w = 2, midpoint 10 steps, batch 500),\n"
              "policy-latency (ref_policy_latency.py's action-chunk policy at batch 1, 10 Euler steps: median microseconds),\n"
              "dopri5-norms (NFE and error of Dopri5 with the per-sample and the batch RMS error norm, random 3x64 MLP field),\n"
              "unet-twin (writes unet-sample's U-Net and a probe to --save-weights for bench/unet_twin.py, the PyTorch twin).\n"
              "Threads default to 1 here (--threads N to change). --device cuda runs unet-train, unet-sample, sample-euler100 and\n"
              "policy-latency (name them with --case); the last two also time the solve replayed as one CUDA graph.");
  app->add_option("--out", f.out, "also write all cases as a JSON array to this file");
  app->add_option("--case", f.cases, "cases to run (repeatable; default: all)")->check(CLI::IsMember(fm::benchmarks::case_names()));
  app->add_option("--train-steps", f.options.train_steps, "timed training steps (exact-ot: a quarter)")->check(positive_number())->capture_default_str();
  app->add_option("--repeats", f.options.repeats, "timed repetitions (the best is kept for sampling)")->check(positive_number())->capture_default_str();
  app->add_option("--weights", f.options.weights,
                  "likelihood-fixed and dopri5-norms: the field and points of ../shared/bench/ref_likelihood_2d.py --save-weights FILE.pt\n"
                  "(runs likelihood-fixed too; dopri5-norms solves that field, as bench/dopri5_torchdiffeq.py gives it to torchdiffeq)");
  app->add_option("--save-weights", f.options.save_weights,
                  "unet-twin: write the U-Net's weights and a probe for bench/unet_twin.py to this .pt file (runs that case too)");
  app->add_flag("--autocast-bf16", f.options.autocast_bf16, "unet-train: the forward pass and loss under autocast to bfloat16");
  f.common.threads = 1;  // before add_common_flags, so that --help shows it
  add_common_flags(app, f.common);
  return {app, [flags] { return run_bench(*flags); }};
}

}  // namespace fmcli
