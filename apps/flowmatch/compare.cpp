// flowmatch compare: flow matching against diffusion on equal terms. Each training variant (DDPM
// linear/cosine, FM uniform/logit-normal) with the same network, optimizer, steps and seed, then every
// sampler at every NFE budget, scored by the data's quality measure -> OUT/compare.json, compare.md,
// compare.png (flowmatch::compare_flow_and_diffusion).

#include <iostream>

#include "common.h"
#include "flowmatch/compare.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct CompareFlags {
  CommonFlags common;
  std::string out;
  bool quiet = false;
  fm::ComparisonOptions options;
  SettingValues values;
};

int run_compare(CompareFlags& f, CLI::App* app) {
  f.options.device = apply_common_flags(f.common);
  f.options.seed = f.common.seed;
  json settings = run_settings_from_flags(app, f.values, f.common);
  const bool quiet = f.quiet;
  const c10::Device device = f.options.device;
  f.options.training = [quiet, device](const fm::Run& run) { return training_callbacks(run, quiet, device, nullptr); };
  f.options.report = [](const std::string& line) {
    end_progress_line();
    std::cerr << "flowmatch compare: " << line << "\n";
  };
  const json result = fm::compare_flow_and_diffusion(settings, f.out, f.options);
  end_progress_line();
  if (result.contains("interrupted")) {
    std::cerr << "flowmatch compare: interrupted while training " << result["interrupted"].get<std::string>()
              << "; the same command resumes it\n";
    return kExitInterrupted;
  }
  std::cout << "wrote " << f.out << "/compare.json, " << f.out << "/compare.md, " << f.out << "/compare.png\n";
  return kExitOk;
}

}  // namespace

Command register_compare(CLI::App& root) {
  auto flags = std::make_shared<CompareFlags>();
  CompareFlags& f = *flags;
  fm::ComparisonOptions& o = f.options;
  CLI::App* app = root.add_subcommand(
      "compare", "Flow matching vs diffusion on equal terms: train each variant with the same network and budget, then every sampler at every NFE");
  std::string variants;
  for (const auto& v : fm::comparison_variants()) variants += "\n  " + v.name + ": " + v.description;
  app->footer("Variants (each fixes --path, --predict, --time-sampling, --coupling and --sigma):" + variants +
              "\nThe other training flags are train's and apply to every variant. Each variant's run is OUT/VARIANT; running the\n"
              "same command again resumes an interrupted training and reuses finished ones. Points are scored by the exact W2\n"
              "against one draw of --n target points (floor: two target draws); images by the Frechet distance of classifier\n"
              "features (and the classifier's accuracy on class-conditional samples, guidance 0). docs/COMPARE.md has the protocol.");
  app->add_option("--out", f.out, "folder of the comparison (each variant's run inside)")->required();
  app->add_option("--variants", o.variants, "training variants")->delimiter(',')->capture_default_str();
  app->add_option("--samplers", o.samplers, "samplers (ancestral with eta 1 is DDPM's; dopri5 runs at --tolerances)")
      ->delimiter(',')->capture_default_str();
  app->add_option("--nfe", o.nfe, "NFE budgets of the fixed-step samplers (heun and midpoint: even budgets only)")
      ->delimiter(',')->capture_default_str();
  app->add_option("--tolerances", o.tolerances, "adaptive samplers: atol = rtol values")->delimiter(',')->capture_default_str();
  app->add_option("--n", o.n, "samples per cell (the same source draws in every cell)")->check(positive_number())->capture_default_str();
  app->add_option("--classifier", o.classifier, "images: the evaluation classifier ('flowmatch classifier train')")->capture_default_str();
  app->add_flag("--quiet", f.quiet, "no training progress lines");
  add_run_setting_flags(app, f.values, fm::comparison_fixed_settings());
  app->get_option("--target")->excludes(app->get_option("--data"));
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_compare(*flags, app); }};
}

}  // namespace fmcli
