#include "common.h"

#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include "flowmatch/checkpoint.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/prediction.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/train.h"

namespace fmcli {

namespace fs = std::filesystem;

void add_common_flags(CLI::App* app, CommonFlags& flags) {
  app->add_option("--threads", flags.threads, "CPU threads for LibTorch (0: OMP_NUM_THREADS if set, else one per core)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app->add_option("--device", flags.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app->add_option("--seed", flags.seed, "random seed")->capture_default_str();
  // Read before parsing (expand_config_file); declared here so that --help lists it.
  app->add_option("--config", "flags from a TOML/INI file (keys = flag names, top level or under [COMMAND]); "
                              "the command line wins");
}

c10::Device apply_common_flags(const CommonFlags& flags) {
  // 0: OMP_NUM_THREADS when set (flowmatch launch and torchrun set it per process), else all cores.
  int threads = flags.threads;
  if (threads <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    threads = omp ? std::atoi(omp) : 0;
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  at::set_num_threads(threads);
  if (flags.device == "cuda") {
    if (!torch::cuda::is_available()) {
      throw UsageError("--device cuda: no CUDA device is available to this LibTorch build (use --device cpu)");
    }
    return c10::Device(c10::kCUDA);
  }
  return c10::Device(c10::kCPU);
}

RunFolder open_run(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw UsageError("run folder '" + dir + "' does not exist");
  RunFolder run{dir, {}};
  if (!fs::exists(run.config_path(), ec)) {
    throw UsageError("'" + dir + "' is not a run folder (no config.json; create one with 'flowmatch train --out " + dir + "')");
  }
  try {
    run.config = json::parse(flowmatch::io::read_file(run.config_path()));
  } catch (const json::exception& e) {
    throw std::runtime_error("'" + run.config_path() + "' is not valid JSON: " + e.what());
  }
  for (const char* key : {"data", "model", "path", "coupling"}) {
    if (!run.config.contains(key)) throw std::runtime_error("'" + run.config_path() + "' lacks the '" + key + "' section");
  }
  return run;
}

std::string latest_checkpoint(const RunFolder& run) {
  auto all = flowmatch::list_checkpoints(run.checkpoint_dir());
  if (all.empty()) throw std::runtime_error("run '" + run.dir + "' has no checkpoint yet (in " + run.checkpoint_dir() + ")");
  return all.back();
}

RunFolder resolve_run(const std::string& run, const std::string& model_file, const std::string& source,
                      const std::string& target) {
  if (!run.empty() && !model_file.empty()) throw UsageError("give --run or --model-file, not both");
  if (run.empty() && model_file.empty()) throw UsageError("needs --run RUN or --model-file v.pt");
  if (!model_file.empty()) {
    json data = {{"source", source.empty() ? std::string("gaussian") : source}};
    if (!target.empty()) data["target"] = target;
    // Training settings for runs derived from it (reflow, distill): the train command's defaults.
    const json training = {{"steps", 20000}, {"batch", 256}, {"lr", 1e-3}, {"optimizer", "adam"}, {"weight_decay", 0.0},
                           {"grad_clip", 0.0}, {"ema", 0.0}, {"lr_schedule", "constant"}, {"warmup", 0},
                           {"min_lr_ratio", 0.0}, {"seed", 0}, {"log_every", 100}, {"checkpoint_every", 1000}, {"keep", 3}};
    return RunFolder{".", {{"model", {{"type", "torchscript"}, {"file", fs::absolute(model_file).string()}}},
                          {"path", flowmatch::CondOTPath().spec()},
                          {"prediction", "velocity"},
                          {"data", data},
                          {"coupling", {{"type", "independent"}}},
                          {"training", training},
                          {"stand_in", true}}};
  }
  if (!source.empty()) throw UsageError("--source applies to --model-file; a run keeps its own source");
  return open_run(run);
}

void add_model_file_flags(CLI::App* app, std::string& model_file, std::string& source) {
  app->add_option("--model-file", model_file,
                  "a TorchScript velocity model (torch.jit.save) with forward(x, t) instead of --run");
  app->add_option("--source", source, "with --model-file: the source distribution at t = 0 (default gaussian)")
      ->check(CLI::IsMember(flowmatch::data::toy2d_names()));
}

std::shared_ptr<flowmatch::models::VelocityModel> load_run_model(const RunFolder& run, const std::string& checkpoint,
                                                                 const c10::Device& device) {
  if (run.config.value("stand_in", false)) {  // --model-file: the scripted model as saved
    if (!checkpoint.empty()) throw UsageError("--checkpoint applies to runs, not to --model-file");
    auto model = flowmatch::models::make_model(run.config["model"]);
    model->to(device);
    return model;
  }
  const std::string path = checkpoint.empty() ? latest_checkpoint(run) : checkpoint;
  auto model = flowmatch::load_model(path, /*ema=*/true);
  if (model->spec() != run.config["model"]) {
    throw std::runtime_error("'" + path + "' holds model " + model->spec().dump() + ", but the run describes " +
                             run.config["model"].dump());
  }
  model->to(device);
  return model;
}

RunFlow run_flow(const RunFolder& run, std::shared_ptr<flowmatch::models::VelocityModel> model,
                 const std::string& scheduler, flowmatch::VelocityField network) {
  namespace fm = flowmatch;
  RunFlow flow;
  try {
    flow.path = fm::make_path(run.config["path"]);
    flow.prediction = run.config.value("prediction", std::string("velocity"));
    const fm::PredictionTarget target = fm::prediction_target_from_string(flow.prediction);
    auto trained = flow.path->scheduler();
    flow.field = fm::velocity_from_prediction(network ? network : fm::as_velocity_field(std::move(model)), target, trained);
    flow.scheduler = trained ? trained->name() : run.config["path"].value("type", std::string("?"));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("'" + run.config_path() + "': " + e.what());
  }
  if (!scheduler.empty()) {
    if (!flow.path->scheduler()) throw UsageError("--scheduler: this run's path has no scheduler to replace");
    std::shared_ptr<const fm::Scheduler> wanted;
    try {
      wanted = fm::make_scheduler(scheduler);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--scheduler: ") + e.what());
    }
    if (wanted->spec() != flow.path->scheduler()->spec()) {
      flow.field = fm::schedule_transformed_field(flow.field, flow.path->scheduler(), wanted);
      flow.scheduler = wanted->name() + " (transformed from " + flow.scheduler + ")";
      flow.path = std::make_shared<fm::AffinePath>(wanted);
    }
  }
  return flow;
}

bool is_image_run(const RunFolder& run) {
  return run.config.contains("data") && run.config["data"].is_object() && run.config["data"].contains("image_shape");
}

flowmatch::data::ImageDataset load_run_images(const RunFolder& run, const std::string& split) {
  const json& data = run.config["data"];
  const std::string target = data.value("target", std::string());
  flowmatch::data::ImageDataset images;
  try {
    if (target == "fashion-mnist") {
      images = flowmatch::data::fashion_mnist_dataset(split, data.at("data_dir").get<std::string>());
    } else if (target == "image-folder") {
      images = flowmatch::data::load_image_folder(data.at("folder").get<std::string>(), data.at("image_shape")[0].get<int64_t>());
    } else {
      throw std::runtime_error("unknown image data '" + target + "' (expected fashion-mnist or image-folder)");
    }
  } catch (const json::exception& e) {
    throw std::runtime_error("'" + run.config_path() + "': data: " + e.what());
  }
  if (images.pixels_per_image() != data.value("dim", int64_t{0})) {
    throw std::runtime_error("the run's images had " + data.value("dim", json()).dump() + " values each, these have " +
                             std::to_string(images.pixels_per_image()));
  }
  return images;
}

flowmatch::data::PointSampler run_sampler(const RunFolder& run, const std::string& which) {
  const json& data = run.config["data"];
  if (!data.contains(which) || !data[which].is_string()) {
    if (run.config.value("stand_in", false)) {
      throw UsageError("with --model-file, give --" + which + " NAME (the model's " + which + " distribution)");
    }
    throw std::runtime_error("'" + run.config_path() + "': data." + which + " is missing");
  }
  const std::string name = data[which].get<std::string>();
  if (name == "file") {  // a point cloud given with train --data
    return flowmatch::data::point_cloud_sampler(flowmatch::data::load_point_cloud(data.at(which + "_file").get<std::string>()));
  }
  const int64_t dim = data.value("dim", int64_t{2});
  if (name == "gaussian" && dim != 2) return flowmatch::data::gaussian_sampler(dim);
  return flowmatch::data::toy2d_sampler(name);
}

void ensure_new_output_folder(const std::string& out, const std::string& hint) {
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec)) throw UsageError("--out '" + out + "' already exists; choose another" + hint);
  const fs::path parent = fs::path(out).parent_path();
  try {
    flowmatch::io::ensure_writable_directory(parent.empty() ? "." : parent.string());
  } catch (const std::runtime_error& e) {
    throw UsageError(std::string("--out: ") + e.what());
  }
}

void write_json_atomic(const std::string& path, const json& value) {
  flowmatch::io::write_file_atomic(path, value.dump(2) + "\n");
}

std::string with_extension(const std::string& path, const std::string& extension) {
  return fs::path(path).replace_extension(extension).string();
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

void ensure_parent_writable(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  try {
    flowmatch::io::ensure_writable_directory(parent.empty() ? "." : parent.string());
  } catch (const std::runtime_error& e) {
    throw UsageError(std::string("cannot write '") + path + "': " + e.what());
  }
}

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void on_signal(int signal) {
  g_interrupted.store(true);
  std::signal(signal, SIG_DFL);  // a second Ctrl-C ends the process at once
}
}  // namespace

void install_interrupt_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

bool interrupted() { return g_interrupted.load(); }

}  // namespace fmcli
