#pragma once
/// \file
/// The flow-matching trainer: samples (x₀, x₁), couples them, draws t and x_t on the path,
/// regresses the network on the path velocity, and keeps everything needed to resume exactly
/// (weights, optimizer state, EMA, step, random generator state) in checkpoints.

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <ATen/core/Generator.h>
#include <torch/arg.h>
#include <torch/optim/optimizer.h>

#include "flowmatch/coupling.h"
#include "flowmatch/data/images.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/objective.h"
#include "flowmatch/paths.h"
#include "flowmatch/prediction.h"
#include "flowmatch/time_sampling.h"

namespace flowmatch {

namespace distributed {
class DataParallel;
}

enum class OptimizerKind { Adam, AdamW };
enum class LRSchedule { Constant, Cosine };

OptimizerKind optimizer_kind_from_string(const std::string& name);
std::string to_string(OptimizerKind kind);
LRSchedule lr_schedule_from_string(const std::string& name);
std::string to_string(LRSchedule schedule);

/// Options for `Trainer`.
///
/// Example:
/// ```
/// TrainerOptions().steps(20000).batch_size(256).lr(1e-3).ema_decay(0.999).seed(42)
/// ```
struct TrainerOptions {
  TORCH_ARG(int64_t, steps) = 20000;
  TORCH_ARG(int64_t, batch_size) = 256;
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(OptimizerKind, optimizer) = OptimizerKind::Adam;
  TORCH_ARG(double, weight_decay) = 0.0;
  /// Largest global gradient norm (0: no clipping).
  TORCH_ARG(double, grad_clip) = 0.0;
  /// Mixed precision: the forward pass and the loss run under autocast to bfloat16 on the parameters'
  /// device (autocast.h); weights, gradients and optimizer state stay float32. The model's fused
  /// gradients (`fused_mlp`) are not used then: autograd computes them.
  TORCH_ARG(bool, autocast_bf16) = false;
  /// Decay of the exponential moving average of the weights (0: no EMA).
  TORCH_ARG(double, ema_decay) = 0.0;
  /// Constant, or cosine decay from lr to lr·min_lr_ratio over the steps after warm-up.
  TORCH_ARG(LRSchedule, lr_schedule) = LRSchedule::Constant;
  TORCH_ARG(int64_t, warmup_steps) = 0;
  TORCH_ARG(double, min_lr_ratio) = 0.0;
  /// Seeds the trainer's generator (data, times, path noise, coupling).
  TORCH_ARG(uint64_t, seed) = 0;
  /// Call the progress callback every this many steps (and at the last step).
  TORCH_ARG(int64_t, log_every) = 100;
  /// Write `checkpoint_dir/step-N.ckpt` every this many steps and at the end (0: only at the end).
  TORCH_ARG(int64_t, checkpoint_every) = 1000;
  /// Where checkpoints go; empty: none are written.
  TORCH_ARG(std::string, checkpoint_dir) = "";
  /// How many of the newest checkpoints to keep (older ones are deleted).
  TORCH_ARG(int64_t, keep_checkpoints) = 3;
  /// Let the objective use a model's hand-written loss gradients where it has them
  /// (`VelocityModel::supports_fused_regression`, the MLP: no autograd graph, fewer operator calls);
  /// false: autograd. Same results up to rounding.
  TORCH_ARG(bool, fused_mlp) = true;
  /// When `train()` reads each step's loss back to the host. true: at each report (log_every), each
  /// checkpoint and the end, in one read, so that a GPU's queue never drains between steps (a read
  /// waits for the device). false: every step. Unset: every step on the CPU (a read costs nothing
  /// there), deferred on other devices. Either way a non-finite loss stops training naming its step
  /// and no checkpoint after it is written; deferred, the steps after it have run in memory.
  /// Data-parallel training reads every step (the loss is all-reduced with the gradients).
  TORCH_ARG(std::optional<bool>, defer_loss_readback) = std::nullopt;
  /// The identity of the run the checkpoints belong to (Run: a hash of its frozen settings), stored in
  /// each checkpoint; load_checkpoint refuses one with another identity. Empty: not checked.
  TORCH_ARG(std::string, run_id) = "";
};

/// Validates options; throws std::invalid_argument naming the bad value.
void validate(const TrainerOptions& options);

struct TrainProgress {
  int64_t step = 0;          ///< steps completed
  int64_t total_steps = 0;
  double loss = 0;           ///< mean loss since the previous report
  double lr = 0;
  double it_per_s = 0;       ///< since the previous report, leaving out the time in checkpoint_saved callbacks
  double elapsed_s = 0;      ///< in this call of train(), all of it
  double eta_s = 0;          ///< estimated time left: the steps at the rate so far, the callbacks to come at their mean time
  /// Data-parallel runs: ranks, and the mean wall-clock time per step spent in the gradient
  /// all-reduce since the previous report (0 otherwise).
  int64_t world_size = 1;
  double communication_ms = 0;
};

struct TrainCallbacks {
  std::function<void(const TrainProgress&)> progress;
  /// Polled after every step; when it returns true the trainer checkpoints and returns.
  std::function<bool()> should_stop;
  std::function<void(const std::string& path, int64_t step)> checkpoint_saved;
};

/// Draws a minibatch of n already-paired (x0, x1) rows (e.g. rectified flow's stored pairs).
using PairSampler = std::function<CoupledBatch(int64_t n, at::Generator& generator)>;
/// Draws a whole training batch of n rows (pairs, times, path points, targets, conditioning).
using BatchSource = std::function<TrainingBatch(int64_t n, at::Generator& generator)>;

/// What to learn: one batch source and one objective. The batch source is `batches` when set; else
/// it is made from the fields below (`draw_training_batch`): a flow from `source` to `target` along
/// `path`, pairs chosen by `coupling`, the network predicting `prediction` (velocity, data, noise or
/// score) at times drawn by `time_sampling`; with `pairs` set, minibatches of stored pairs instead
/// (source, target and coupling unused); with `labeled_target`, class-conditional pairs. The
/// objective is `objective` when set, else the regression (`RegressionObjective`).
struct FlowMatchingProblem {
  data::PointSampler source;
  data::PointSampler target;
  std::shared_ptr<ProbabilityPath> path;
  std::shared_ptr<Coupling> coupling;
  PairSampler pairs;
  /// Class-conditional training: targets and their labels come from here instead of `target`
  /// (pairs formed with `Coupling::pair_within_labels`), and the model is called with the labels.
  data::LabeledSampler labeled_target;
  /// Probability of replacing a label by models::kNullLabel (trains the unconditional velocity
  /// used by classifier-free guidance).
  double label_dropout = 0.0;
  PredictionTarget prediction = PredictionTarget::Velocity;
  TimeSamplingOptions time_sampling = {};
  /// Replaces the batch drawing above when set.
  BatchSource batches;
  /// The loss (null: the regression).
  std::shared_ptr<Objective> objective;
};

/// Draws a minibatch of `batch_size` pairs exactly as `Trainer::train_step` does (source, target,
/// coupling or stored pairs, then times and path samples), from `generator`.
TrainingBatch draw_training_batch(const FlowMatchingProblem& problem, int64_t batch_size, at::Generator& generator);

class Trainer {
 public:
  /// The model's parameters should already be initialised (seed the global RNG before building it)
  /// and on the device to train on; batches are moved to that device.
  Trainer(std::shared_ptr<models::VelocityModel> model, FlowMatchingProblem problem,
          TrainerOptions options);

