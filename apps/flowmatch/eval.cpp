// flowmatch eval: a run's evaluation by its data domain (points: exact W2 at 1/2/4/10/100 Euler steps,
// MMD, straightness; images: classifier accuracy, Frechet distance, bits/dim) -> metrics.json and
// pictures, or the exact W2 between two point sets.

#include <filesystem>
#include <iostream>

#include "common.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/metrics.h"
#include "flowmatch/schedulers.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct EvalFlags {
  CommonFlags common;
  RunFlags run;
  fm::EvaluationOptions options;
  std::string samples, reference, out;
};

int eval_files(EvalFlags& f) {
  at::Tensor a = fm::data::load_point_cloud(f.samples, "--samples");
  at::Tensor b = fm::data::load_point_cloud(f.reference, "--reference");
  if (a.size(1) != b.size(1)) {
    throw std::runtime_error("--samples has dimension " + std::to_string(a.size(1)) + " but --reference has " + std::to_string(b.size(1)));
  }
  json result = {{"w2", fm::metrics::wasserstein2(a, b)}, {"n_samples", a.size(0)}, {"n_reference", b.size(0)}, {"dim", a.size(1)}};
  if (!f.out.empty()) fm::write_json_file(f.out, result);
  std::cout << result.dump() << "\n";
  return kExitOk;
}

int eval_run(EvalFlags& f) {
  f.options.device = apply_common_flags(f.common);
  f.options.seed = f.common.seed;
  f.options.checkpoint = f.run.checkpoint;
  if (!f.run.run.empty() && !f.run.target.empty()) throw UsageError("--target applies to --model-file; a run keeps its own target");
  if (!f.run.model_file.empty() && f.run.target.empty()) throw UsageError("with --model-file, give --target NAME to compare with");
  fm::Run run = open_run(f.run);
  const std::string out = f.out.empty() ? run.metrics_json() : f.out;
  const json metrics = run.evaluate(f.options, out, [](const std::string& line) { std::cout << line << std::endl; });
  std::cout << "wrote " << out;
  for (const auto& picture : metrics.value("pictures", json::array())) std::cout << ", " << picture.get<std::string>();
  if (f.options.solver_sweep) std::cout << ", " << run.dir() << "/w2_vs_nfe.png";
  if (!run.is_model_file() && std::filesystem::exists(run.dir() + "/index.html")) std::cout << ", " << run.dir() << "/index.html";
  std::cout << "\n";
  return kExitOk;
}

}  // namespace

Command register_eval(CLI::App& root) {
  auto flags = std::make_shared<EvalFlags>();
  EvalFlags& f = *flags;
  fm::EvaluationOptions& o = f.options;
  CLI::App* app = root.add_subcommand("eval", "Evaluate a run by its data's protocol (metrics.json and pictures), or W2 between two .npy files");
  add_run_flags(app, f.run, true);
  auto* samples = app->add_option("--samples", f.samples, "points (n, D) as .npy or .pt, compared with --reference");
  auto* reference = app->add_option("--reference", f.reference, "points (m, D) as .npy or .pt");
  samples->needs(reference);
  reference->needs(samples);
  app->get_option("--run")->excludes(samples)->excludes(reference);
  app->add_option("--out", f.out, "metrics JSON file (default RUN/metrics.json; with --samples, optional)");
  app->add_option("--n", o.n, "points: samples per W2 estimate (generated and target)")->check(positive_number())->capture_default_str();
  app->add_option("--scheduler", o.scheduler, "points: evaluate with another scheduler than the run's (schedule transform)")
      ->check(CLI::IsMember(fm::scheduler_names()));
  app->add_flag("--solver-sweep", o.solver_sweep,
                "points: also W2 vs NFE for every fixed-step solver (NFE 1..128) and dopri5 (tol 1e-2..1e-5) on the same points: "
                "metrics.json solver_sweep and w2_<solver><steps>, RUN/w2_vs_nfe.png");
  app->add_option("--classifier", o.classifier, "images: the classifier folder or file ('flowmatch classifier train')")->capture_default_str();
  app->add_option("--guidance-scales", o.guidance_scales, "images: guidance scales for the accuracy")->delimiter(',')->capture_default_str();
  app->add_option("--accuracy-n", o.accuracy_n, "images: samples per guidance scale (a multiple of the classes)")
      ->check(positive_number())->capture_default_str();
  app->add_option("--fd-n", o.fd_n, "images: samples (and test images) for the Frechet distance (0: skip)")
      ->check(non_negative_number())->capture_default_str();
  app->add_option("--fd-guidance", o.fd_guidance, "images: guidance scale of the Frechet-distance samples")->check(non_negative_number())->capture_default_str();
  app->add_option("--sample-solver", o.sample_solver, "images: fixed-step solver for the samples")
      ->check(CLI::IsMember(fm::solver_names(false)))->capture_default_str();
  app->add_option("--sample-steps", o.sample_steps, "images: solver steps for the samples")->check(positive_number())->capture_default_str();
  app->add_option("--bpd-n", o.bpd_n, "images: test images for bits per dimension (0: skip)")->check(non_negative_number())->capture_default_str();
  app->add_option("--bpd-steps", o.bpd_steps, "images: RK4 steps of the likelihood solve (Hutchinson, 1 Rademacher probe)")
      ->check(positive_number())->capture_default_str();
  add_common_flags(app, f.common);
  return {app, [flags] {
            if (!flags->samples.empty()) return eval_files(*flags);
            if (flags->run.run.empty() && flags->run.model_file.empty()) {
              throw UsageError("eval needs --run RUN (or --model-file v.pt), or --samples A.npy --reference B.npy");
            }
            return eval_run(*flags);
          }};
}

}  // namespace fmcli
