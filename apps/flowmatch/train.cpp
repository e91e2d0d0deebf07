// flowmatch train: fit a velocity field and keep checkpoints, metrics.jsonl and a loss curve in the
// run folder. Every run setting is a flag (flowmatch::run_settings()); those given become the
// run's settings, resolved and checked by the library.

#include <cstdlib>
#include <iostream>
#include <map>

#include <c10/util/Logging.h>

#include "common.h"
#include "flowmatch/distributed.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/objective.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct TrainFlags {
  CommonFlags common;
  std::string out;
  bool resume = false, resume_fallback = false, quiet = false, distributed = false;
  double dist_timeout = 60;
  std::string dist_backend = "auto";
  SettingValues values;
};

int run_train(TrainFlags& f, CLI::App* app) {
  const c10::Device device = apply_common_flags(f.common);
  const json settings = run_settings_from_flags(app, f.values, f.common);
  std::shared_ptr<fm::distributed::DataParallel> group;
  if (f.distributed) {
    fm::distributed::DistributedOptions options;
    try {
      options = fm::distributed::options_from_environment();
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--distributed: ") + e.what());
    }
    options.timeout_s(f.dist_timeout).backend(fm::distributed::backend_from_string(f.dist_backend));
    if (!fm::distributed::gloo_available()) throw UsageError("--distributed: this flowmatch was built without c10d Gloo (see README: libgloo-dev)");
    // One GPU per process on a machine: LOCAL_RANK picks it.
    // c10d logs its own errors (a socket timeout, a closed peer) through glog before throwing; the
    // exception says it in our one line, so those lines are silenced unless TORCH_CPP_LOG_LEVEL asks.
    if (const char* level = std::getenv("TORCH_CPP_LOG_LEVEL"); !level || !*level) {
      FLAGS_caffe2_log_level = 3;  // FATAL only
      c10::UpdateLoggingLevelsFromFlags();
    }
    const c10::Device rank_device = device.is_cuda() ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(options.local_rank())) : device;
    group = std::make_shared<fm::distributed::DataParallel>(options, rank_device);
  }
  fm::Run run = fm::Run::prepare(f.out, settings, f.resume, f.resume_fallback, group,
                                 [](const std::string& line) { std::cerr << "flowmatch train: " << line << "\n"; });
  const c10::Device train_device =
      group && device.is_cuda() ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(group->options().local_rank())) : device;
  const fm::TrainOutcome outcome = run.train(training_callbacks(run, f.quiet, train_device, group));
  if (group && group->rank() != 0) return outcome.interrupted() ? kExitInterrupted : kExitOk;
  return report_training(run, outcome,
                         "flowmatch " + (group ? "launch --nproc " + std::to_string(group->world_size()) + " -- " : std::string()) +
                             "train --out " + run.dir() + " --resume");
}

}  // namespace

Command register_train(CLI::App& root) {
  auto flags = std::make_shared<TrainFlags>();
  TrainFlags& f = *flags;
  CLI::App* app = root.add_subcommand("train", "Train a flow-matching model (2-D toy data, point clouds, images, any registered domain)");
  std::string models;
  for (const auto& name : fm::models::model_names()) models += (models.empty() ? "" : ", ") + name;
  app->footer("Flags may also come from --config FILE (TOML/INI: `steps = 5000`, top level or under [train]; [model] for the\n"
              "network: `type = \"mlp\"`, `width = 128`); the command line wins. Models: " + models + ".\n"
              "The run folder gets config.json, checkpoints/step-N.ckpt, metrics.jsonl, loss.png (--validate nll: best.ckpt, validation.png).\n"
              "Ctrl-C saves a checkpoint and exits 130; --resume continues.");
  app->add_option("--out", f.out, "run folder to create (e.g. runs/NAME)")->required();
  auto* resume = app->add_flag("--resume", f.resume, "continue the run in --out from its newest checkpoint");
  app->add_flag("--resume-fallback", f.resume_fallback,
                "with --resume: if the newest checkpoint is damaged, move it to checkpoints/damaged/ and resume from the newest intact one")
      ->needs(resume);
  add_run_setting_flags(app, f.values);
  app->get_option("--target")->excludes(app->get_option("--data"));
  app->add_flag("--quiet", f.quiet, "no progress lines");
  app->add_flag("--distributed", f.distributed,
                "data-parallel training: join the group described by RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT "
                "(set by 'flowmatch launch' or torchrun); --batch is per process");
  app->add_option("--dist-timeout", f.dist_timeout, "longest wait for the rendezvous and for a collective; a silent rank is named after min(15, 0.8 x this) seconds without a heartbeat")
      ->check(positive_number())->capture_default_str();
  app->add_option("--dist-backend", f.dist_backend, "auto (nccl for CUDA when available, else gloo), gloo or nccl")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}))->capture_default_str();
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_train(*flags, app); }};
}

}  // namespace fmcli