  /// Trains from the current step up to options.steps. Returns the step reached (smaller when
  /// stopped). Throws std::runtime_error on a non-finite loss, naming the step; the previous
  /// checkpoint is left as it was.
  int64_t train(const TrainCallbacks& callbacks = {});

  /// Trains data-parallel in `group` from now on: parameters (and EMA weights) are broadcast from
  /// rank 0, this rank's generator is reseeded with `distributed::rank_seed(seed, rank)`, every
  /// step averages gradients over the ranks (batch_size is per rank: the global batch is
  /// batch_size × world size), and a stop request on any rank stops all at the same step.
  /// Checkpoints hold every rank's generator state and are written by rank 0 only; loading one
  /// reads it on rank 0 and sends it to the others. Call before load_checkpoint.
  void distribute(std::shared_ptr<distributed::DataParallel> group);
  std::shared_ptr<distributed::DataParallel> group() const { return group_; }

  /// One optimisation step; returns the loss (in a data-parallel run, the mean over the ranks). It
  /// reads the loss back, and throws before the optimizer step when it is not finite.
  double train_step();

  /// Writes a checkpoint (data-parallel: every rank must call it; rank 0 writes).
  void save_checkpoint(const std::string& path);
  /// Restores weights, optimizer, EMA, step and generator state. Throws std::runtime_error when the
  /// checkpoint's model description differs from this trainer's model, or (data-parallel) when it
  /// was written by a different number of ranks. Data-parallel: every rank calls it; rank 0 reads `path`.
  void load_checkpoint(const std::string& path);

  int64_t step() const { return step_; }
  double current_lr() const;
  const TrainerOptions& options() const { return options_; }
  std::shared_ptr<models::VelocityModel> model() const { return model_; }
  /// The EMA weights when ema_decay > 0, else the model itself.
  std::shared_ptr<models::VelocityModel> sampling_model() const;
  at::Generator& generator() { return generator_; }

 private:
  double lr_at(int64_t step) const;
  /// One step; the loss (detached, 0-dim) is read back and checked when `read_back` (always when
  /// data-parallel), else returned unread and unchecked.
  at::Tensor take_step(bool read_back);
  void apply_lr(double lr);
  void update_ema();

  std::shared_ptr<models::VelocityModel> model_;
  std::shared_ptr<models::VelocityModel> ema_;
  std::vector<at::Tensor> parameters_, ema_parameters_;  // cached: no per-step vector copies
  FlowMatchingProblem problem_;
  TrainerOptions options_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  at::Generator generator_;
  int64_t step_ = 0;
  std::shared_ptr<distributed::DataParallel> group_;
  std::shared_ptr<Objective> objective_;
  std::function<bool()> stop_poll_;  // set by train(); polled inside the step when data-parallel
  bool stop_requested_ = false;      // any rank asked to stop (data-parallel)
};

/// A trained network read back from a checkpoint written by `Trainer` (architecture from the
/// stored description). With `ema` true the EMA weights are returned when the run kept them.
/// `meta`, when given, receives the checkpoint's metadata (step, run_id, ...).
std::shared_ptr<models::VelocityModel> load_model(const std::string& checkpoint_path, bool ema = true,
                                                  nlohmann::json* meta = nullptr);

}  // namespace flowmatch
