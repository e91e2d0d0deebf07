#pragma once
/// \file
/// A run: one trained model in a folder (runs/NAME) with everything that describes it.
///
///     runs/NAME/config.json          the resolved configuration (data, model, path, coupling,
///                                    time sampling, objective, training, and the settings it came from)
///     runs/NAME/checkpoints/step-N.ckpt
///     runs/NAME/metrics.jsonl, loss.png, metrics.json, pictures
///
/// `Run` is what the command line, the Python module and C++ programs share: settings are resolved
/// into a config (`make_run_config`), a run is created or resumed (`Run::prepare`), trained
/// (`train`), sampled (`sample`), evaluated (`evaluate`, the domain's protocol) and its likelihood
/// computed (`likelihood`). Settings are named as the `train` flags without dashes ("width",
/// "beta-min", ...); messages name them as flags (`--beta-min`). Errors: std::invalid_argument for
/// bad settings or arguments, std::runtime_error for unreadable files and failed computations.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "flowmatch/domain.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/paths.h"
#include "flowmatch/train.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

namespace distributed {
class DataParallel;
}

/// One setting of a run (a `train` flag): its name, kind ("string", "int", "float", "bool",
/// "ints", "strings"), default (null: none, or chosen from other settings), help line and choices.
struct RunSetting {
  std::string name;
  std::string kind;
  nlohmann::json default_value;
  std::string help;
  std::vector<std::string> choices;
  /// Fixed for the life of the run: resuming with another value is an error.
  bool frozen = true;
};
/// Every setting, in the order --help lists them.
const std::vector<RunSetting>& run_settings();
/// A setting's value from its flag's text (one text; several for "ints" and "strings"; none needed for
/// "bool"): std::invalid_argument naming the flag when a text is not of the setting's kind, out of range
/// for a 64-bit integer, or not a finite number.
nlohmann::json setting_value_from_text(const RunSetting& setting, const std::vector<std::string>& texts);

/// The configuration (config.json) the given settings describe: defaults filled in (the domain's
/// first, then the table's), every value checked, the data read. `settings` holds only what the
/// user gave (a JSON object; keys with dashes or underscores).
nlohmann::json make_run_config(const nlohmann::json& settings);

/// config.json's "validation" for --validate nll (what every checkpoint is scored by: the validation
/// split's NLL, Dopri5 at atol = rtol = `tol` with the batch error norm). std::invalid_argument when the
/// config's data have no validation split or its source no density.
nlohmann::json make_validation_spec(const nlohmann::json& config, double tol);

/// How `Run::train` runs beyond the config.
struct TrainRunOptions {
  c10::Device device = c10::kCPU;
  /// Weights to start from (reflow, distill); ignored when resuming.
  std::shared_ptr<models::VelocityModel> initial;
  /// Data-parallel group: only its rank 0 writes files and reports.
  std::shared_ptr<distributed::DataParallel> group;
  /// Called once before the first step (rank 0) with the run being trained (for reflow and distill: the
  /// new round's run), its network and the step it starts from.
  std::function<void(const Run& run, const models::VelocityModel& model, int64_t step)> started;
  /// Called at every logged step (rank 0), after its metrics.jsonl line is written.
  std::function<void(const TrainProgress&)> progress;
  /// Polled after every step; true stops training with a checkpoint.
  std::function<bool()> should_stop;
  /// Called after each validation (--validate nll; rank 0) with its step, its metrics.jsonl line
  /// (validation_nll, ...) and whether it is the best so far (then kept as checkpoints/best.ckpt).
  std::function<void(int64_t step, const nlohmann::json& line, bool best)> validated;
};

struct TrainOutcome {
  int64_t first_step = 0;  ///< where this call started
  int64_t step = 0;        ///< where it stopped
  int64_t total_steps = 0;
  double seconds = 0;
  std::string last_checkpoint;
  /// --validate nll: the best validation so far ({"step", "validation_nll", ...}, as checkpoints/best.json); null otherwise.
  nlohmann::json best = nullptr;
  bool interrupted() const { return step < total_steps; }
};

