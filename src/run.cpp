// Run: opening, creating and resuming run folders; the model, problem and sampling field of a run;
// training with checkpoints and metrics.jsonl; rectified-flow rounds.

#include "flowmatch/io/json.h"
#include "flowmatch/run.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "flowmatch/checkpoint.h"
#include "flowmatch/coupling.h"
#include "flowmatch/distributed.h"
#include "flowmatch/guidance.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/objective.h"
#include "flowmatch/prediction.h"
#include "flowmatch/reflow.h"
#include "flowmatch/run_index.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/time_sampling.h"

namespace flowmatch {

namespace fs = std::filesystem;
using json = nlohmann::json;

void write_json_file(const std::string& path, const json& value) { io::write_file_atomic(path, value.dump(2) + "\n"); }

namespace {

TrainerOptions trainer_options(const json& t, const std::string& checkpoint_dir, const std::string& config_path) {
  try {
    return TrainerOptions()
        .steps(t.at("steps").get<int64_t>())
        .batch_size(t.at("batch").get<int64_t>())
        .lr(t.at("lr").get<double>())
        .optimizer(optimizer_kind_from_string(t.at("optimizer").get<std::string>()))
        .weight_decay(t.at("weight_decay").get<double>())
        .grad_clip(t.at("grad_clip").get<double>())
        .autocast_bf16(t.value("autocast", std::string("off")) == "bf16")  // absent in runs made before it
        .ema_decay(t.at("ema").get<double>())
        .lr_schedule(lr_schedule_from_string(t.at("lr_schedule").get<std::string>()))
        .warmup_steps(t.at("warmup").get<int64_t>())
        .min_lr_ratio(t.at("min_lr_ratio").get<double>())
        .seed(t.at("seed").get<uint64_t>())
        .log_every(t.at("log_every").get<int64_t>())
        .checkpoint_every(t.at("checkpoint_every").get<int64_t>())
        .keep_checkpoints(t.at("keep").get<int64_t>())
        .checkpoint_dir(checkpoint_dir);
  } catch (const json::exception& e) {
    throw std::runtime_error("'" + config_path + "': training: " + e.what());
  }
}

// metrics.jsonl keeps one line per report; on resume the lines after the checkpoint are dropped
// (they will be produced again). Malformed (partially written) lines are skipped.
std::vector<json> read_metrics(const std::string& path, int64_t up_to_step) {
  std::vector<json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    try {
      json j = io::parse_json(line, path);
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= up_to_step) lines.push_back(j);
    } catch (const std::exception&) {  // partially written or damaged lines are skipped
    }
  }
  return lines;
}

void write_loss_curve(const Run& run) {
  std::vector<double> x, y, vx, vy;
  for (const auto& j : read_metrics(run.metrics_jsonl(), INT64_MAX)) {
    if (j.contains("loss") && j["loss"].is_number()) {
      x.push_back(j["step"].get<double>());
      y.push_back(j["loss"].get<double>());
    }
    if (j.contains("validation_nll") && j["validation_nll"].is_number()) {
      vx.push_back(j["step"].get<double>());
      vy.push_back(j["validation_nll"].get<double>());
    }
  }
  io::PlotStyle style;
  style.width = 720;
  style.height = 420;
  if (!x.empty()) {
    style.title = "training loss (log scale) vs step";
    io::write_line_png(run.dir() + "/loss.png", {{x, y, {31, 119, 180}, "loss"}}, style, /*log_y=*/true);
  }
  if (!vx.empty()) {  // --validate nll
    style.title = "validation NLL (nats per point) vs step";
    io::write_line_png(run.dir() + "/validation.png", {{vx, vy, {214, 39, 40}, "validation NLL"}}, style, /*log_y=*/false);
  }
}

// checkpoints/best.json's record: an object with an integer step and a numeric validation_nll
// (std::runtime_error naming the file otherwise). Null when absent.
json parse_best(const Run& run) {
  std::error_code ec;
  if (!fs::exists(run.best_json(), ec)) return nullptr;
  json best;
  try {
    best = io::parse_json(io::read_file(run.best_json()), run.best_json());
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(e.what()) + "; remove checkpoints/best.json and best.ckpt to choose the best anew");
  }
  if (!best.is_object() || !best.contains("step") || !best["step"].is_number_integer() || !best.contains("validation_nll") ||
      !best["validation_nll"].is_number()) {
    throw std::runtime_error("'" + run.best_json() + "' is not a best-checkpoint record (step, validation_nll); remove it and best.ckpt "
                             "to choose the best anew");
  }
  return best;
}

