#include "flowmatch/io/json.h"
#include "flowmatch/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <type_traits>

#include "enum_names.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/distributed.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/loss.h"
#include "flowmatch/optimizer.h"
#include "flowmatch/training_state.h"

namespace flowmatch {

namespace fs = std::filesystem;

namespace {
constexpr detail::EnumNames<OptimizerKind, 2> kOptimizerNames{{{OptimizerKind::Adam, "adam"}, {OptimizerKind::AdamW, "adamw"}}};
constexpr detail::EnumNames<LRSchedule, 2> kScheduleNames{{{LRSchedule::Constant, "constant"}, {LRSchedule::Cosine, "cosine"}}};
}  // namespace

OptimizerKind optimizer_kind_from_string(const std::string& name) {
  return detail::enum_from_name(kOptimizerNames, name, "optimizer");
}
std::string to_string(OptimizerKind kind) { return detail::enum_name(kOptimizerNames, kind); }
LRSchedule lr_schedule_from_string(const std::string& name) {
  return detail::enum_from_name(kScheduleNames, name, "learning-rate schedule");
}
std::string to_string(LRSchedule schedule) { return detail::enum_name(kScheduleNames, schedule); }

void validate(const TrainerOptions& o) {
  auto bad = [](const std::string& what, const std::string& value, const std::string& expected) {
    throw std::invalid_argument(what + " must be " + expected + ", got " + value);
  };
  if (o.steps() < 1 || o.steps() > 1000000000000000) bad("steps", std::to_string(o.steps()), "in [1, 10^15]");
  if (o.batch_size() < 1) bad("batch size", std::to_string(o.batch_size()), ">= 1");
  if (!(o.lr() > 0) || !std::isfinite(o.lr())) bad("learning rate", std::to_string(o.lr()), "finite and > 0");
  if (!(o.weight_decay() >= 0) || !std::isfinite(o.weight_decay())) bad("weight decay", std::to_string(o.weight_decay()), ">= 0");
  if (!(o.grad_clip() >= 0) || !std::isfinite(o.grad_clip())) bad("gradient clip", std::to_string(o.grad_clip()), ">= 0");
  if (!(o.ema_decay() >= 0 && o.ema_decay() < 1)) bad("EMA decay", std::to_string(o.ema_decay()), "in [0, 1)");
  if (o.warmup_steps() < 0) bad("warm-up steps", std::to_string(o.warmup_steps()), ">= 0");
  if (!(o.min_lr_ratio() >= 0 && o.min_lr_ratio() <= 1)) bad("min lr ratio", std::to_string(o.min_lr_ratio()), "in [0, 1]");
  if (o.log_every() < 1) bad("log interval", std::to_string(o.log_every()), ">= 1");
  if (o.checkpoint_every() < 0) bad("checkpoint interval", std::to_string(o.checkpoint_every()), ">= 0");
  if (o.keep_checkpoints() < 1) bad("checkpoints kept", std::to_string(o.keep_checkpoints()), ">= 1");
}

Trainer::Trainer(std::shared_ptr<models::VelocityModel> model, FlowMatchingProblem problem, TrainerOptions options)
    : model_(std::move(model)),
      problem_(std::move(problem)),
      options_(std::move(options)),
      generator_(at::make_generator<at::CPUGeneratorImpl>(options_.seed())) {
  validate(options_);
  if (!model_) throw std::invalid_argument("Trainer: model is null");
  if (!problem_.batches && !problem_.pairs && (!problem_.source || (!problem_.target && !problem_.labeled_target))) {
    throw std::invalid_argument("Trainer: source and target samplers (or a pair sampler or batch source) are required");
  }
  if (problem_.labeled_target && model_->num_classes() <= 0) {
    throw std::invalid_argument("Trainer: labelled targets need a class-conditional network (num_classes > 0)");
  }
  if (!(problem_.label_dropout >= 0 && problem_.label_dropout <= 1)) {
    throw std::invalid_argument("label dropout must be in [0, 1], got " + std::to_string(problem_.label_dropout));
  }
  if (!problem_.path) throw std::invalid_argument("Trainer: a probability path is required");
  if (!problem_.batches && !problem_.pairs && !problem_.coupling) throw std::invalid_argument("Trainer: a coupling is required");
  validate(problem_.time_sampling);
  if (problem_.time_sampling.weighting() == LossWeighting::SigmaSquared && !problem_.path->scheduler()) {
    throw std::invalid_argument("loss weighting sigma-squared needs an affine Gaussian path, got " +
                                problem_.path->spec().dump());
  }
  check_prediction_target(*problem_.path, problem_.prediction);  // fails now rather than at the first step
  if (options_.optimizer() == OptimizerKind::Adam) {
    optimizer_ = std::make_unique<torch::optim::Adam>(
        model_->parameters(), torch::optim::AdamOptions(options_.lr()).weight_decay(options_.weight_decay()));
  } else {
    optimizer_ = std::make_unique<torch::optim::AdamW>(
        model_->parameters(), torch::optim::AdamWOptions(options_.lr()).weight_decay(options_.weight_decay()));
  }
  parameters_ = model_->parameters();
  if (parameters_.empty()) throw std::invalid_argument("Trainer: the model has no parameters");
  objective_ = problem_.objective ? problem_.objective : std::make_shared<RegressionObjective>();
  if (options_.ema_decay() > 0) {
    ema_ = model_->clone_model();
    ema_->to(parameters_.front().device());
    ema_parameters_ = ema_->parameters();
    for (auto& p : ema_parameters_) p.set_requires_grad(false);
  }
}

double Trainer::lr_at(int64_t step) const {
  const double base = options_.lr();
  const int64_t warm = options_.warmup_steps();
  if (step < warm) return base * static_cast<double>(step + 1) / static_cast<double>(warm);
  if (options_.lr_schedule() == LRSchedule::Constant) return base;
  const double span = static_cast<double>(std::max<int64_t>(1, options_.steps() - warm));
  const double progress = std::min(1.0, static_cast<double>(step - warm) / span);
  const double r = options_.min_lr_ratio();
  return base * (r + (1 - r) * 0.5 * (1 + std::cos(M_PI * progress)));
}

double Trainer::current_lr() const { return lr_at(step_); }

void Trainer::apply_lr(double lr) {
  for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
}

void Trainer::update_ema() {
  if (!ema_) return;
  exponential_moving_average(ema_parameters_, parameters_, options_.ema_decay());
}

std::shared_ptr<models::VelocityModel> Trainer::sampling_model() const { return ema_ ? ema_ : model_; }

TrainingBatch draw_training_batch(const FlowMatchingProblem& problem, int64_t b, at::Generator& generator) {
  CoupledBatch pair;
  if (problem.pairs) {
    pair = problem.pairs(b, generator);
  } else if (problem.labeled_target) {
    at::Tensor x0 = problem.source(b, generator);
    data::LabeledBatch data = problem.labeled_target(b, generator);
    pair = problem.coupling->pair_within_labels(x0, at::Tensor(), data.x, data.labels, generator);
    if (problem.label_dropout > 0) {
      at::Tensor drop = at::rand({pair.labels.size(0)}, generator) < problem.label_dropout;
      pair.labels = at::where(drop, at::full_like(pair.labels, models::kNullLabel), pair.labels);
    }
  } else {
    at::Tensor x0 = problem.source(b, generator);
    at::Tensor x1 = problem.target(b, generator);
    pair = problem.coupling->pair(x0, x1, generator);
  }
  TrainingBatch batch;
  batch.t = sample_times(pair.x0.size(0), problem.time_sampling, generator);
  PathSample s = problem.path->sample(pair.x0, pair.x1, batch.t, generator);
  batch.target = regression_target(*problem.path, s, problem.prediction);
  batch.x_t = s.x_t;
  batch.weight = loss_weights(batch.t, problem.time_sampling, problem.path->scheduler().get());
  batch.x0 = pair.x0;
  batch.x1 = pair.x1;
  if (problem.labeled_target) batch.labels = batch.condition.labels = pair.labels;
  return batch;
}

void Trainer::distribute(std::shared_ptr<distributed::DataParallel> group) {
  if (!group) throw std::invalid_argument("Trainer::distribute: group is null");
  group_ = std::move(group);
  group_->broadcast(parameters_, 0);
  if (ema_) models::copy_parameters(*model_, *ema_);
  generator_ = at::make_generator<at::CPUGeneratorImpl>(distributed::rank_seed(options_.seed(), group_->rank()));
}

namespace {
std::string non_finite_loss_message(double value, const std::string& where, int64_t step) {
  return "training stopped: non-finite loss (" + std::to_string(value) + ")" + where + " at step " + std::to_string(step) +
         "; the last checkpoint is kept";
}
}  // namespace

double Trainer::train_step() { return take_step(true).item<double>(); }

at::Tensor Trainer::take_step(bool read_back) {
  const auto device = parameters_.front().device();
  const TrainingBatch batch = (problem_.batches ? problem_.batches(options_.batch_size(), generator_)
                                                : draw_training_batch(problem_, options_.batch_size(), generator_))
                                  .to(device);
  apply_lr(lr_at(step_));
  at::Tensor loss = options_.autocast_bf16() ? objective_->autograd_loss_and_gradients(*model_, batch, device.type())
                                             : objective_->loss_and_gradients(*model_, batch, options_.fused_mlp());
  if (group_ || read_back) {
    double value = loss.item<double>();
    std::string where;
    if (group_) {
      // Every rank must reach the all-reduce, so a non-finite loss is judged on the mean that comes
      // back (non-finite when any rank's is), and all ranks stop together.
      const bool local_stop = stop_poll_ && stop_poll_();
      const auto sums = group_->average_gradients(parameters_, {value, local_stop ? 1.0 : 0.0});
      value = sums[0] / static_cast<double>(group_->world_size());
      stop_requested_ = sums[1] > 0;
      where = " (mean over " + std::to_string(group_->world_size()) + " ranks)";
      loss = at::scalar_tensor(value, at::kDouble);
    }
    if (!std::isfinite(value)) throw std::runtime_error(non_finite_loss_message(value, where, step_ + 1));
  }
  if (options_.grad_clip() > 0) torch::nn::utils::clip_grad_norm_(parameters_, options_.grad_clip());
  if (fused_adam_supported(*optimizer_, parameters_)) {
    fused_adam_step(*optimizer_, parameters_);  // one pass per tensor, LibTorch's update and state
  } else if (!device.is_cpu() && multi_tensor_adam_supported(*optimizer_, parameters_)) {
    multi_tensor_adam_step(*optimizer_, parameters_);  // about ten launches a step, not ten per tensor
  } else {
    optimizer_->step();
  }
  update_ema();
  ++step_;
  return loss;
}

int64_t Trainer::train(const TrainCallbacks& callbacks) {
  validate(options_);
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto last = start;
  int64_t last_step = step_;
  const int64_t first_step = step_;
  double loss_sum = 0;
  int64_t loss_count = 0;
  double last_communication_s = group_ ? group_->communication_seconds() : 0;
  // Time in checkpoint_saved callbacks (a validation can take seconds): left out of it/s, and counted in
  // the time left at its mean per checkpoint so far.
  double callback_s = 0, last_callback_s = 0;
  int64_t callbacks_run = 0;
  const std::string dir = options_.checkpoint_dir();
  const bool writer = !group_ || group_->rank() == 0;
  stop_poll_ = callbacks.should_stop;
  stop_requested_ = false;
  // Deferred readback: the losses of the steps since the last read, read together (one wait for the
  // device instead of one a step) and checked in order, so that a non-finite one is named by its step.
  const bool defer = !group_ && options_.defer_loss_readback().value_or(!parameters_.front().device().is_cpu());
  std::vector<at::Tensor> unread;
  auto read_losses = [&]() {
    if (unread.empty()) return;
    const int64_t first = step_ - static_cast<int64_t>(unread.size()) + 1;
    std::vector<double> values;
    values.reserve(unread.size());
    const bool alike = std::all_of(unread.begin(), unread.end(), [&](const at::Tensor& loss) {
      return loss.device() == unread.front().device() && loss.scalar_type() == unread.front().scalar_type();
    });
    if (alike) {  // one copy back
      const at::Tensor all = at::stack(unread).to(at::kCPU, at::kDouble);
      values.assign(all.data_ptr<double>(), all.data_ptr<double>() + all.numel());
    } else {  // a batch source that mixes paths: one read each (the first waits, the rest are ready)
      for (const auto& loss : unread) values.push_back(loss.item<double>());
    }
    unread.clear();
    for (size_t k = 0; k < values.size(); ++k) {
      if (!std::isfinite(values[k])) throw std::runtime_error(non_finite_loss_message(values[k], "", first + static_cast<int64_t>(k)));
      loss_sum += values[k];
      ++loss_count;
    }
  };
  // Non-finite weights are never checkpointed: training stops naming the last (finite) checkpoint.
  // Checked at every report and before every checkpoint (the loss at every step, or at each read when deferred).
  auto check_weights = [&]() {
    auto finite = [](const std::vector<at::Tensor>& tensors) {  // one read back for all of them
      if (tensors.empty()) return true;
      std::vector<at::Tensor> each;
      each.reserve(tensors.size());
      for (const auto& p : tensors) each.push_back(at::isfinite(p).all());
      return at::stack(each).all().item<bool>();
    };
    if (finite(parameters_) && finite(ema_parameters_)) return;
    const auto kept = dir.empty() ? std::vector<std::string>{} : list_checkpoints(dir);
    throw std::runtime_error("training stopped: the weights are not finite after step " + std::to_string(step_) +
                             " (is the learning rate too high?); " +
                             (kept.empty() ? std::string("no checkpoint was written") : "the last checkpoint " + kept.back() + " is kept"));
  };
  auto checkpoint = [&]() {
    check_weights();
    if (dir.empty()) return;
    const std::string path = (fs::path(dir) / ("step-" + std::to_string(step_) + ".ckpt")).string();
    if (writer) {
      std::error_code ec;
      fs::create_directories(dir, ec);  // a failure shows when the file cannot be created
    }
    save_checkpoint(path);
    if (!writer) return;
    auto all = list_checkpoints(dir);
    for (size_t k = 0; k + static_cast<size_t>(options_.keep_checkpoints()) < all.size(); ++k) {
      std::error_code ec;
      fs::remove(all[k], ec);
    }
    if (!callbacks.checkpoint_saved) return;
    const auto called = clock::now();
    callbacks.checkpoint_saved(path, step_);
    callback_s += std::chrono::duration<double>(clock::now() - called).count();
    ++callbacks_run;
  };
  while (step_ < options_.steps()) {
    if (defer) {
      unread.push_back(take_step(false));
    } else {
      loss_sum += train_step();
      ++loss_count;
    }
    const bool stop = group_ ? stop_requested_ : (callbacks.should_stop && callbacks.should_stop());
    const bool report = step_ % options_.log_every() == 0 || step_ == options_.steps() || stop;
    const bool periodic = options_.checkpoint_every() > 0 && step_ % options_.checkpoint_every() == 0;
    if (report || periodic || unread.size() >= 1000) read_losses();
    if (callbacks.progress && report) {
      check_weights();
      const auto now = clock::now();
      TrainProgress p;
      p.step = step_;
      p.total_steps = options_.steps();
      p.loss = loss_sum / static_cast<double>(loss_count);
      p.lr = lr_at(step_ - 1);
      const double dt = std::chrono::duration<double>(now - last).count() - (callback_s - last_callback_s);
      p.it_per_s = dt > 0 ? static_cast<double>(step_ - last_step) / dt : 0;
      p.elapsed_s = std::chrono::duration<double>(now - start).count();
      const double stepping_s = p.elapsed_s - callback_s;
      const double rate = stepping_s > 0 ? static_cast<double>(step_ - first_step) / stepping_s : 0;
      p.eta_s = rate > 0 ? static_cast<double>(options_.steps() - step_) / rate : 0;
      if (callbacks_run > 0) {  // the checkpoints still to come, this step's included: every multiple of checkpoint_every, and the last step
        const int64_t every = options_.checkpoint_every(), total = options_.steps();
        const int64_t to_come = (every > 0 ? total / every - (step_ - 1) / every : 0) + (every > 0 && total % every == 0 ? 0 : 1);
        p.eta_s += static_cast<double>(to_come) * callback_s / static_cast<double>(callbacks_run);
      }
      if (group_) {
        p.world_size = group_->world_size();
        const double now_s = group_->communication_seconds();
        p.communication_ms = 1000 * (now_s - last_communication_s) / static_cast<double>(step_ - last_step);
        last_communication_s = now_s;
      }
      callbacks.progress(p);
      last = now;
      last_callback_s = callback_s;
      last_step = step_;
      loss_sum = 0;
      loss_count = 0;
    }
    if (periodic || step_ == options_.steps() || stop) checkpoint();
    if (stop) break;
  }
  stop_poll_ = nullptr;
  return step_;
}

namespace {

std::string meta_string(const CheckpointContents& in, const std::string& key, const std::string& path) {
  if (!in.meta.contains(key) || !in.meta[key].is_string()) {
    throw std::runtime_error("'" + path + "': checkpoint has no '" + key + "' entry (not written by flowmatch's trainer?)");
  }
  return in.meta[key].get<std::string>();
}

int64_t meta_integer(const CheckpointContents& in, const std::string& key, const std::string& path, int64_t otherwise) {
  if (!in.meta.contains(key)) return otherwise;
  if (!in.meta[key].is_number_integer()) throw std::runtime_error("'" + path + "': checkpoint entry '" + key + "' is not an integer");
  return in.meta[key].get<int64_t>();
}

nlohmann::json model_spec_of(const CheckpointContents& in, const std::string& path) {
  return io::parse_json(meta_string(in, "model_spec", path), "'" + path + "': checkpoint's model description");
}

}  // namespace

void Trainer::save_checkpoint(const std::string& path) {
  CheckpointContents out;
  out.meta = {{"model_spec", model_->spec().dump()},
              {"optimizer_kind", to_string(options_.optimizer())},
              {"step", step_},
              {"world_size", group_ ? group_->world_size() : int64_t{1}}};
  if (!options_.run_id().empty()) out.meta["run_id"] = options_.run_id();
  {
    // The global generator (dropout draws from it): restored on resume so that resuming is bit-identical.
    auto global = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(global.mutex());
    out.tensors["global_generator_state"] = global.get_state();
  }
  at::Tensor state;
  {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    state = generator_.get_state();
  }
  out.tensors["generator_state"] = state;
  if (group_) {
    // Every rank's stream, so that each continues exactly where it was.
    const auto states = group_->all_gather(state);
    if (group_->rank() != 0) return;
    for (size_t r = 0; r < states.size(); ++r) out.tensors["generator_state_rank_" + std::to_string(r)] = states[r];
  }
  save_module(*model_, "model/", out);
  if (ema_) save_module(*ema_, "ema/", out);
  save_optimizer_state(*optimizer_, parameters_, out);
  write_checkpoint(path, out);
}

void Trainer::load_checkpoint(const std::string& path) {
  CheckpointContents in;
  if (!group_) {
    in = read_checkpoint(path);
  } else {
    // Rank 0 reads the file (the others may be on machines without it) and sends its bytes, or
    // its error, so that every rank fails or succeeds together.
    std::string bytes, error;
    if (group_->rank() == 0) {
      try {
        bytes = io::read_file(path);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    error = group_->broadcast_string(error);
    if (!error.empty()) throw std::runtime_error(group_->rank() == 0 ? error : "rank 0: " + error);
    in = decode_checkpoint(group_->broadcast_string(bytes), path);
  }
  const nlohmann::json spec = model_spec_of(in, path);
  if (spec != model_->spec()) {
    throw std::runtime_error("'" + path + "': checkpoint holds model " + spec.dump() + ", but this run's model is " +
                             model_->spec().dump());
  }
  const std::string kind = meta_string(in, "optimizer_kind", path);
  if (kind != to_string(options_.optimizer())) {
    throw std::runtime_error("'" + path + "': checkpoint used optimizer " + kind + ", this run uses " +
                             to_string(options_.optimizer()));
  }
  const int64_t ranks = group_ ? group_->world_size() : 1;
  const int64_t written_by = meta_integer(in, "world_size", path, 1);
  if (written_by != ranks) {
    throw std::runtime_error("'" + path + "': checkpoint was written by " + std::to_string(written_by) +
                             " process(es), this run has " + std::to_string(ranks) + "; resume with the same number of processes");
  }
  const int64_t step = meta_integer(in, "step", path, -1);
  if (step < 0) throw std::runtime_error("'" + path + "': checkpoint has no valid 'step' entry");
  const int64_t named_step = checkpoint_step(path);
  if (named_step >= 0 && named_step != step) {
    throw std::runtime_error("'" + path + "': the file name says step " + std::to_string(named_step) + " but the checkpoint holds step " +
                             std::to_string(step) + " (a renamed or copied file?)");
  }
  if (!options_.run_id().empty() && in.meta.contains("run_id") && in.meta["run_id"] != options_.run_id()) {
    throw std::runtime_error("'" + path + "': the checkpoint belongs to another run (run id " + in.meta["run_id"].dump() + ", this run's " +
                             options_.run_id() + ": its path, target, data or network differ)");
  }
  const at::Tensor& state =
      checkpoint_tensor(in, group_ ? "generator_state_rank_" + std::to_string(group_->rank()) : "generator_state", path);
  {
    // The CPU generator's state has a fixed size and type; anything else would be refused by LibTorch.
    std::lock_guard<std::mutex> lock(generator_.mutex());
    const at::Tensor current = generator_.get_state();
    if (state.sizes() != current.sizes() || state.scalar_type() != current.scalar_type()) {
      throw std::runtime_error("'" + path + "': checkpoint's generator state has the wrong size");
    }
  }
  if (!in.meta.contains("optimizer_steps")) throw std::runtime_error("'" + path + "': checkpoint lacks the optimizer state");
  // Everything is checked; now restore (a failure below leaves a half-restored trainer, so it throws
  // only for inconsistencies the checks above cannot see).
  load_module(*model_, "model/", in, path);
  if (ema_) {
    if (in.tensors.count("ema/" + model_->named_parameters().keys().front())) {
      load_module(*ema_, "ema/", in, path);
    } else {
      models::copy_parameters(*model_, *ema_);
    }
  }
  load_optimizer_state(*optimizer_, parameters_, in, path);
  try {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_state(state);
    if (in.tensors.count("global_generator_state")) {
      auto global = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> global_lock(global.mutex());
      global.set_state(in.tensors.at("global_generator_state"));
    }
  } catch (const c10::Error& e) {
    throw std::runtime_error("'" + path + "': checkpoint's generator state is invalid: " + e.what_without_backtrace());
  }
  step_ = step;
}

std::shared_ptr<models::VelocityModel> load_model(const std::string& checkpoint_path, bool ema, nlohmann::json* meta) {
  const CheckpointContents in = read_checkpoint(checkpoint_path);
  if (meta) *meta = in.meta;
  std::shared_ptr<models::VelocityModel> model;
  try {
    model = models::make_model(model_spec_of(in, checkpoint_path));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("'" + checkpoint_path + "': checkpoint's model description is invalid: " + e.what());
  }
  const auto names = model->named_parameters().keys();
  const bool has_ema = !names.empty() && in.tensors.count("ema/" + names.front()) > 0;
  load_module(*model, ema && has_ema ? "ema/" : "model/", in, checkpoint_path);
  model->eval();
  return model;
}

}  // namespace flowmatch
