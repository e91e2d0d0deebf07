#pragma once
// What the flowmatch subcommands share: the flags every command takes, opening a run (or a model
// file), printing training progress, exit codes and the interrupt flag. The work itself is done by
// the library (flowmatch/run.h); the subcommands parse flags and print.

#include <functional>
#include <map>
#include <vector>
#include <string>

#include <CLI/CLI.hpp>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "config_file.h"
#include "flowmatch/run.h"

namespace fmcli {

using nlohmann::json;

/// Exit codes (shared/DESIGN.md).
constexpr int kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitInterrupted = 130;

/// One subcommand: its CLI11 app and what to run once flags are parsed.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command register_train(CLI::App& root);
Command register_sample(CLI::App& root);
Command register_eval(CLI::App& root);
Command register_likelihood(CLI::App& root);
Command register_reflow(CLI::App& root);
Command register_distill(CLI::App& root);
Command register_export(CLI::App& root);
Command register_launch(CLI::App& root);
Command register_bench(CLI::App& root);
Command register_classifier(CLI::App& root);
Command register_autoencoder(CLI::App& root);
Command register_compare(CLI::App& root);

/// --threads, --device, --seed (and --config, read before parsing).
struct CommonFlags {
  int threads = 0;
  std::string device = "cpu";
  std::string seed_text = "0";
  uint64_t seed = 0;  ///< set by apply_common_flags from seed_text
};
void add_common_flags(CLI::App* app, CommonFlags& flags);
/// Checks --seed (an integer in [0, 2^63 - 1]), sets LibTorch's thread count and returns the device
/// (UsageError if CUDA is unavailable).
c10::Device apply_common_flags(CommonFlags& flags);

/// Number checks whose messages name the value and the expectation (CLI11's print the range's
/// bound, 1.8e308, in 309 digits).
CLI::Validator positive_number();
CLI::Validator non_negative_number();

/// --run, or --model-file with --source (and, where a command takes it, --target).
struct RunFlags {
  std::string run, model_file, source, target, checkpoint;
};
/// Adds --run, --model-file, --source, --checkpoint, and --target when `with_target`.
void add_run_flags(CLI::App* app, RunFlags& flags, bool with_target);
/// The run the flags name (UsageError for neither or both of --run and --model-file, or --source or
/// --target beside --run).
flowmatch::Run open_run(const RunFlags& flags);

/// How `Run::train` reports for `run`: progress lines on stderr at most every 2 s (and at the end)
/// unless quiet; Ctrl-C stops with a checkpoint. Installs the interrupt handlers.
flowmatch::TrainRunOptions training_callbacks(const flowmatch::Run& run, bool quiet, const c10::Device& device,
                                              std::shared_ptr<flowmatch::distributed::DataParallel> group = nullptr);
/// Prints how a training call ended; returns the exit code (130 when interrupted).
int report_training(const flowmatch::Run& run, const flowmatch::TrainOutcome& outcome, const std::string& resume_hint);

/// Each run setting's flag values as typed (setting name -> values).
using SettingValues = std::map<std::string, std::vector<std::string>>;
/// A flag for every run setting (flowmatch::run_settings(), except seed, a common flag, and `skip`),
/// its help with the default; the values typed land in `values`.
void add_run_setting_flags(CLI::App* app, SettingValues& values, const std::vector<std::string>& skip = {});
/// The settings given on the command line (and --seed), as Run::prepare takes them; UsageError names a
/// value that is not a number where one is expected.
json run_settings_from_flags(CLI::App* app, SettingValues& values, const CommonFlags& common);

/// reflow and distill: how pairs are drawn (--pairs, --solver, --steps, --atol, --rtol, --train-steps,
/// --from-scratch).
void add_pair_flags(CLI::App* app, flowmatch::PairGenerationOptions& pairs);
/// UsageError for --atol/--rtol with a fixed-step solver and, when `steps_are_fixed_step_only`, for
/// --steps with an adaptive one.
void check_solver_flags(const std::string& solver, CLI::App* app, bool steps_are_fixed_step_only = true);

std::string format_duration(double seconds);
/// UsageError when `out` exists and is not empty (`hint` appended) or its parent cannot be written.
void ensure_new_output_folder(const std::string& out, const std::string& hint = "");

/// Ends a progress line left open on a terminal (before an error or a result is printed).
void end_progress_line();
extern bool g_progress_open;

/// SIGINT/SIGTERM set this flag while installed; a second signal exits at once.
void install_interrupt_handlers();
bool interrupted();

}  // namespace fmcli