// The record, checked to agree with best.ckpt (a process killed between writing the two leaves them
// disagreeing). Null when absent.
json read_best(const Run& run) {
  const json best = parse_best(run);
  if (best.is_null()) return best;
  std::error_code ec;
  const std::string kept = run.checkpoint_dir() + "/best.ckpt";
  const int64_t held = fs::exists(kept, ec) ? run.checkpoint_step_of(kept) : -1;
  if (held != best["step"].get<int64_t>()) {
    throw std::runtime_error("'" + kept + "' " + (held < 0 ? std::string("is missing") : "holds step " + std::to_string(held)) +
                             " but '" + run.best_json() + "' says step " + best["step"].dump() +
                             " (a validation was cut off); remove both to choose the best anew");
  }
  return best;
}

// Resuming from an earlier checkpoint than the best one (--resume-fallback): the steps after it are
// trained again, so a best from them is forgotten.
void forget_stale_best(const Run& run, int64_t step) {
  json best;
  try {
    best = parse_best(run);
  } catch (const std::runtime_error&) {
    return;  // read_best names it when it matters
  }
  if (best.is_null() || best["step"].get<int64_t>() <= step) return;
  std::error_code ec;
  fs::remove(run.best_json(), ec);
  fs::remove(run.checkpoint_dir() + "/best.ckpt", ec);
}

// The newest checkpoint that verifies (magic, length, CRC-32, readable payload). A damaged newest one
// is an error naming it and the newest intact one, unless `fallback`: then the damaged ones are moved
// to checkpoints/damaged/ (kept for inspection, never picked again) and the intact one is used.
std::string pick_resume_checkpoint(const Run& run, bool fallback, const ReportFunction& report) {
  const auto checkpoints = list_checkpoints(run.checkpoint_dir());
  if (checkpoints.empty()) return "";
  auto damage = [](const std::string& path) -> std::string {
    try {
      read_checkpoint(path);
      return "";
    } catch (const std::exception& e) {
      return e.what();
    }
  };
  const std::string newest_damage = damage(checkpoints.back());
  if (newest_damage.empty()) return checkpoints.back();
  std::string intact;
  for (size_t k = checkpoints.size() - 1; k-- > 0;) {
    if (damage(checkpoints[k]).empty()) {
      intact = checkpoints[k];
      break;
    }
  }
  if (intact.empty()) throw std::runtime_error(newest_damage + "; no older checkpoint of this run is intact");
  if (!fallback) {
    throw std::runtime_error(newest_damage + "; the newest intact checkpoint is " + intact + ": pass --resume-fallback to resume from it");
  }
  const fs::path damaged_dir = fs::path(run.checkpoint_dir()) / "damaged";
  fs::create_directories(damaged_dir);
  for (const auto& c : checkpoints) {
    if (checkpoint_step(c) > checkpoint_step(intact)) fs::rename(c, damaged_dir / fs::path(c).filename());
  }
  if (report) report(newest_damage + "; moved to " + damaged_dir.string() + "/, resuming from " + intact);
  return intact;
}

// The run's identity: FNV-1a of its configuration without what may change on resume (steps and the
// logging and checkpoint intervals) or does not change the model (the version that wrote it).
std::string run_identity(const json& config) {
  json frozen = config;
  for (const char* key : {"flowmatch_version", "distributed", "stand_in", "validation"}) frozen.erase(key);
  if (frozen.contains("training") && frozen["training"].is_object()) {
    for (const char* key : {"steps", "log_every", "checkpoint_every", "keep"}) frozen["training"].erase(key);
  }
  if (frozen.contains("settings") && frozen["settings"].is_object()) {
    for (const char* key : {"steps", "log-every", "checkpoint-every", "keep"}) frozen["settings"].erase(key);
  }
  // The resolved sections say it all; written before domains, objectives and stored settings, a run
  // has the same identity (its domain inferred, the regression objective).
  frozen.erase("settings");
  if (!frozen.contains("objective")) frozen["objective"] = {{"type", "regression"}};
  if (frozen.contains("data") && frozen["data"].is_object() && !frozen["data"].contains("domain")) {
    frozen["data"]["domain"] = frozen["data"].contains("image_shape") ? "images" : "points";
  }
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : frozen.dump()) h = (h ^ c) * 1099511628211ULL;
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

