// flowmatch reflow: rectified flow. Each round draws noise, solves the parent model's ODE to get
// (noise, sample) pairs, stores them, and trains the next model on them (from the parent's weights).
// Round r trains the (r+1)-rectified flow (the parent is the 1-rectified flow) in a normal run folder
// OUT/rectified-(r+1).

#include <filesystem>
#include <iostream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "common.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/reflow.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fs = std::filesystem;
namespace fm = flowmatch;

namespace {

struct ReflowFlags {
  CommonFlags common;
  PairGeneration generation;
  std::string run, out, model_file, source, target;
  int64_t rounds = 1;
  bool quiet = false;
};

json round_config(const RunFolder& parent, const json& pairs_info, int64_t train_steps, uint64_t seed, bool distill) {
  json cfg = parent.config;
  cfg.erase("stand_in");
  cfg["path"] = fm::CondOTPath(fm::CondOTPathOptions().sigma(0.0)).spec();
  cfg["prediction"] = "velocity";
  auto times = fm::TimeSamplingOptions();
  if (distill) times.distribution(fm::TimeDistribution::Constant).constant_time(0.0);
  cfg["time_sampling"] = fm::to_json(times);
  cfg["coupling"] = {{"type", "stored-pairs"}};
  cfg["data"]["pairs"] = pairs_info;
  if (distill) cfg["distilled_from"] = parent.dir;
  if (train_steps > 0) cfg["training"]["steps"] = train_steps;
  cfg["training"]["seed"] = seed;
  return cfg;
}

}  // namespace

void check_pair_generation(const PairGeneration& g, CLI::App* app) {
  if (g.solver != "dopri5" && (app->count("--atol") || app->count("--rtol"))) {
    throw UsageError("--atol/--rtol apply to --solver dopri5, not " + g.solver);
  }
  if (g.solver == "dopri5" && app->count("--steps")) throw UsageError("--steps applies to fixed-step solvers, not dopri5");
}

void add_pair_generation_flags(CLI::App* app, PairGeneration& g) {
  app->add_option("--pairs", g.pairs, "noise-sample pairs generated from the parent model")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--solver", g.solver, "solver that generates the pairs: euler, midpoint, heun, rk4 or dopri5")
      ->check(CLI::IsMember({"euler", "midpoint", "heun", "rk4", "dopri5"}))->capture_default_str();
  app->add_option("--steps", g.steps, "fixed-step solvers: steps from t=0 to t=1")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--atol", g.atol, "dopri5 absolute tolerance")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--rtol", g.rtol, "dopri5 relative tolerance")->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--train-steps", g.train_steps, "training steps (default: the parent's)")->check(CLI::PositiveNumber);
  app->add_flag("--from-scratch", g.from_scratch, "train from fresh weights instead of the parent's");
}

int train_on_model_pairs(const RunFolder& parent, const std::string& dir, const PairGeneration& g, uint64_t seed,
                         bool distill, const TrainRunOptions& how, json& pairs_info) {
  const bool scripted = parent.config.value("stand_in", false);
  const std::string parent_dir = scripted ? parent.config["model"]["file"].get<std::string>() : parent.dir;
  auto model = load_run_model(parent, "", how.device);
  RunFlow flow = run_flow(parent, model);
  // The pairs start where the parent's samples start; the new run's straight path starts at its x0.
  const double start_scale = flow.path->start(at::ones({1, 1}, at::kDouble)).item<double>();
  if (std::abs(start_scale - 1.0) > 1e-12) {
    throw UsageError("'" + parent_dir + "' starts sampling at " + std::to_string(start_scale) +
                     " x source; rectified flow needs a path that starts at the source itself (sigma_0 = 1)");
  }
  const auto solver = fm::SolverOptions().method(fm::solver_method_from_string(g.solver)).steps(g.steps).atol(g.atol).rtol(g.rtol);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor x0 = run_sampler(parent, "source")(g.pairs, gen).to(how.device);
  if (!how.quiet) {
    std::cerr << g.pairs << " pairs from '" << parent_dir << "' with "
              << (g.solver == "dopri5" ? "dopri5" : g.solver + " " + std::to_string(g.steps) + " steps") << "\n";
  }
  fm::ReflowPairs pairs;
  {
    c10::InferenceMode guard;
    pairs = fm::generate_reflow_pairs(flow.field, x0, solver);
  }
  fs::create_directories(dir);
  fm::io::save_npy(dir + "/pairs-x0.npy", pairs.x0.to(at::kCPU, at::kFloat));
  fm::io::save_npy(dir + "/pairs-x1.npy", pairs.x1.to(at::kCPU, at::kFloat));
  pairs_info = {{"x0", "pairs-x0.npy"}, {"x1", "pairs-x1.npy"}, {"from", parent_dir}, {"n", g.pairs},
                {"solver", g.solver}, {"nfe", pairs.nfe}, {"seed", seed}};
  if (g.solver == "dopri5") {
    pairs_info["atol"] = g.atol;
    pairs_info["rtol"] = g.rtol;
  } else {
    pairs_info["steps"] = g.steps;
  }
  RunFolder child{dir, round_config(parent, pairs_info, g.train_steps, seed + 1, distill)};
  TrainRunOptions with_weights = how;
  if (!g.from_scratch) with_weights.initial = model;
  return run_training(child, "", with_weights);
}

