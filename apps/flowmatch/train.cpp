// flowmatch train: fit a velocity field between two distributions and keep checkpoints,
// metrics.jsonl and a loss curve in the run folder.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <ATen/ATen.h>

#include "common.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/coupling.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/distributed.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/unet.h"
#include "flowmatch/data/idx.h"
#include "flowmatch/data/images.h"
#include "flowmatch/paths.h"
#include "flowmatch/reflow.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/train.h"

namespace fmcli {

namespace fs = std::filesystem;
namespace fm = flowmatch;

namespace {

struct TrainFlags {
  CommonFlags common;
  std::string source = "8gaussians", target = "moons", data;
  int64_t data_dim = 2;  // set from --data
  int64_t steps = 20000, batch = 256;
  double lr = 1e-3, weight_decay = 0, grad_clip = 0, ema = 0, warmup = 0, min_lr_ratio = 0;
  // Path: scheduler, its parameters, interpolant noise (σ: 0.1 on condot as TorchCFM, else 0 unless given).
  std::string path = "condot", path_noise = "constant";
  std::optional<double> sigma;
  double sigma_min = 0, exponent = 2, beta_min = 0.1, beta_max = 20, ve_sigma_min = 0.01, ve_sigma_max = 30;
  // What the network predicts, and how times are drawn and weighted.
  std::string predict = "velocity", time_sampling = "uniform", loss_weighting = "none";
  double logit_location = 0, logit_scale = 1, mode_scale = 1.29;
  std::string coupling = "exact-ot", optimizer = "adam", lr_schedule = "constant";
  // Entropic couplings: Sinkhorn's ε (schrodinger-bridge: 2σ², not set here) and iteration cap.
  std::optional<double> ot_reg;
  int64_t ot_iterations = 2000;
  int64_t width = 64, depth = 3, time_features = 16;
  std::string activation = "selu", time_encoding = "plain";
  int64_t log_every = 100, checkpoint_every = 1000, keep = 3;
  // Image data (--data fashion-mnist or an image folder): U-Net and class conditioning.
  std::string data_dir = flowmatch::data::kFashionMnistDir;
  json images;  // data spec of an image run, set from --data
  double label_dropout = 0.1, dropout = 0;
  int64_t channels = 32, blocks = 1, heads = 4, image_channels = 0;
  std::vector<int64_t> channel_mult{1, 2, 2};
  bool no_attention = false;
  std::string out;
  bool resume = false, resume_fallback = false, quiet = false;
  // Data-parallel training (torchrun's environment variables).
  bool distributed = false;
  double dist_timeout = 300;
  std::string dist_backend = "auto";
};

// σ of the interpolant noise: as given, else TorchCFM's defaults (1.0 for the Schrödinger bridge,
// 0.1 on condot, 0 on the other paths).
double default_sigma(const TrainFlags& f) {
  if (f.sigma) return *f.sigma;
  if (f.coupling == "schrodinger-bridge") return 1.0;
  return f.path == "condot" ? 0.1 : 0.0;
}

json coupling_spec(const TrainFlags& f) {
  fm::SinkhornOptions sinkhorn = fm::SinkhornOptions().max_iterations(f.ot_iterations);
  if (f.coupling == "sinkhorn") return fm::SinkhornCoupling(sinkhorn.reg(f.ot_reg.value_or(0.5))).spec();
  if (f.coupling == "schrodinger-bridge") return fm::SchrodingerBridgeCoupling(default_sigma(f), sinkhorn).spec();
  return fm::make_coupling(f.coupling)->spec();
}

// The resolved configuration, as saved in config.json. Flag name → JSON pointer, for the
// check that a resumed run is not silently changed.
json path_spec(const TrainFlags& f) {
  json scheduler = {{"type", f.path}};
  if (f.path == "condot") scheduler["sigma_min"] = f.sigma_min;
  if (f.path == "polynomial") scheduler["exponent"] = f.exponent;
  if (f.path == "vp") scheduler["beta_min"] = f.beta_min, scheduler["beta_max"] = f.beta_max;
  if (f.path == "ve") scheduler["sigma_min"] = f.ve_sigma_min, scheduler["sigma_max"] = f.ve_sigma_max;
  const double sigma = default_sigma(f);
  try {
    auto scheduler_object = fm::make_scheduler(scheduler);  // checks the parameters
    return fm::AffinePath(scheduler_object, fm::AffinePathOptions()
                                                .noise(fm::interpolant_noise_from_string(f.path_noise))
                                                .noise_scale(sigma))
        .spec();
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--path ") + f.path + ": " + e.what());
  }
}

json time_sampling_spec(const TrainFlags& f) {
  const auto options = fm::TimeSamplingOptions()
                           .distribution(fm::time_distribution_from_string(f.time_sampling))
                           .weighting(fm::loss_weighting_from_string(f.loss_weighting))
                           .location(f.logit_location)
                           .scale(f.logit_scale)
                           .mode_scale(f.mode_scale);
  fm::validate(options);
  return fm::to_json(options);
}

json data_spec(const TrainFlags& f) {
  if (!f.images.is_null()) return f.images;
  if (f.data.empty()) return {{"source", f.source}, {"target", f.target}};
  return {{"source", f.source}, {"target", "file"}, {"target_file", fs::absolute(f.data).string()}, {"dim", f.data_dim}};
}

json model_spec(const TrainFlags& f) {
  if (!f.images.is_null()) {
    const auto shape = f.images.at("image_shape").get<std::vector<int64_t>>();
    if (shape[1] != shape[2]) {
      throw std::invalid_argument("the U-Net needs square images, got " + std::to_string(shape[1]) + "x" + std::to_string(shape[2]));
    }
    fm::models::UNetOptions unet(shape[0], shape[1]);
    unet.base_channels(f.channels)
        .channel_multipliers(f.channel_mult)
        .blocks_per_level(f.blocks)
        .attention(!f.no_attention)
        .attention_heads(f.heads)
        .dropout(f.dropout)
        .num_classes(f.images.at("num_classes").get<int64_t>());
    return fm::models::UNetImpl(unet).spec();  // validates
  }
  fm::models::MLPOptions mlp(f.data_dim);
  mlp.width(f.width)
      .depth(f.depth)
      .activation(fm::models::activation_from_string(f.activation))
      .time_encoding(fm::models::time_encoding_from_string(f.time_encoding))
      .time_features(f.time_features);
  return {{"type", "mlp"}, {"options", fm::models::to_json(mlp)}};
}

json build_config(const TrainFlags& f) {
  return {{"flowmatch_version", FLOWMATCH_VERSION},
          {"data", data_spec(f)},
          {"model", model_spec(f)},
          {"path", path_spec(f)},
          {"prediction", f.predict},
          {"time_sampling", time_sampling_spec(f)},
          {"coupling", coupling_spec(f)},
          {"training",
           {{"steps", f.steps},
            {"batch", f.batch},
            {"lr", f.lr},
            {"optimizer", f.optimizer},
            {"weight_decay", f.weight_decay},
            {"grad_clip", f.grad_clip},
            {"ema", f.ema},
            {"lr_schedule", f.lr_schedule},
            {"warmup", static_cast<int64_t>(f.warmup)},
            {"min_lr_ratio", f.min_lr_ratio},
            {"seed", f.common.seed},
            {"log_every", f.log_every},
            {"checkpoint_every", f.checkpoint_every},
            {"keep", f.keep}}}};
}

const std::vector<std::pair<std::string, std::string>> kFrozenOnResume = {
    {"--source", "/data/source"},         {"--target", "/data/target"},  {"--data", "/data/target_file"},
    {"--width", "/model/options/width"},  {"--depth", "/model/options/depth"},
    {"--activation", "/model/options/activation"}, {"--time-encoding", "/model/options/time_encoding"},
    {"--time-features", "/model/options/time_features"}, {"--sigma", "/path/sigma"},
    {"--path", "/path/scheduler/type"},   {"--path-noise", "/path/noise"},
    {"--sigma-min", "/path/scheduler/sigma_min"}, {"--exponent", "/path/scheduler/exponent"},
    {"--beta-min", "/path/scheduler/beta_min"}, {"--beta-max", "/path/scheduler/beta_max"},
    {"--ve-sigma-min", "/path/scheduler/sigma_min"}, {"--ve-sigma-max", "/path/scheduler/sigma_max"},
    {"--predict", "/prediction"},         {"--time-sampling", "/time_sampling/distribution"},
    {"--loss-weighting", "/time_sampling/weighting"}, {"--logit-location", "/time_sampling/location"},
    {"--logit-scale", "/time_sampling/scale"}, {"--mode-scale", "/time_sampling/mode_scale"},
    {"--coupling", "/coupling/type"},     {"--ot-reg", "/coupling/reg"},
    {"--ot-iterations", "/coupling/max_iterations"}, {"--batch", "/training/batch"},
    {"--lr", "/training/lr"},             {"--optimizer", "/training/optimizer"},
    {"--weight-decay", "/training/weight_decay"}, {"--grad-clip", "/training/grad_clip"},
    {"--ema", "/training/ema"},           {"--lr-schedule", "/training/lr_schedule"},
    {"--warmup", "/training/warmup"},     {"--min-lr-ratio", "/training/min_lr_ratio"},
    {"--seed", "/training/seed"},         {"--data-dir", "/data/data_dir"},
    {"--label-dropout", "/data/label_dropout"}, {"--channels", "/model/options/base_channels"},
    {"--channel-mult", "/model/options/channel_multipliers"}, {"--blocks", "/model/options/blocks_per_level"},
    {"--heads", "/model/options/attention_heads"}, {"--dropout", "/model/options/dropout"}};

fm::TrainerOptions trainer_options(const json& t, const std::string& checkpoint_dir) {
  return fm::TrainerOptions()
      .steps(t.at("steps").get<int64_t>())
      .batch_size(t.at("batch").get<int64_t>())
      .lr(t.at("lr").get<double>())
      .optimizer(fm::optimizer_kind_from_string(t.at("optimizer").get<std::string>()))
      .weight_decay(t.at("weight_decay").get<double>())
      .grad_clip(t.at("grad_clip").get<double>())
      .ema_decay(t.at("ema").get<double>())
      .lr_schedule(fm::lr_schedule_from_string(t.at("lr_schedule").get<std::string>()))
      .warmup_steps(t.at("warmup").get<int64_t>())
      .min_lr_ratio(t.at("min_lr_ratio").get<double>())
      .seed(t.at("seed").get<uint64_t>())
      .log_every(t.at("log_every").get<int64_t>())
      .checkpoint_every(t.at("checkpoint_every").get<int64_t>())
      .keep_checkpoints(t.at("keep").get<int64_t>())
      .checkpoint_dir(checkpoint_dir);
}

// metrics.jsonl keeps one line per report; on resume the lines after the checkpoint are dropped
// (they will be produced again). Malformed (partially written) lines are skipped.
std::vector<json> read_metrics(const std::string& path, int64_t up_to_step) {
  std::vector<json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    try {
      json j = json::parse(line);
      if (j.contains("step") && j["step"].get<int64_t>() <= up_to_step) lines.push_back(j);
    } catch (const json::exception&) {
    }
  }
  return lines;
}

void write_loss_curve(const RunFolder& run) {
  std::vector<double> x, y;
  for (const auto& j : read_metrics(run.metrics_jsonl(), INT64_MAX)) {
    if (j.contains("loss")) {
      x.push_back(j["step"].get<double>());
      y.push_back(j["loss"].get<double>());
    }
  }
  if (x.empty()) return;
  fm::io::PlotStyle style;
  style.width = 720;
  style.height = 420;
  style.title = "training loss (log scale) vs step";
  fm::io::write_line_png(run.dir + "/loss.png", {{x, y, {31, 119, 180}, "loss"}}, style, /*log_y=*/true);
}

// The newest checkpoint that verifies (magic, length, CRC-32, readable archive). A damaged newest one
// is an error naming it and the newest intact one, unless `fallback`: then the damaged ones are moved
// to checkpoints/damaged/ (kept for inspection, never picked again) and the intact one is used.
std::string pick_resume_checkpoint(const RunFolder& run, bool fallback) {
  const auto checkpoints = fm::list_checkpoints(run.checkpoint_dir());
  if (checkpoints.empty()) return "";
  auto damage = [](const std::string& path) -> std::string {
    try {
      fm::read_checkpoint(path);
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
    throw std::runtime_error(newest_damage + "; the newest intact checkpoint is " + intact +
                             ": pass --resume-fallback to resume from it");
  }
  const fs::path damaged_dir = fs::path(run.checkpoint_dir()) / "damaged";
  fs::create_directories(damaged_dir);
  for (const auto& c : checkpoints) {
    if (fm::checkpoint_step(c) > fm::checkpoint_step(intact)) fs::rename(c, damaged_dir / fs::path(c).filename());
  }
  std::cerr << "flowmatch train: " << newest_damage << "; moved to " << damaged_dir.string() << "/, resuming from " << intact
            << "\n";
  return intact;
}

// Checks --out, and with --resume reads the stored run (settings that may not change are compared)
// and picks its newest checkpoint.
void prepare_run_folder(const TrainFlags& f, CLI::App* app, RunFolder& run, std::string& resume_from) {
  try {
    fm::io::ensure_writable_directory(f.out);
  } catch (const std::runtime_error& e) {
    throw UsageError(std::string("--out: ") + e.what());
  }
  const bool has_run = fs::exists(run.config_path()) || !fm::list_checkpoints(run.checkpoint_dir()).empty();
  if (f.resume) {
    if (!fs::exists(run.config_path())) throw UsageError("--resume: '" + f.out + "' holds no run (no config.json)");
    RunFolder stored = open_run(f.out);
    for (const auto& [flag, pointer] : kFrozenOnResume) {
      if (app->count(flag) == 0) continue;
      const json::json_pointer ptr(pointer);
      if (!stored.config.contains(ptr) || stored.config[ptr] != run.config[ptr]) {
        throw UsageError("--resume: " + flag + " " + run.config[ptr].dump() + " differs from the run's " +
                         (stored.config.contains(ptr) ? stored.config[ptr].dump() : "(unset)") +
                         "; a resumed run keeps its settings (start a new --out instead)");
      }
    }
    const int64_t steps = run.config["training"]["steps"];
    const int64_t log_every = run.config["training"]["log_every"];
    const int64_t checkpoint_every = run.config["training"]["checkpoint_every"];
    const int64_t keep = run.config["training"]["keep"];
    run.config = stored.config;
    if (app->count("--steps")) run.config["training"]["steps"] = steps;
    if (app->count("--log-every")) run.config["training"]["log_every"] = log_every;
    if (app->count("--checkpoint-every")) run.config["training"]["checkpoint_every"] = checkpoint_every;
    if (app->count("--keep")) run.config["training"]["keep"] = keep;
    resume_from = pick_resume_checkpoint(run, f.resume_fallback);
  } else if (has_run) {
    throw UsageError("'" + f.out + "' already holds a run; pass --resume to continue it or choose another --out");
  }
}

// The data description of an image run: the data set is read now (errors before anything is written).
json image_data_spec(const TrainFlags& f) {
  json spec;
  fm::data::ImageDataset data;
  try {
    if (f.data == "fashion-mnist") {
      data = fm::data::fashion_mnist_dataset("train", f.data_dir);
      spec = {{"target", "fashion-mnist"}, {"data_dir", fs::absolute(f.data_dir).string()}};
    } else {
      data = fm::data::load_image_folder(f.data, f.image_channels);
      spec = {{"target", "image-folder"}, {"folder", fs::absolute(f.data).string()}};
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("--data ") + f.data + ": " + e.what());
  }
  spec["source"] = "gaussian";
  spec["dim"] = data.pixels_per_image();
  spec["image_shape"] = {data.channels(), data.height(), data.width()};
  spec["num_classes"] = static_cast<int64_t>(data.class_names.size());
  spec["class_names"] = data.class_names;
  spec["label_dropout"] = f.label_dropout;
  spec["train_images"] = data.images.size(0);
  return spec;
}

std::shared_ptr<fm::distributed::DataParallel> join_group(const TrainFlags& f, const c10::Device& device) {
  fm::distributed::DistributedOptions options;
  try {
    options = fm::distributed::options_from_environment();
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--distributed: ") + e.what());
  }
  options.timeout_s(f.dist_timeout).backend(fm::distributed::backend_from_string(f.dist_backend));
  if (!fm::distributed::gloo_available()) {
    throw UsageError("--distributed: this flowmatch was built without c10d Gloo (see README: libgloo-dev)");
  }
  // One GPU per process on a machine: LOCAL_RANK picks it.
  const c10::Device rank_device = device.is_cuda() ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(options.local_rank())) : device;
  return std::make_shared<fm::distributed::DataParallel>(options, rank_device);
}

int run_train(TrainFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  // A scheduler parameter given for another path is a mistake worth naming.
  for (const auto& [flag, owner] : std::vector<std::pair<std::string, std::string>>{
           {"--sigma-min", "condot"}, {"--exponent", "polynomial"}, {"--beta-min", "vp"}, {"--beta-max", "vp"},
           {"--ve-sigma-min", "ve"}, {"--ve-sigma-max", "ve"}}) {
    if (app->count(flag) > 0 && f.path != owner) {
      throw UsageError(flag + " applies to --path " + owner + ", not --path " + f.path);
    }
  }
  const bool image_data = f.data == "fashion-mnist" || (!f.data.empty() && fs::is_directory(f.data));
  for (const char* flag : {"--data-dir", "--label-dropout", "--channels", "--channel-mult", "--blocks", "--no-attention", "--heads",
                           "--dropout", "--image-channels"}) {
    if (app->count(flag) > 0 && !image_data) throw UsageError(std::string(flag) + " applies to image data (--data fashion-mnist or an image folder)");
  }
  for (const char* flag : {"--width", "--depth", "--activation", "--time-encoding", "--time-features", "--source"}) {
    if (app->count(flag) > 0 && image_data) throw UsageError(std::string(flag) + " does not apply to image data (the source is N(0, I), the network a U-Net)");
  }
  if (image_data) {
    f.images = image_data_spec(f);
    f.data_dim = f.images["dim"].get<int64_t>();
    f.source = "gaussian";
    // Image defaults (each flag still wins): see docs/IMAGES.md.
    auto unless_given = [&](const char* flag, auto& value, auto image_default) {
      if (app->count(flag) == 0) value = image_default;
    };
    unless_given("--steps", f.steps, int64_t{4500});
    unless_given("--batch", f.batch, int64_t{64});
    unless_given("--lr", f.lr, 5e-4);
    unless_given("--coupling", f.coupling, std::string("independent"));
    unless_given("--path-noise", f.path_noise, std::string("none"));
    if (app->count("--sigma") == 0) f.sigma = 0.0;
    unless_given("--ema", f.ema, 0.999);
    unless_given("--lr-schedule", f.lr_schedule, std::string("cosine"));
    unless_given("--warmup", f.warmup, 200.0);
    unless_given("--grad-clip", f.grad_clip, 1.0);
    unless_given("--log-every", f.log_every, int64_t{50});
    unless_given("--checkpoint-every", f.checkpoint_every, int64_t{250});
  } else if (!f.data.empty()) {
    // A point cloud (N, D) as the target: read and checked now; the source is N(0, I) in D dimensions
    // unless a 2-D toy source is asked for a 2-D cloud.
    f.data_dim = fm::data::load_point_cloud(f.data).size(1);
    if (app->count("--source") == 0) f.source = "gaussian";
    if (f.data_dim != 2 && f.source != "gaussian") {
      throw UsageError("--source " + f.source + " is 2-D but --data has dimension " + std::to_string(f.data_dim) +
                       "; use --source gaussian");
    }
  }
  // Coupling flags: the entropic ones only apply to entropic couplings; the Schrödinger bridge brings
  // its own path noise (the Brownian bridge of the same sigma) and its own regularization (2 sigma^2).
  const bool entropic = f.coupling == "sinkhorn" || f.coupling == "schrodinger-bridge";
  if (!entropic && (app->count("--ot-reg") || app->count("--ot-iterations"))) {
    throw UsageError(std::string(app->count("--ot-reg") ? "--ot-reg" : "--ot-iterations") +
                     " applies to --coupling sinkhorn or schrodinger-bridge, not " + f.coupling);
  }
  if (f.coupling == "schrodinger-bridge") {
    if (app->count("--ot-reg")) {
      throw UsageError("--ot-reg does not apply to --coupling schrodinger-bridge: its regularization is 2 sigma^2 (set --sigma)");
    }
    if (app->count("--path-noise") && f.path_noise != "brownian-bridge") {
      throw UsageError("--coupling schrodinger-bridge uses --path-noise brownian-bridge, not " + f.path_noise);
    }
    if (!(default_sigma(f) > 0)) throw UsageError("--coupling schrodinger-bridge needs --sigma > 0");
    f.path_noise = "brownian-bridge";
  }
  // Settings are checked before anything is written.
  json fresh_config;
  try {
    fresh_config = build_config(f);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  try {
    fm::check_prediction_target(*fm::make_path(fresh_config["path"]), fm::prediction_target_from_string(f.predict));
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string(e.what()) + ": pass --sigma 0 (or --path-noise none)");
  }
  // The run folder is rank 0's business: it checks and resolves it, and the other ranks (perhaps
  // on machines without the folder) receive the result, or rank 0's error.
  std::shared_ptr<fm::distributed::DataParallel> group;
  if (f.distributed) group = join_group(f, device);
  RunFolder run{f.out, fresh_config};
  std::string resume_from;
  if (!group || group->rank() == 0) {
    std::string error;
    char kind = 'U';
    try {
      prepare_run_folder(f, app, run, resume_from);
      if (group && !f.resume) {
        run.config["distributed"] = {{"world_size", group->world_size()}, {"backend", fm::distributed::to_string(group->backend())},
                                     {"global_batch", f.batch * group->world_size()}};
      }
    } catch (const UsageError& e) {
      error = e.what();
    } catch (const std::exception& e) {
      error = e.what();
      kind = 'R';
    }
    if (group) group->broadcast_string(error.empty() ? std::string() : std::string(1, kind) + error);
    if (!error.empty()) {
      if (kind == 'U') throw UsageError(error);
      throw std::runtime_error(error);
    }
  } else {
    const std::string error = group->broadcast_string("");
    if (!error.empty()) {
      if (error[0] == 'U') throw UsageError("rank 0: " + error.substr(1));
      throw std::runtime_error("rank 0: " + error.substr(1));
    }
  }
  if (group) {
    run.config = json::parse(group->broadcast_string(run.config.dump()));
    resume_from = group->broadcast_string(resume_from);
  }

  TrainRunOptions how;
  how.quiet = f.quiet;
  how.device = group && device.is_cuda() ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(group->options().local_rank())) : device;
  how.group = group;
  return run_training(run, resume_from, how);
}

}  // namespace