// Temporary files (NAME.tmp.PID) left by a process that died while writing (SIGKILL during a
// checkpoint): removed when their process is gone.
void remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const auto at = name.rfind(".tmp.");
    if (at == std::string::npos || !entry.is_regular_file(ec)) continue;
    const std::string pid_text = name.substr(at + 5);
    if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) fs::remove(entry.path(), ec);
  }
}

// An advisory lock on RUN/.lock for as long as a process trains the run: a second writer is refused.
struct RunLock {
  int fd = -1;
  ~RunLock() {
    if (fd >= 0) ::close(fd);  // releases the lock
  }
};

std::shared_ptr<RunLock> lock_run_folder(const std::string& dir) {
  auto lock = std::make_shared<RunLock>();
  const std::string path = dir + "/.lock";
  lock->fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock->fd < 0) throw std::runtime_error("cannot open the run's lock file '" + path + "': " + std::strerror(errno));
  if (::flock(lock->fd, LOCK_EX | LOCK_NB) != 0) {
    throw std::runtime_error("'" + dir + "' is being written by another flowmatch process (its lock " + path +
                             " is held); wait for it or choose another --out");
  }
  return lock;
}

}  // namespace

Run::Run(std::string dir, json config) : dir_(std::move(dir)), config_(std::move(config)) {
  domain_ = domain_of(config_.at("data"));
}

Run Run::open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::invalid_argument("run folder '" + dir + "' does not exist");
  const std::string path = dir + "/config.json";
  if (!fs::exists(path, ec)) {
    throw std::invalid_argument("'" + dir + "' is not a run folder (no config.json; create one with 'flowmatch train --out " + dir + "')");
  }
  const json config = io::parse_json(io::read_file(path), "'" + path + "'");
  if (!config.is_object()) throw std::runtime_error("'" + path + "' is not a JSON object");
  for (const char* key : {"data", "model", "path", "coupling"}) {
    if (!config.contains(key)) throw std::runtime_error("'" + path + "' lacks the '" + key + "' section");
  }
  try {
    return Run(dir, std::move(config));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("'" + path + "': " + e.what());
  }
}

Run Run::from_model_file(const std::string& file, const std::string& source, const std::string& target) {
  json data = {{"domain", "points"}, {"source", source.empty() ? std::string("gaussian") : source}};
  if (!target.empty()) data["target"] = target;
  // Training settings for runs derived from it (reflow, distill): the train command's defaults.
  const json training = {{"steps", 20000}, {"batch", 256}, {"lr", 1e-3}, {"optimizer", "adam"}, {"weight_decay", 0.0},
                         {"grad_clip", 0.0}, {"ema", 0.0}, {"lr_schedule", "constant"}, {"warmup", 0},
                         {"min_lr_ratio", 0.0}, {"seed", 0}, {"log_every", 100}, {"checkpoint_every", 1000}, {"keep", 3}};
  return Run(".", {{"model", {{"type", "torchscript"}, {"file", fs::absolute(file).string()}}},
                   {"path", CondOTPath().spec()},
                   {"prediction", "velocity"},
                   {"data", data},
                   {"coupling", {{"type", "independent"}}},
                   {"training", training},
                   {"stand_in", true}});
}