/// What `Run::sample` draws. Unset values (0, empty) take the domain's defaults (points: 10 000
/// samples, euler, 100 steps; images: 10 per class, midpoint, 20 steps).
struct SampleOptions {
  int64_t n = 0;
  std::string solver;  ///< a registered solver name (solver_names())
  int64_t steps = 0;
  double atol = 1e-5, rtol = 1e-5;
  std::string error_norm = "sample";  ///< dopri5: sample (every sample's error) or batch (torchdiffeq's RMS)
  double noise_scale = 1.0;  ///< stochastic solvers
  std::string scheduler;     ///< sample under another scheduler (schedule transform)
  at::Tensor initial;        ///< given source points (n, D) instead of drawing n
  uint64_t seed = 0;
  std::string which_class = "all";  ///< class-conditional runs: all, none, a label or a class name
  double guidance = 0;              ///< classifier-free guidance scale
  int64_t trajectories = 0;         ///< also keep this many trajectories (pictured by the domain)
  std::string checkpoint;           ///< default: the newest
  c10::Device device = c10::kCPU;
  int64_t chunk = 500;              ///< samples per solve for conditional runs
  double time_shift = 1.0;          ///< fixed-step solvers: SD3's shift of the time grid (shifted_time_grid)
  std::string corrector;            ///< ctmc-euler: the corrector schedule "A[:a:b]" (corrector_schedule, discrete_path.h)
};

struct SampleResult {
  at::Tensor x;             ///< (n, prod(sample shape)) float32 on the CPU
  at::Tensor labels;        ///< the labels sampled with (conditional runs)
  at::Tensor trajectories;  ///< (T, k, D) when asked
  int64_t nfe = 0, steps = 0, rejected_steps = 0;
  std::string description;  ///< e.g. "euler 100 steps"
  nlohmann::json info;      ///< what produced the samples (solver, NFE, seed, ...), written beside them
};

/// What `Run::evaluate` measures (the domain reads the options that apply to it).
struct EvaluationOptions {
  int64_t n = 2000;              ///< points: samples per W2 estimate
  std::string scheduler;         ///< points: evaluate under another scheduler
  bool solver_sweep = false;     ///< points: W2 against NFE for every solver
  uint64_t seed = 0;
  std::string checkpoint;        ///< default: the newest
  c10::Device device = c10::kCPU;
  // Images.
  std::string classifier = "runs/classifier";
  std::vector<double> guidance_scales{0, 1, 2, 4};
  int64_t accuracy_n = 1000, fd_n = 2000, bpd_n = 200, bpd_steps = 20, sample_steps = 10;
  double fd_guidance = 2;
  std::string sample_solver = "midpoint";
};

/// What `Run::likelihood` computes: log p of `points` (or of n held-out/fresh points of the run's
/// data) by the continuity equation, solved in batches.
struct LikelihoodRequest {
  at::Tensor points;
  std::string data_label;  ///< how the points are named in the result
  std::string target;      ///< draw the points from this toy data set instead of the run's
  std::string split = "test";  ///< the run's own finite data: "test" or "validation" (Domain::validation_split)
  int64_t n = 2000;
  std::string solver = "dopri5";
  int64_t steps = 100;
  double atol = 1e-5, rtol = 1e-5;
  std::string error_norm = "sample";  ///< dopri5: sample (every point's error) or batch (the RMS over a batch)
  std::string divergence = "exact";  ///< or hutchinson
  int64_t probes = 1;
  std::string probe_distribution = "rademacher";
  int64_t batch = 1000;
  int64_t grid = 120;        ///< 2-D data: density map cells per side (0: none)
  std::string density_map;   ///< its PNG (default RUN/density.png)
  std::string checkpoint;
  c10::Device device = c10::kCPU;
  uint64_t seed = 0;
};
struct LikelihoodSummary {
  nlohmann::json result;  ///< nll, nll_stderr, bpd, nfe, ... (likelihood.json)
  at::Tensor log_prob;    ///< per point, float64
};

/// How a run's network is sampled: its velocity field (converted from the run's prediction target,
/// moved to another scheduler when asked) and the path whose t = 0 end sampling starts from.
struct SamplingFlow {
  VelocityField field;
  std::shared_ptr<ProbabilityPath> path;
  std::string prediction;  ///< what the network predicts
  std::string scheduler;   ///< the scheduler sampled with
};

/// How rectified flow draws (noise, sample) pairs from a parent run and trains on them.
struct PairGenerationOptions {
  int64_t pairs = 50000;
  std::string solver = "rk4";
  int64_t steps = 25;
  double atol = 1e-5, rtol = 1e-5;
  int64_t train_steps = 0;  ///< 0: the parent's
  bool from_scratch = false;
  uint64_t seed = 0;
  bool distill = false;  ///< one-step distillation (t = 0 only) instead of a reflow round
};