fm::FlowMatchingProblem problem_from_config(const RunFolder& run) {
  const json& cfg = run.config;
  fm::FlowMatchingProblem problem;
  problem.path = fm::make_path(cfg["path"]);
  if (cfg["data"].contains("pairs")) {
    // A rectified-flow round: minibatches of the stored (noise, sample) pairs.
    const json& pairs = cfg["data"]["pairs"];
    auto load = [&](const char* key) {
      const std::string file = run.dir + "/" + pairs.at(key).get<std::string>();
      try {
        return fm::io::load_npy(file);
      } catch (const std::exception& e) {
        throw std::runtime_error("reflow pairs '" + file + "': " + e.what());
      }
    };
    problem.pairs = fm::stored_pair_sampler({load("x0"), load("x1")});
  } else if (is_image_run(run)) {
    problem.source = run_sampler(run, "source");
    problem.labeled_target = fm::data::image_sampler(load_run_images(run, "train"));
    problem.label_dropout = cfg["data"].value("label_dropout", 0.0);
    problem.coupling = fm::make_coupling(cfg["coupling"]);
  } else {
    problem.source = run_sampler(run, "source");
    problem.target = run_sampler(run, "target");
    problem.coupling = fm::make_coupling(cfg["coupling"]);
  }
  problem.prediction = fm::prediction_target_from_string(cfg.value("prediction", std::string("velocity")));
  problem.time_sampling = fm::time_sampling_from_json(cfg.value("time_sampling", json::object()));
  return problem;
}