Run Run::prepare(const std::string& dir, const json& settings, bool resume, bool fallback,
                 const std::shared_ptr<distributed::DataParallel>& group, const ReportFunction& report) {
  // The run folder is rank 0's business: it checks and resolves it, and the other ranks (perhaps on
  // machines without the folder) receive the result, or rank 0's error.
  json config;
  std::string resume_from;
  if (!group || group->rank() == 0) {
    std::string error;
    char kind = 'U';
    try {
      // On resume --validate and --validate-tol apply to the stored run (below), not to a fresh config.
      json given = settings;
      json validate_given;
      if (resume) {
        for (const auto& [key, flag] : std::vector<std::pair<std::string, std::string>>{
                 {"validate", "validate"}, {"validate-tol", "validate-tol"}, {"validate_tol", "validate-tol"}}) {
          if (!given.contains(key)) continue;
          validate_given[flag] = given[key];
          given.erase(key);
        }
      }
      json fresh = make_run_config(given);
      {
        // Nothing is created here: the folder must be (or sit in) a folder this process can write.
        std::error_code ec;
        fs::path existing = fs::absolute(dir);
        while (!fs::exists(existing, ec) && existing.has_parent_path() && existing != existing.parent_path()) existing = existing.parent_path();
        if (!fs::is_directory(existing, ec)) throw std::invalid_argument("--out: '" + existing.string() + "' exists and is not a folder");
        if (::access(existing.c_str(), W_OK | X_OK) != 0) {
          throw std::invalid_argument("--out: cannot write into folder '" + existing.string() + "': " + std::strerror(errno));
        }
      }
      Run probe(dir, fresh);
      const bool has_run = fs::exists(probe.config_path()) || !list_checkpoints(probe.checkpoint_dir()).empty();
      if (resume) {
        if (!fs::exists(probe.config_path())) throw std::invalid_argument("--resume: '" + dir + "' holds no run (no config.json)");
        Run stored = open(dir);
        json stored_settings = stored.config_.value("settings", json());
        for (const auto& [key, value] : settings.items()) {
          std::string name = key;
          for (char& c : name)
            if (c == '_') c = '-';
          bool frozen = true;
          for (const auto& s : run_settings())
            if (s.name == name) frozen = s.frozen;
          if (!frozen) continue;
          const json now = fresh["settings"][name];
          if (!stored_settings.is_object()) {
            throw std::invalid_argument("--resume: this run was written before its settings were stored, so --" + name +
                                        " cannot be checked; resume it without --" + name);
          }
          if (!stored_settings.contains(name) || stored_settings[name] != now) {
            throw std::invalid_argument("--resume: --" + name + " " + now.dump() + " differs from the run's " +
                                        (stored_settings.contains(name) ? stored_settings[name].dump() : "(unset)") +
                                        "; a resumed run keeps its settings (start a new --out instead)");
          }
        }
        config = stored.config_;
        for (const auto& [flag, key] : std::vector<std::pair<std::string, std::string>>{
                 {"steps", "steps"}, {"log-every", "log_every"}, {"checkpoint-every", "checkpoint_every"}, {"keep", "keep"}}) {
          if (settings.contains(flag) || settings.contains(key)) {
            config["training"][key] = fresh["training"][key];
            if (config.contains("settings") && config["settings"].is_object()) config["settings"][flag] = fresh["settings"][flag];
          }
        }
        // --validate may be switched on or off, or its tolerance changed, on resume.
        if (!validate_given.is_null()) {
          const json stored_settings_now = config.value("settings", json::object());
          const json metric_value = validate_given.contains("validate") ? validate_given["validate"]
                                                                       : json(config.contains("validation") ? "nll" : "off");
          if (metric_value != "off" && metric_value != "nll") {
            throw std::invalid_argument("--validate " + metric_value.dump() + ": expected \"off\" or \"nll\"");
          }
          const std::string metric = metric_value.get<std::string>();
          const json tol_value = validate_given.contains("validate-tol") ? validate_given["validate-tol"]
                                                                          : stored_settings_now.value("validate-tol", json(1e-4));
          if (!tol_value.is_number() || !(tol_value.get<double>() > 0 && tol_value.get<double>() < 1)) {
            throw std::invalid_argument("--validate-tol " + tol_value.dump() + ": expected a number in (0, 1)");
          }
          if (metric == "nll") {
            config["validation"] = make_validation_spec(config, tol_value.get<double>());
          } else {
            config.erase("validation");
          }
          if (config.contains("settings") && config["settings"].is_object()) {
            config["settings"]["validate"] = metric;
            config["settings"]["validate-tol"] = tol_value;
          }
        }
        resume_from = pick_resume_checkpoint(probe, fallback, report);
      } else if (has_run) {
        throw std::invalid_argument("'" + dir + "' already holds a run; pass --resume to continue it or choose another --out");
      } else {
        config = fresh;
        if (group) {
          config["distributed"] = {{"world_size", group->world_size()},
                                   {"backend", distributed::to_string(group->backend())},
                                   {"global_batch", config["training"]["batch"].get<int64_t>() * group->world_size()}};
        }
      }
    } catch (const std::invalid_argument& e) {
      error = e.what();
    } catch (const std::exception& e) {
      error = e.what();
      kind = 'R';
    }
    if (group) group->broadcast_string(error.empty() ? std::string() : std::string(1, kind) + error);
    if (!error.empty()) {
      if (kind == 'U') throw std::invalid_argument(error);
      throw std::runtime_error(error);
    }
  } else {
    const std::string error = group->broadcast_string("");
    if (!error.empty()) {
      if (error[0] == 'U') throw std::invalid_argument("rank 0: " + error.substr(1));
      throw std::runtime_error("rank 0: " + error.substr(1));
    }
  }
  if (group) {
    config = json::parse(group->broadcast_string(config.dump()));
    resume_from = group->broadcast_string(resume_from);
  }
  Run run(dir, config);
  run.resume_from_ = resume_from;
  return run;
}