class Run {
 public:
  /// Opens runs/NAME; std::invalid_argument when the folder or its config.json is missing,
  /// std::runtime_error when config.json is malformed.
  static Run open(const std::string& dir);
  /// A stand-in run for a TorchScript model file (straight path, velocity prediction, `source`
  /// (default gaussian) and, when given, `target`); its folder is ".".
  static Run from_model_file(const std::string& file, const std::string& source = "", const std::string& target = "");
  /// A new run in `dir` from settings (nothing is written until `train`), or with `resume` the run
  /// already there: frozen settings given again must equal the stored ones; steps, log-every,
  /// checkpoint-every and keep may change. The newest intact checkpoint is picked to resume from:
  /// a damaged newest one is an error naming the newest intact one, unless `fallback`, which moves
  /// the damaged ones to checkpoints/damaged/ (said through `report`). Data-parallel: rank 0 decides
  /// and the other ranks receive its result or its error.
  static Run prepare(const std::string& dir, const nlohmann::json& settings, bool resume = false, bool fallback = false,
                     const std::shared_ptr<distributed::DataParallel>& group = nullptr, const ReportFunction& report = {});

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  std::shared_ptr<Domain> domain() const { return domain_; }
  bool is_model_file() const { return config_.value("stand_in", false); }
  std::string config_path() const { return dir_ + "/config.json"; }
  std::string checkpoint_dir() const { return dir_ + "/checkpoints"; }
  std::string metrics_jsonl() const { return dir_ + "/metrics.jsonl"; }
  std::string metrics_json() const { return dir_ + "/metrics.json"; }
  /// The checkpoint `prepare` picked to resume from (empty for a new run).
  const std::string& resume_from() const { return resume_from_; }

  /// The newest checkpoint; std::runtime_error when there is none.
  std::string latest_checkpoint() const;
  /// checkpoints/best.ckpt: the checkpoint with the lowest validation NLL so far (kept by training with
  /// --validate nll; checkpoints/best.json says its step and NLL); std::invalid_argument when there is none.
  std::string best_checkpoint() const;
  std::string best_json() const { return checkpoint_dir() + "/best.json"; }
  /// The step a checkpoint holds: from its name (step-N.ckpt), else from its contents (best.ckpt).
  int64_t checkpoint_step_of(const std::string& checkpoint) const;
  /// The trained network (EMA weights when kept) from `checkpoint` (a file; "best": best_checkpoint();
  /// default: the newest) on `device`;
  /// for a model file, the scripted model.
  std::shared_ptr<models::VelocityModel> model(const std::string& checkpoint = "", const c10::Device& device = c10::kCPU) const;
  /// The velocity field sampling integrates. `scheduler`: another scheduler name to sample under;
  /// `network`: the network's output as a field when it is not plain `model` (guidance).
  SamplingFlow flow(std::shared_ptr<models::VelocityModel> model, const std::string& scheduler = "",
                    VelocityField network = {}) const;
  /// A class-conditional run's guided field for these labels (scale w: (1 + w)·v(c) − w·v(∅)).
  SamplingFlow guided_flow(std::shared_ptr<models::VelocityModel> model, const at::Tensor& labels, double guidance) const;
  /// The training problem the config describes (data read now).
  FlowMatchingProblem problem() const;

  /// Trains (from resume_from() when set): writes config.json, checkpoints, metrics.jsonl, loss.png.
  /// A signal seen by `should_stop` ends it early with a checkpoint (outcome.interrupted()).
  TrainOutcome train(const TrainRunOptions& options = {});
  /// Draws samples with any registered solver.
  SampleResult sample(SampleOptions options) const;
  /// Writes samples as .npy or .pt by extension (refusing other extensions), the domain's pictures
  /// beside it (STEM.png, ...) and STEM.json with `samples.info`; returns the files written.
  std::vector<std::string> write_samples(const std::string& path, const SampleResult& samples, const SampleOptions& options) const;
  /// The domain's evaluation; metrics are also written to `out` (default RUN/metrics.json).
  nlohmann::json evaluate(const EvaluationOptions& options = {}, const std::string& out = "",
                          const ReportFunction& report = {}) const;
  /// Log-likelihoods (needs a source with a known density); writes the density map for 2-D data.
  LikelihoodSummary likelihood(const LikelihoodRequest& request) const;
  /// A reflow round or a distillation from this run into a new run folder `dir`: draws the pairs
  /// (stored there as pairs-x0.npy, pairs-x1.npy), then trains on them (from this run's weights
  /// unless from_scratch). `pairs_info` gets the pairs' description.
  TrainOutcome train_on_own_pairs(const std::string& dir, const PairGenerationOptions& pairs, const TrainRunOptions& how,
                                  nlohmann::json& pairs_info) const;

 private:
  Run(std::string dir, nlohmann::json config);
  std::string dir_;
  nlohmann::json config_;
  std::shared_ptr<Domain> domain_;
  std::string resume_from_;
};

/// Writes JSON to `path` atomically (temporary name, fsync, rename), indented.
void write_json_file(const std::string& path, const nlohmann::json& value);

}  // namespace flowmatch