int run_training(RunFolder& run, const std::string& resume_from, const TrainRunOptions& how) {
  // Build everything before writing anything, so bad settings leave no files behind.
  const json& cfg = run.config;
  const c10::Device device = how.device;
  fm::FlowMatchingProblem problem = problem_from_config(run);
  const fm::TrainerOptions options = trainer_options(cfg["training"], run.checkpoint_dir());
  fm::validate(options);
  at::manual_seed(options.seed());
  auto model = fm::models::make_model(cfg["model"]);
  model->to(device);
  if (how.initial && resume_from.empty()) {
    // Start from another run's (sampling) weights: the same architecture by construction.
    torch::NoGradGuard no_grad;
    auto from = how.initial->parameters();
    auto to = model->parameters();
    if (from.size() != to.size()) throw std::runtime_error("initial weights do not match the model's architecture");
    for (size_t k = 0; k < to.size(); ++k) to[k].copy_(from[k]);
  }
  fm::Trainer trainer(model, problem, options);
  const bool writer = !how.group || how.group->rank() == 0;  // only rank 0 writes and talks
  if (how.group) trainer.distribute(how.group);
  if (!resume_from.empty()) {
    trainer.load_checkpoint(resume_from);  // verified by pick_resume_checkpoint; settings are checked here
  }
  if (trainer.step() >= options.steps()) {
    if (writer) std::cout << "run '" << run.dir << "' is already at step " << trainer.step() << " of " << options.steps()
              << "; raise --steps to train further\n";
    return kExitOk;
  }

  std::ofstream metrics;
  if (writer) {
    fs::create_directories(run.checkpoint_dir());
    write_json_atomic(run.config_path(), run.config);
    // Keep the loss history up to the resumed step only.
    std::string kept;
    for (const auto& j : read_metrics(run.metrics_jsonl(), trainer.step())) kept += j.dump() + "\n";
    fm::io::write_file_atomic(run.metrics_jsonl(), kept);
    metrics.open(run.metrics_jsonl(), std::ios::app);
  }

  if (!how.quiet && writer) {
    std::cerr << (resume_from.empty() ? "training " : "resuming at step " + std::to_string(trainer.step()) + ": ")
              << (cfg["data"].contains("pairs") ? std::to_string(cfg["data"]["pairs"].value("n", int64_t{0})) + " stored pairs of " : std::string())
              << cfg["data"]["source"].get<std::string>() << " -> " << cfg["data"]["target"].get<std::string>()
              << ", " << fm::models::parameter_count(*model) << " parameters, " << at::get_num_threads()
              << " thread(s)" << (how.group ? " per rank, " + std::to_string(how.group->world_size()) + " ranks (" +
                                       fm::distributed::to_string(how.group->backend()) + ")" : std::string())
              << ", " << options.steps() << " steps of batch " << options.batch_size()
              << (how.group ? " per rank (global " + std::to_string(options.batch_size() * how.group->world_size()) + ")" : std::string())
              << "\n";
  }
  install_interrupt_handlers();
  auto last_print = std::chrono::steady_clock::now() - std::chrono::hours(1);
  const bool images = is_image_run(run);
  fm::TrainCallbacks callbacks;
  if (writer) callbacks.progress = [&](const fm::TrainProgress& p) {
    json line = {{"step", p.step}, {"loss", p.loss}, {"lr", p.lr}, {"it_per_s", p.it_per_s}};
    if (images) line["images_per_s"] = p.it_per_s * static_cast<double>(options.batch_size());
    if (p.world_size > 1 || how.group) line["world_size"] = p.world_size, line["communication_ms"] = p.communication_ms;
    metrics << line.dump() << "\n";
    metrics.flush();
    const auto now = std::chrono::steady_clock::now();
    if (!how.quiet && (now - last_print > std::chrono::seconds(2) || p.step == p.total_steps)) {
      char line[256];
      char rate[64] = "";
      if (images) std::snprintf(rate, sizeof rate, " (%.0f images/s)", p.it_per_s * static_cast<double>(options.batch_size()));
      std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  lr %.2e  %.*f it/s%s  elapsed %s  left %s",
                    static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss, p.lr, p.it_per_s < 10 ? 2 : 0,
                    p.it_per_s, rate, format_duration(p.elapsed_s).c_str(), format_duration(p.eta_s).c_str());
      std::cerr << line;
      if (how.group) std::fprintf(stderr, "  all-reduce %.2f ms/step", p.communication_ms);
      std::cerr << "\n";
      last_print = now;
    }
  };
  callbacks.should_stop = [] { return interrupted(); };
  std::string last_checkpoint;
  callbacks.checkpoint_saved = [&](const std::string& path, int64_t) { last_checkpoint = path; };

  const auto start = std::chrono::steady_clock::now();
  const int64_t first = trainer.step();
  trainer.train(callbacks);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!writer) return trainer.step() < options.steps() ? kExitInterrupted : kExitOk;
  metrics.close();
  write_loss_curve(run);

  const double rate = seconds > 0 ? static_cast<double>(trainer.step() - first) / seconds : 0;
  if (trainer.step() < options.steps()) {  // stopped by a signal (here or, data-parallel, on another rank)
    std::cerr << "interrupted at step " << trainer.step() << "; checkpoint " << last_checkpoint << "; continue with: flowmatch "
              << (how.group ? "launch --nproc " + std::to_string(how.group->world_size()) + " -- " : std::string())
              << "train --out " << run.dir << " --resume\n";
    return kExitInterrupted;
  }
  std::cout << "trained " << (trainer.step() - first) << " steps in " << format_duration(seconds) << " ("
            << static_cast<long>(rate) << " it/s); checkpoint " << last_checkpoint << "; loss curve " << run.dir
            << "/loss.png\n";
  return kExitOk;
}