std::string Run::latest_checkpoint() const {
  auto all = list_checkpoints(checkpoint_dir());
  if (all.empty()) throw std::runtime_error("run '" + dir_ + "' has no checkpoint yet (in " + checkpoint_dir() + ")");
  return all.back();
}

std::string Run::best_checkpoint() const {
  const std::string path = checkpoint_dir() + "/best.ckpt";
  std::error_code ec;
  if (!fs::exists(path, ec) && !fs::exists(best_json(), ec)) {
    throw std::invalid_argument("--checkpoint best: run '" + dir_ + "' has no " + path +
                                " (it is kept by training with --validate nll)");
  }
  (void)read_best(*this);  // the two agree
  return path;
}

int64_t Run::checkpoint_step_of(const std::string& checkpoint) const {
  const int64_t named = checkpoint_step(checkpoint);
  if (named >= 0) return named;
  const json meta = read_checkpoint(checkpoint).meta;
  return meta.contains("step") && meta["step"].is_number_integer() ? meta["step"].get<int64_t>() : -1;
}

std::shared_ptr<models::VelocityModel> Run::model(const std::string& checkpoint, const c10::Device& device) const {
  if (is_model_file()) {  // a TorchScript model file: the scripted model as saved
    if (!checkpoint.empty()) throw std::invalid_argument("--checkpoint applies to runs, not to --model-file");
    auto model = models::make_model(config_["model"]);
    model->to(device);
    return model;
  }
  std::string path = checkpoint.empty() ? latest_checkpoint() : checkpoint == "best" ? best_checkpoint() : checkpoint;
  json meta;
  std::shared_ptr<models::VelocityModel> model;
  for (int attempt = 0;; ++attempt) {
    try {
      model = load_model(path, /*ema=*/true, &meta);
      break;
    } catch (const std::runtime_error&) {
      // While a run trains, the newest checkpoint of a moment ago may have been pruned: take the newest again.
      std::error_code ec;
      if (!checkpoint.empty() || fs::exists(path, ec) || attempt >= 5) throw;
      path = latest_checkpoint();
    }
  }
  if (meta.contains("run_id") && meta["run_id"] != run_identity(config_)) {
    throw std::runtime_error("'" + path + "' belongs to another run (run id " + meta["run_id"].get<std::string>() + ", this run's " +
                             run_identity(config_) + ": its path, prediction, data or network differ)");
  }
  if (model->spec() != config_["model"]) {
    throw std::runtime_error("'" + path + "' holds model " + model->spec().dump() + ", but the run describes " + config_["model"].dump());
  }
  model->to(device);
  return model;
}

SamplingFlow Run::flow(std::shared_ptr<models::VelocityModel> model, const std::string& scheduler, VelocityField network) const {
  SamplingFlow flow;
  try {
    flow.path = make_path(config_["path"]);
    flow.prediction = config_.value("prediction", std::string("velocity"));
    const PredictionTarget target = prediction_target_from_string(flow.prediction);
    auto trained = flow.path->scheduler();
    flow.field = velocity_from_prediction(network ? network : as_velocity_field(std::move(model)), target, trained);
    flow.scheduler = trained ? trained->name() : config_["path"].value("type", std::string("?"));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("'" + config_path() + "': " + e.what());
  }
  if (!scheduler.empty()) {
    if (!flow.path->scheduler()) throw std::invalid_argument("--scheduler: this run's path has no scheduler to replace");
    std::shared_ptr<const Scheduler> wanted;
    try {
      wanted = make_scheduler(scheduler);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--scheduler: ") + e.what());
    }
    if (wanted->spec() != flow.path->scheduler()->spec()) {
      flow.field = schedule_transformed_field(flow.field, flow.path->scheduler(), wanted);
      flow.scheduler = wanted->name() + " (transformed from " + flow.scheduler + ")";
      flow.path = std::make_shared<AffinePath>(wanted);
    }
  }
  return flow;
}

SamplingFlow Run::guided_flow(std::shared_ptr<models::VelocityModel> model, const at::Tensor& labels, double guidance) const {
  return flow(model, "", guided_velocity_field(model, labels, guidance));
}

