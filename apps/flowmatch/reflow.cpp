// flowmatch reflow: rectified flow. Each round draws noise, solves the parent model's ODE to get
// (noise, sample) pairs, stores them, and trains the next model on them (from the parent's weights).
// Round r trains the (r+1)-rectified flow (the parent is the 1-rectified flow) in a normal run folder
// OUT/rectified-(r+1).

#include <filesystem>
#include <iostream>

#include "common.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fs = std::filesystem;
namespace fm = flowmatch;

namespace {

struct ReflowFlags {
  CommonFlags common;
  RunFlags run;
  fm::PairGenerationOptions pairs;
  std::string out;
  int64_t rounds = 1;
  bool quiet = false;
};

}  // namespace

namespace {

int run_reflow(ReflowFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  check_solver_flags(f.pairs.solver, app);
  fm::Run parent = open_run(f.run);  // named before anything is written
  ensure_new_output_folder(f.out, " (a round can be resumed with 'flowmatch train --out OUT/rectified-K --resume')");
  json summary = {{"parent", f.run.model_file.empty() ? f.run.run : f.run.model_file}, {"rounds", json::array()}};
  for (int64_t round = 1; round <= f.rounds; ++round) {
    // Liu et al.'s numbering: the parent of round 1 is the 1-rectified flow; round r trains the (r+1)-rectified flow.
    const std::string dir = (fs::path(f.out) / ("rectified-" + std::to_string(round + 1))).string();
    if (!f.quiet) std::cerr << "round " << round << "/" << f.rounds << " (" << dir << "): " << f.pairs.pairs << " pairs\n";
    json pairs_info;
    fm::PairGenerationOptions g = f.pairs;
    g.seed = f.common.seed + 1000003ULL * static_cast<uint64_t>(round);
    const fm::TrainOutcome outcome = parent.train_on_own_pairs(dir, g, training_callbacks(parent, f.quiet, device), pairs_info);
    fm::Run child = fm::Run::open(dir);
    const int code = report_training(child, outcome, "flowmatch train --out " + dir + " --resume");
    if (code != kExitOk) return code;
    summary["rounds"].push_back({{"round", round}, {"rectified", round + 1}, {"run", dir}, {"pairs", pairs_info}});
    fm::write_json_file((fs::path(f.out) / "reflow.json").string(), summary);
    parent = child;
  }
  std::cout << "reflow: " << f.rounds << " round(s) in " << f.out << "/rectified-K (K = 2.." << f.rounds + 1
            << "); evaluate each with 'flowmatch eval --run " << f.out << "/rectified-K', distil one with "
            << "'flowmatch distill --run " << parent.dir() << " --out DIR'\n";
  return kExitOk;
}

}  // namespace

Command register_reflow(CLI::App& root) {
  auto flags = std::make_shared<ReflowFlags>();
  ReflowFlags& f = *flags;
  CLI::App* app = root.add_subcommand("reflow", "Rectified flow: retrain on the model's own (noise, sample) pairs, round after round (straighter paths)");
  app->footer("--run is the 1-rectified flow. Round r writes OUT/rectified-(r+1): pairs-x0.npy and pairs-x1.npy (the noise\n"
              "and what the parent's ODE makes of it) and a normal run trained on them (straight path, sigma 0), initialised\n"
              "from the parent's weights. OUT/reflow.json lists the rounds. Evaluate with 'flowmatch eval --run OUT/rectified-2'.");
  add_run_flags(app, f.run, true);
  app->add_option("--out", f.out, "folder for the rounds (must not exist)")->required();
  app->add_option("--rounds", f.rounds, "reflow rounds, each from the previous")->check(positive_number())->capture_default_str();
  add_pair_flags(app, f.pairs);
  app->add_flag("--quiet", f.quiet, "no progress lines");
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_reflow(*flags, app); }};
}

}  // namespace fmcli