Command register_train(CLI::App& root) {
  auto flags = std::make_shared<TrainFlags>();
  TrainFlags& f = *flags;
  CLI::App* app = root.add_subcommand("train", "Train a flow-matching model between two 2-D distributions");
  app->footer(
      "Flags may also come from --config FILE (TOML/INI: `steps = 5000`, top level or under [train]);\n"
      "the command line wins. The run folder gets config.json, checkpoints/step-N.ckpt,\n"
      "metrics.jsonl and loss.png. Ctrl-C saves a checkpoint and exits 130; --resume continues.");
  std::vector<std::string> names = flowmatch::data::toy2d_names();
  app->add_option("--out", f.out, "run folder to create (e.g. runs/NAME)")->required();
  auto* resume = app->add_flag("--resume", f.resume, "continue the run in --out from its newest checkpoint");
  app->add_flag("--resume-fallback", f.resume_fallback,
                "with --resume: if the newest checkpoint is damaged, move it to checkpoints/damaged/ and resume "
                "from the newest intact one")
      ->needs(resume);
  app->add_option("--source", f.source, "source distribution (t = 0)")->check(CLI::IsMember(names))->capture_default_str();
  auto* target = app->add_option("--target", f.target, "target distribution (t = 1)")->check(CLI::IsMember(names))->capture_default_str();
  app->add_option("--data", f.data,
                  "train on this instead of --target: a point cloud (N, D), .npy or .pt (source: N(0, I) in D dimensions); "
                  "'fashion-mnist' (Debian's files, see --data-dir); or an image folder DIR/CLASS/*.png|jpg (labels from the "
                  "sub-folders). Images train a class-conditional U-Net with image defaults (docs/IMAGES.md)")
      ->excludes(target);
  app->add_option("--data-dir", f.data_dir, "images: where the Fashion-MNIST IDX files are")->capture_default_str();
  app->add_option("--image-channels", f.image_channels, "image folder: convert to 1 (grey) or 3 (RGB) channels (0: as the first image)")
      ->check(CLI::IsMember({0, 1, 3}))->capture_default_str();
  app->add_option("--label-dropout", f.label_dropout, "images: probability of training on the 'no class' label (classifier-free guidance)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app->add_option("--channels", f.channels, "images: U-Net channels at the first level")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--channel-mult", f.channel_mult, "images: U-Net channel multiplier per level (the resolution halves between levels)")
      ->delimiter(',')->capture_default_str();
  app->add_option("--blocks", f.blocks, "images: U-Net residual blocks per level")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_flag("--no-attention", f.no_attention, "images: no self-attention at the lowest resolution");
  app->add_option("--heads", f.heads, "images: attention heads")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--dropout", f.dropout, "images: dropout in the U-Net's residual blocks")->check(CLI::Range(0.0, 0.99))->capture_default_str();
  app->add_option("--steps", f.steps, "optimisation steps in total")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--batch", f.batch, "batch size")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--lr", f.lr, "learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--path", f.path, "probability path (scheduler): condot, polynomial, cosine, vp, linear-vp, ve")
      ->check(CLI::IsMember(flowmatch::path_names()))->capture_default_str();
  app->add_option("--path-noise", f.path_noise, "interpolant noise: none, constant (I-CFM) or brownian-bridge (SB-CFM)")
      ->check(CLI::IsMember({"none", "constant", "brownian-bridge"}))->capture_default_str();
  app->add_option("--sigma", f.sigma, "scale of the interpolant noise (default 0.1 on condot, 0 on other paths, 1 with --coupling schrodinger-bridge)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--sigma-min", f.sigma_min, "condot: sigma_min of Lipman et al.'s path")
      ->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  app->add_option("--exponent", f.exponent, "polynomial: alpha = t^n")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--beta-min", f.beta_min, "vp: beta_min")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--beta-max", f.beta_max, "vp: beta_max")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--ve-sigma-min", f.ve_sigma_min, "ve: sigma at t = 1")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--ve-sigma-max", f.ve_sigma_max, "ve: sigma at t = 0")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--predict", f.predict, "what the network predicts: velocity, data, noise or score")
      ->check(CLI::IsMember(flowmatch::prediction_target_names()))->capture_default_str();
  app->add_option("--time-sampling", f.time_sampling, "how t is drawn: uniform, logit-normal or mode (SD3)")
      ->check(CLI::IsMember(flowmatch::time_distribution_names()))->capture_default_str();
  app->add_option("--logit-location", f.logit_location, "logit-normal: mean of logit(t)")->capture_default_str();
  app->add_option("--logit-scale", f.logit_scale, "logit-normal: standard deviation of logit(t)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--mode-scale", f.mode_scale, "mode: scale s in [-1, 1.75]")->check(CLI::Range(-1.0, 1.7519))->capture_default_str();
  app->add_option("--loss-weighting", f.loss_weighting, "per-sample loss weight w(t): none, logit-normal (its density) or sigma-squared (score matching's)")
      ->check(CLI::IsMember({"none", "logit-normal", "sigma-squared"}))->capture_default_str();
  app->add_option("--coupling", f.coupling,
                  "pairing of noise and data: independent (I-CFM), exact-ot (OT-CFM), sinkhorn (entropic OT), "
                  "schrodinger-bridge (SB-CFM: entropic OT with reg 2 sigma^2 and Brownian-bridge path noise, sigma 1 by default)")
      ->check(CLI::IsMember(flowmatch::coupling_names()))->capture_default_str();
  app->add_option("--ot-reg", f.ot_reg, "sinkhorn: entropic regularization in squared data units (default 0.5)")
      ->check(CLI::PositiveNumber);
  app->add_option("--ot-iterations", f.ot_iterations, "sinkhorn, schrodinger-bridge: most Sinkhorn iterations per batch")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--optimizer", f.optimizer, "adam or adamw")->check(CLI::IsMember({"adam", "adamw"}))->capture_default_str();
  app->add_option("--weight-decay", f.weight_decay, "weight decay")->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--grad-clip", f.grad_clip, "clip the gradient norm to this (0: off)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--ema", f.ema, "EMA decay of the weights used for sampling (0: off)")
      ->check(CLI::Range(0.0, 0.99999999))->capture_default_str();
  app->add_option("--lr-schedule", f.lr_schedule, "constant or cosine")
      ->check(CLI::IsMember({"constant", "cosine"}))->capture_default_str();
  app->add_option("--warmup", f.warmup, "linear warm-up steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--min-lr-ratio", f.min_lr_ratio, "final lr / lr for the cosine schedule")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app->add_option("--width", f.width, "MLP hidden width")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--depth", f.depth, "MLP hidden layers")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--activation", f.activation, "selu, silu, relu or gelu")
      ->check(CLI::IsMember({"selu", "silu", "relu", "gelu"}))->capture_default_str();
  app->add_option("--time-encoding", f.time_encoding, "plain (t as a feature) or sinusoidal")
      ->check(CLI::IsMember({"plain", "sinusoidal"}))->capture_default_str();
  app->add_option("--time-features", f.time_features, "sinusoidal time features (even)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--log-every", f.log_every, "write a metrics.jsonl line every N steps")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--checkpoint-every", f.checkpoint_every, "checkpoint every N steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--keep", f.keep, "newest checkpoints to keep")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_flag("--quiet", f.quiet, "no progress lines");
  app->add_flag("--distributed", f.distributed,
                "data-parallel training: join the group described by RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT "
                "(set by 'flowmatch launch' or torchrun); --batch is per process");
  app->add_option("--dist-timeout", f.dist_timeout, "seconds before a dead or hung rank makes the others stop with an error")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--dist-backend", f.dist_backend, "auto (nccl for CUDA when available, else gloo), gloo or nccl")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}))->capture_default_str();
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_train(*flags, app); }};
}

}  // namespace fmcli