FlowMatchingProblem Run::problem() const {
  FlowMatchingProblem problem;
  problem.path = make_path(config_["path"]);
  const json& data = config_["data"];
  if (data.contains("pairs")) {
    // A rectified-flow round: minibatches of the stored (noise, sample) pairs.
    const json& pairs = data["pairs"];
    auto load = [&](const char* key) {
      const std::string file = dir_ + "/" + pairs.at(key).get<std::string>();
      try {
        return io::load_npy(file);
      } catch (const std::exception& e) {
        throw std::runtime_error("reflow pairs '" + file + "': " + e.what());
      }
    };
    problem.pairs = stored_pair_sampler({load("x0"), load("x1")});
  } else {
    problem.source = domain_->source(data);
    domain_->add_training_data(data, dir_, problem);
    problem.coupling = make_coupling(config_["coupling"]);
    if (auto space = problem.path->manifold()) problem.coupling->set_cost(squared_geodesic_cost(space));
  }
  problem.prediction = prediction_target_from_string(config_.value("prediction", std::string("velocity")));
  problem.time_sampling = time_sampling_from_json(config_.value("time_sampling", json::object()));
  problem.objective = make_objective(config_.value("objective", json{{"type", "regression"}}));
  return problem;
}

TrainOutcome Run::train(const TrainRunOptions& how) {
  // Build everything before writing anything, so bad settings leave no files behind.
  FlowMatchingProblem problem = this->problem();
  const TrainerOptions options = trainer_options(config_.at("training"), checkpoint_dir(), config_path()).run_id(run_identity(config_));
  validate(options);
  if (config_.contains("validation") && how.group) {
    // Rank 0 would hold the other ranks in their next all-reduce for the whole solve, past --dist-timeout.
    throw std::invalid_argument("--validate nll does not go with data-parallel training yet (resume with --validate off); score "
                                "checkpoints afterwards with 'flowmatch likelihood --split validation --checkpoint FILE'");
  }
  at::manual_seed(options.seed());
  auto model = models::make_model(config_["model"]);
  model->to(how.device);
  if (how.initial && resume_from_.empty()) {
    // Start from another run's (sampling) weights: the same architecture by construction.
    torch::NoGradGuard no_grad;
    auto from = how.initial->parameters();
    auto to = model->parameters();
    if (from.size() != to.size()) throw std::runtime_error("initial weights do not match the model's architecture");
    for (size_t k = 0; k < to.size(); ++k) to[k].copy_(from[k]);
  }
  Trainer trainer(model, problem, options);
  const bool writer = !how.group || how.group->rank() == 0;  // only rank 0 writes and talks
  if (how.group) trainer.distribute(how.group);
  if (!resume_from_.empty()) trainer.load_checkpoint(resume_from_);  // settings are checked here
  TrainOutcome outcome;
  outcome.first_step = outcome.step = trainer.step();
  outcome.total_steps = options.steps();
  if (trainer.step() >= options.steps()) return outcome;
  if (how.started && writer) how.started(*this, *model, trainer.step());

  std::ofstream metrics;
  std::set<int64_t> validated_steps;  // steps with a validation line in metrics.jsonl
  std::shared_ptr<RunLock> lock;
  std::error_code ec;
  const bool created_folder = writer && !fs::exists(dir_, ec);
  const bool fresh = resume_from_.empty() && trainer.step() == 0;
  if (writer) {
    fs::create_directories(dir_);
    lock = lock_run_folder(dir_);
    if (fresh && (fs::exists(config_path(), ec) || !list_checkpoints(checkpoint_dir()).empty())) {
      throw std::invalid_argument("'" + dir_ + "' already holds a run; pass --resume to continue it or choose another --out");
    }
    remove_stale_temporaries(dir_);
    remove_stale_temporaries(checkpoint_dir());
    fs::create_directories(checkpoint_dir());
    write_json_file(config_path(), config_);
    // Keep the loss history up to the resumed step only.
    std::string kept;
    for (const auto& j : read_metrics(metrics_jsonl(), trainer.step())) {
      kept += j.dump() + "\n";
      if (j.contains("validation_nll")) validated_steps.insert(j["step"].get<int64_t>());
    }
    io::write_file_atomic(metrics_jsonl(), kept);
    metrics.open(metrics_jsonl(), std::ios::app);
  }
  const std::string unit = domain_->sample_unit();
  TrainCallbacks callbacks;
  if (writer) {
    callbacks.progress = [&](const TrainProgress& p) {
      json line = {{"step", p.step}, {"loss", p.loss}, {"lr", p.lr}, {"it_per_s", p.it_per_s}};
      if (!unit.empty()) line[unit + "_per_s"] = p.it_per_s * static_cast<double>(options.batch_size());
      if (p.world_size > 1 || how.group) line["world_size"] = p.world_size, line["communication_ms"] = p.communication_ms;
      metrics << line.dump() << "\n";
      metrics.flush();
      if (how.progress) how.progress(p);
    };
  }
  callbacks.should_stop = how.should_stop;
  // --validate nll: every checkpoint's sampling weights are scored on the validation split, and the best
  // so far is copied to checkpoints/best.ckpt (best.json beside it), both written atomically. A resumed
  // run keeps its best unless it comes from steps after the resumed checkpoint (they are trained again).
  const json validation = config_.value("validation", json());
  if (writer) forget_stale_best(*this, trainer.step());
  if (writer && !validation.is_null()) outcome.best = read_best(*this);
  // --validate nll: a checkpoint's sampling weights scored on the validation split; the best so far is
  // copied to checkpoints/best.ckpt, then best.json written (each atomically; read_best checks that the
  // two agree). The global generator (weight initialisation, dropout) is put back afterwards, so that
  // validating leaves the training bit-identical to a run without it.
  auto validate_checkpoint = [&](const std::string& path, int64_t step) {
    LikelihoodRequest q;
    q.split = validation.value("split", std::string("validation"));
    q.solver = validation.value("solver", std::string("dopri5"));
    q.atol = validation.value("atol", 1e-4);
    q.rtol = validation.value("rtol", 1e-4);
    q.error_norm = validation.value("error_norm", std::string("batch"));
    q.n = 10000000;  // the whole split
    q.grid = 0;
    q.checkpoint = path;
    q.device = how.device;
    auto global = at::detail::getDefaultCPUGenerator();
    at::Tensor generator_state;
    {
      std::lock_guard<std::mutex> lock(global.mutex());
      generator_state = global.get_state();
    }
    json r;
    try {
      r = likelihood(q).result;
    } catch (const std::exception& e) {
      throw std::runtime_error("--validate nll at step " + std::to_string(step) + " (" + path + "): " + e.what() +
                               "; the checkpoint is kept: resume with --validate off, or another --validate-tol");
    }
    {
      std::lock_guard<std::mutex> lock(global.mutex());
      global.set_state(generator_state);
    }
    json line = {{"step", step},
                 {"validation_nll", r["nll"]},
                 {"validation_nll_stderr", r["nll_stderr"]},
                 {"validation_n", r["n"]},
                 {"validation_nfe", r["nfe"]},
                 {"validation_seconds", r["seconds"]}};
    metrics << line.dump() << "\n";
    metrics.flush();
    const bool best = outcome.best.is_null() || r["nll"].get<double>() < outcome.best["validation_nll"].get<double>();
    if (best) {
      io::write_file_atomic(checkpoint_dir() + "/best.ckpt", io::read_file(path));
      outcome.best = line;
      outcome.best["checkpoint"] = fs::path(path).filename().string();
      outcome.best["split"] = q.split;
      write_json_file(best_json(), outcome.best);
    }
    if (how.validated) how.validated(step, line, best);
  };
  // A resumed checkpoint not scored yet (validation switched on now, or the run was interrupted as it was
  // written) is scored first.
  if (writer && !validation.is_null() && !resume_from_.empty() && !validated_steps.count(trainer.step())) {
    validate_checkpoint(resume_from_, trainer.step());
  }
  callbacks.checkpoint_saved = [&](const std::string& path, int64_t step) {
    outcome.last_checkpoint = path;
    // Interrupted: exit now; the checkpoint is scored when the run resumes.
    if (validation.is_null() || (how.should_stop && how.should_stop())) return;
    validate_checkpoint(path, step);
  };
  const auto start = std::chrono::steady_clock::now();
  try {
    trainer.train(callbacks);
  } catch (...) {
    // A new run that failed before its first checkpoint leaves nothing behind (the next
    // `train --out` with the same folder would be refused otherwise).
    if (writer && fresh && list_checkpoints(checkpoint_dir()).empty()) {
      metrics.close();
      for (const std::string& f : {config_path(), metrics_jsonl(), dir_ + "/loss.png", dir_ + "/.lock"}) fs::remove(f, ec);
      fs::remove(checkpoint_dir(), ec);  // only when empty
      if (created_folder) fs::remove(dir_, ec);
    }
    throw;
  }
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  outcome.step = trainer.step();
  if (writer) {
    metrics.close();
    write_loss_curve(*this);
    try_write_run_index(*this);
  }
  return outcome;
}