namespace {

int run_reflow(ReflowFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  check_pair_generation(f.generation, app);
  RunFolder first = resolve_run(f.run, f.model_file, f.source, f.target);  // named before anything is written
  ensure_new_output_folder(f.out, " (a round can be resumed with 'flowmatch train --out OUT/rectified-K --resume')");
  install_interrupt_handlers();
  TrainRunOptions how;
  how.quiet = f.quiet;
  how.device = device;
  json summary = {{"parent", f.model_file.empty() ? f.run : f.model_file}, {"rounds", json::array()}};
  std::string parent_dir = f.run;
  for (int64_t round = 1; round <= f.rounds; ++round) {
    // Liu et al.'s numbering: the parent of round 1 is the 1-rectified flow; round r trains the (r+1)-rectified flow.
    const std::string dir = (fs::path(f.out) / ("rectified-" + std::to_string(round + 1))).string();
    if (!f.quiet) std::cerr << "round " << round << "/" << f.rounds << " (" << dir << "): ";
    json pairs_info;
    const RunFolder parent = round == 1 ? first : open_run(parent_dir);
    const int code = train_on_model_pairs(parent, dir, f.generation, f.common.seed + 1000003ULL * static_cast<uint64_t>(round),
                                          /*distill=*/false, how, pairs_info);
    if (code != kExitOk) return code;
    summary["rounds"].push_back({{"round", round}, {"rectified", round + 1}, {"run", dir}, {"pairs", pairs_info}});
    write_json_atomic((fs::path(f.out) / "reflow.json").string(), summary);
    parent_dir = dir;
  }
  std::cout << "reflow: " << f.rounds << " round(s) in " << f.out << "/rectified-K (K = 2.." << f.rounds + 1
            << "); evaluate each with 'flowmatch eval --run " << f.out << "/rectified-K', distil one with "
            << "'flowmatch distill --run " << parent_dir << " --out DIR'\n";
  return kExitOk;
}

}  // namespace

Command register_reflow(CLI::App& root) {
  auto flags = std::make_shared<ReflowFlags>();
  ReflowFlags& f = *flags;
  CLI::App* app = root.add_subcommand(
      "reflow", "Rectified flow: retrain on the model's own (noise, sample) pairs, round after round (straighter paths)");
  app->footer(
      "--run is the 1-rectified flow. Round r writes OUT/rectified-(r+1): pairs-x0.npy and pairs-x1.npy (the noise\n"
      "and what the parent's ODE makes of it) and a normal run trained on them (straight path, sigma 0), initialised\n"
      "from the parent's weights. OUT/reflow.json lists the rounds. Evaluate with 'flowmatch eval --run OUT/rectified-2'.");
  app->add_option("--run", f.run, "the run to rectify (round 1's parent)");
  add_model_file_flags(app, f.model_file, f.source);
  app->add_option("--target", f.target, "with --model-file: the data set evaluations compare with")
      ->check(CLI::IsMember(flowmatch::data::toy2d_names()));
  app->add_option("--out", f.out, "folder for the rounds (must not exist)")->required();
  app->add_option("--rounds", f.rounds, "reflow rounds, each from the previous")->check(CLI::PositiveNumber)->capture_default_str();
  add_pair_generation_flags(app, f.generation);
  app->add_flag("--quiet", f.quiet, "no progress lines");
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_reflow(*flags, app); }};
}

}  // namespace fmcli
