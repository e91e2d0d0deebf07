// flowmatch export: writes a run's trained network (EMA weights when kept) as a TorchScript file that
// PyTorch opens with torch.jit.load and calls as v(x, t).

#include <iostream>

#include "common.h"
#include "flowmatch/models/torchscript.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct ExportFlags {
  CommonFlags common;
  RunFlags run;
  std::string out;
};

int run_export(ExportFlags& f) {
  apply_common_flags(f.common);  // the file is written from CPU tensors whatever --device says
  fm::Run run = fm::Run::open(f.run.run);
  const std::string prediction = run.config().value("prediction", std::string("velocity"));
  if (prediction != "velocity") {
    throw UsageError("export writes velocity networks; '" + f.run.run + "' predicts '" + prediction + "'");
  }
  auto model = run.model(f.run.checkpoint, c10::kCPU);
  fm::models::export_torchscript(*model, f.out);
  std::cout << "wrote " << f.out << ": in Python, v = torch.jit.load('" << f.out << "'); v(x, t) with x (B, "
            << model->spec()["options"].value("dim", int64_t{2}) << ") and t (B)\n";
  return kExitOk;
}

}  // namespace

Command register_export(CLI::App& root) {
  auto flags = std::make_shared<ExportFlags>();
  ExportFlags& f = *flags;
  CLI::App* app = root.add_subcommand("export", "Write a run's network as TorchScript for PyTorch (torch.jit.load, v(x, t))");
  app->add_option("--run", f.run.run, "run folder written by 'flowmatch train'")->required();
  app->add_option("--out", f.out, "TorchScript file to write (e.g. v.pt)")->required();
  app->add_option("--checkpoint", f.run.checkpoint, "checkpoint file (default: the run's newest; EMA weights when kept)");
  add_common_flags(app, f.common);
  return {app, [flags] { return run_export(*flags); }};
}

}  // namespace fmcli