TrainOutcome Run::train_on_own_pairs(const std::string& dir, const PairGenerationOptions& g, const TrainRunOptions& how,
                                     json& pairs_info) const {
  const std::string parent_dir = is_model_file() ? config_["model"]["file"].get<std::string>() : dir_;
  auto parent_model = model("", how.device);
  SamplingFlow parent_flow = flow(parent_model);
  if (parent_flow.path->manifold()) {
    throw std::invalid_argument("'" + parent_dir + "' is a run on the " + parent_flow.path->manifold()->name() +
                                ": reflow and distillation train straight paths, which apply to Euclidean runs only");
  }
  // The pairs start where the parent's samples start; the new run's straight path starts at its x0.
  const double start_scale = parent_flow.path->start(at::ones({1, 1}, at::kDouble)).item<double>();
  if (std::abs(start_scale - 1.0) > 1e-12) {
    throw std::invalid_argument("'" + parent_dir + "' starts sampling at " + std::to_string(start_scale) +
                                " x source; rectified flow needs a path that starts at the source itself (sigma_0 = 1)");
  }
  const SolverInfo info = solver_info(g.solver);
  if (info.stochastic) throw std::invalid_argument("pairs are drawn with an ODE solver, not " + g.solver);
  const auto solver = SolverOptions().method(solver_method_from_string(g.solver)).steps(g.steps).atol(g.atol).rtol(g.rtol);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(g.seed);
  at::Tensor x0 = domain_->source(config_["data"])(g.pairs, gen).to(how.device);
  std::error_code ec;
  const bool created = !fs::exists(dir, ec);
  auto remove_created = [&] {
    if (created) fs::remove_all(dir, ec);
  };
  try {
  ReflowPairs pairs;
  {
    c10::InferenceMode guard;
    pairs = generate_reflow_pairs(parent_flow.field, x0, solver);
  }
  fs::create_directories(dir);
  io::save_npy(dir + "/pairs-x0.npy", pairs.x0.to(at::kCPU, at::kFloat));
  io::save_npy(dir + "/pairs-x1.npy", pairs.x1.to(at::kCPU, at::kFloat));
  pairs_info = {{"x0", "pairs-x0.npy"}, {"x1", "pairs-x1.npy"}, {"from", parent_dir}, {"n", g.pairs},
                {"solver", g.solver}, {"nfe", pairs.nfe}, {"seed", g.seed}};
  if (info.adaptive) {
    pairs_info["atol"] = g.atol;
    pairs_info["rtol"] = g.rtol;
  } else {
    pairs_info["steps"] = g.steps;
  }
  json cfg = config_;
  if (is_model_file()) {
    // The TorchScript parent goes into the run: a later change of the original file cannot change the run.
    const std::string copy = (fs::absolute(dir) / "parent-model.pt").string();
    fs::copy_file(config_["model"]["file"].get<std::string>(), copy, fs::copy_options::overwrite_existing);
    cfg["model"]["file"] = copy;
  }
  cfg.erase("stand_in");
  cfg.erase("settings");
  cfg["path"] = CondOTPath(CondOTPathOptions().sigma(0.0)).spec();
  cfg["prediction"] = "velocity";
  cfg["objective"] = RegressionObjective().spec();
  auto times = TimeSamplingOptions();
  if (g.distill) times.distribution(TimeDistribution::Constant).constant_time(0.0);
  cfg["time_sampling"] = to_json(times);
  cfg["coupling"] = {{"type", "stored-pairs"}};
  cfg["data"]["pairs"] = pairs_info;
  if (g.distill) cfg["distilled_from"] = parent_dir;
  if (g.train_steps > 0) cfg["training"]["steps"] = g.train_steps;
  cfg["training"]["seed"] = g.seed + 1;
  Run child(dir, cfg);
  TrainRunOptions with_weights = how;
  if (!g.from_scratch) with_weights.initial = parent_model;
  const TrainOutcome outcome = child.train(with_weights);
  return outcome;
  } catch (...) {
    // Nothing of a round that did not train to its first checkpoint is left (its pairs included).
    if (list_checkpoints(dir + "/checkpoints").empty()) remove_created();
    throw;
  }
}

}  // namespace flowmatch
