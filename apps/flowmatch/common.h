#pragma once
// Shared pieces of the flowmatch subcommands: flags every command takes, the run folder,
// terminal output and the error types that decide the exit code.

#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "config_file.h"
#include "flowmatch/data/images.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/distributed.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/paths.h"
#include "flowmatch/train.h"
#include "flowmatch/velocity_field.h"

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

/// --threads, --device, --seed.
struct CommonFlags {
  int threads = 0;
  std::string device = "cpu";
  uint64_t seed = 0;
};
void add_common_flags(CLI::App* app, CommonFlags& flags);
/// Sets LibTorch's thread count and returns the device (UsageError if CUDA is unavailable).
c10::Device apply_common_flags(const CommonFlags& flags);

/// A run folder (runs/NAME) as written by `flowmatch train`.
struct RunFolder {
  std::string dir;
  json config;
  std::string config_path() const { return dir + "/config.json"; }
  std::string checkpoint_dir() const { return dir + "/checkpoints"; }
  std::string metrics_jsonl() const { return dir + "/metrics.jsonl"; }
  std::string metrics_json() const { return dir + "/metrics.json"; }
};
/// Reads runs/NAME/config.json; UsageError when the folder or file is missing, runtime_error if malformed.
RunFolder open_run(const std::string& dir);
/// What `--run RUN` or `--model-file v.pt` names. For a TorchScript model the stand-in run has
/// config {model: {"type": "torchscript", "file": F}, a straight path (sigma 0), velocity prediction,
/// data: {source, target}} and dir "." (outputs go to the current folder unless given).
RunFolder resolve_run(const std::string& run, const std::string& model_file, const std::string& source,
                      const std::string& target);
/// Adds --model-file and --source (with --run it is an error to give either).
void add_model_file_flags(CLI::App* app, std::string& model_file, std::string& source);

/// The newest checkpoint of a run; runtime_error when there is none.
std::string latest_checkpoint(const RunFolder& run);
/// The run's trained network (EMA weights when kept) from `checkpoint` (or the newest), on `device`;
/// for a TorchScript stand-in, the scripted model.
std::shared_ptr<flowmatch::models::VelocityModel> load_run_model(const RunFolder& run, const std::string& checkpoint,
                                                                 const c10::Device& device);
/// How a run's model is sampled: its velocity field (converted from the run's prediction target,
/// and moved to another scheduler when asked) and the path whose t = 0 end sampling starts from.
struct RunFlow {
  flowmatch::VelocityField field;
  std::shared_ptr<flowmatch::ProbabilityPath> path;
  std::string prediction;  ///< what the network predicts
  std::string scheduler;   ///< the scheduler sampled with
};
/// `scheduler`: empty for the run's own, else a scheduler name (condot, cosine, vp, ...) with its
/// default parameters (UsageError if unknown or if the run's path has no scheduler).
/// `network`: the network's output as a field when it is not plain `model` (classifier-free guidance).
RunFlow run_flow(const RunFolder& run, std::shared_ptr<flowmatch::models::VelocityModel> model,
                 const std::string& scheduler = "", flowmatch::VelocityField network = {});
/// How `run_training` behaves beyond the run's config.
struct TrainRunOptions {
  bool quiet = false;
  c10::Device device = c10::kCPU;
  /// Weights to start from (reflow, distill); ignored when resuming.
  std::shared_ptr<flowmatch::models::VelocityModel> initial;
  /// Data-parallel group (train --distributed): only its rank 0 writes files and shows progress.
  std::shared_ptr<flowmatch::distributed::DataParallel> group;
};
/// The training problem a run's config describes: toy-data samplers and a coupling, or the stored
/// pairs of a rectified-flow round (data.pairs: {"x0": file, "x1": file}, relative to the run folder).
flowmatch::FlowMatchingProblem problem_from_config(const RunFolder& run);
/// Trains the run in `run.config` (resuming from `resume_from` when not empty): writes config.json,
/// checkpoints, metrics.jsonl and loss.png, shows progress, handles Ctrl-C (exit 130).
int run_training(RunFolder& run, const std::string& resume_from, const TrainRunOptions& how);

/// How rectified flow draws (noise, sample) pairs from a parent model, and trains on them.
struct PairGeneration {
  int64_t pairs = 50000;
  std::string solver = "rk4";
  int64_t steps = 25;
  double atol = 1e-5, rtol = 1e-5;
  int64_t train_steps = 0;  ///< 0: the parent's
  bool from_scratch = false;
};
void add_pair_generation_flags(CLI::App* app, PairGeneration& generation);
/// UsageError for tolerance flags with a fixed-step solver and the reverse.
void check_pair_generation(const PairGeneration& generation, CLI::App* app);
/// Draws `pairs` source points (seeded), solves the parent's ODE, stores DIR/pairs-x0.npy and
/// pairs-x1.npy and trains a run in DIR on them from the parent's weights: a reflow round (straight
/// path, uniform t) or, with `distill`, one-step distillation (t = 0). `pairs_info` gets data.pairs.
int train_on_model_pairs(const RunFolder& parent, const std::string& dir, const PairGeneration& generation,
                         uint64_t seed, bool distill, const TrainRunOptions& how, json& pairs_info);

/// Whether the run trains on images (data.image_shape is set: a U-Net on flattened images in [−1, 1]).
bool is_image_run(const RunFolder& run);
/// The run's image data set ("train" or "test" split; an image folder has one split and returns it
/// for both). runtime_error naming the files when they cannot be read.
flowmatch::data::ImageDataset load_run_images(const RunFolder& run, const std::string& split);
/// Samplers for the run's source and target data.
flowmatch::data::PointSampler run_sampler(const RunFolder& run, const std::string& which);

void write_json_atomic(const std::string& path, const json& value);

/// Replaces the extension of `path` (e.g. samples.npy → samples.png).
std::string with_extension(const std::string& path, const std::string& extension);
std::string format_duration(double seconds);
/// For commands that create a run folder: UsageError when `out` exists and is not empty (`hint`
/// appended) or its parent cannot be written.
void ensure_new_output_folder(const std::string& out, const std::string& hint = "");
/// Makes the parent folder of `path` (UsageError if it cannot be written).
void ensure_parent_writable(const std::string& path);

/// SIGINT/SIGTERM set this flag while installed; a second signal exits at once.
void install_interrupt_handlers();
bool interrupted();


}  // namespace fmcli
