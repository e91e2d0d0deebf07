// flowmatch likelihood: log-likelihoods of data under a run by the continuity equation (NLL, its
// standard error, bits per dimension, NFE) and, for 2-D data, a density map beside the target's histogram.

#include <iostream>

#include "common.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct LikelihoodFlags {
  CommonFlags common;
  RunFlags run;
  fm::LikelihoodRequest request;
  std::string data, out;
};

int run_likelihood(LikelihoodFlags& f, CLI::App* app) {
  fm::LikelihoodRequest& q = f.request;
  q.device = apply_common_flags(f.common);
  q.seed = f.common.seed;
  q.checkpoint = f.run.checkpoint;
  // A run's own target is its data; with --model-file, --target names the data (and the density map's reference).
  fm::Run run = open_run(f.run);
  const bool tokens = run.config()["path"].value("type", std::string()) == "mixture-discrete";
  if (tokens) {
    for (const char* flag : {"--solver", "--atol", "--rtol", "--error-norm", "--divergence", "--probes", "--probe-distribution", "--grid"}) {
      if (app->count(flag)) throw UsageError(std::string(flag) + " does not apply to a token run: its bound is -ELBO over --steps times");
    }
  } else {
    check_solver_flags(q.solver, app);
  }
  if (q.divergence == "exact" && (app->count("--probes") || app->count("--probe-distribution"))) {
    throw UsageError("--probes and --probe-distribution apply to --divergence hutchinson");
  }
  if (!f.run.run.empty()) q.target = f.run.target;
  // --out logp.npy: per-point log p (float64) there, the summary beside it (logp.json).
  const bool per_point = f.out.size() > 4 && f.out.compare(f.out.size() - 4, 4, ".npy") == 0;
  const std::string out = f.out.empty() ? run.dir() + "/likelihood.json" : per_point ? f.out.substr(0, f.out.size() - 4) + ".json" : f.out;
  if (!f.data.empty()) {
    q.points = fm::data::load_point_cloud(f.data, "--data");
    q.data_label = f.data;
  }
  const fm::LikelihoodSummary summary = run.likelihood(q);
  if (per_point) fm::io::save_npy(f.out, summary.log_prob.to(at::kDouble).contiguous());
  fm::write_json_file(out, summary.result);
  std::cout << summary.result.dump() << "\n";
  if (tokens) {
    const bool exact = summary.result["time_points"] == 0;  // an autoregressive run
    std::cerr << (exact ? "NLL " : "-ELBO ") << summary.result["nll"].get<double>() << " +- " << summary.result["nll_stderr"].get<double>()
              << " nats per sequence, " << summary.result["bits_per_token"].get<double>() << " bits per token (" << summary.result["n"]
              << " sequences, " << (exact ? std::string("exact") : std::to_string(q.steps) + " times") << "); wrote " << out << "\n";
    return kExitOk;
  }
  std::cerr << "NLL " << summary.result["nll"].get<double>() << " +- " << summary.result["nll_stderr"].get<double>() << " nats ("
            << summary.result["n"] << " points, " << q.solver << ", " << q.divergence << " divergence, NFE " << summary.result["nfe"]
            << "); wrote " << out << (summary.result.contains("density_map") ? " and " + summary.result["density_map"].get<std::string>() : "") << "\n";
  return kExitOk;
}

}  // namespace

Command register_likelihood(CLI::App& root) {
  auto flags = std::make_shared<LikelihoodFlags>();
  LikelihoodFlags& f = *flags;
  fm::LikelihoodRequest& q = f.request;
  CLI::App* app = root.add_subcommand("likelihood",
                                      "Log-likelihood of data under a run by the continuity equation: NLL (nats), standard error, "
                                      "bits/dim, NFE -> JSON; for 2-D data a density map beside the target's histogram");
  app->footer("The run's source must have a known density (gaussian). Each batch of points is one solve from t = 1 back to 0\n"
              "carrying the divergence: exact (one vector-Jacobian product per dimension) or Hutchinson with --probes k.\n"
              "bpd = NLL / (D ln 2) for continuous data.");
  add_run_flags(app, f.run, true);
  app->get_option("--target")->description("draw --n fresh points from this data set (default: the run's target)");
  auto* data = app->add_option("--data", f.data, "points (n, D) as .npy or .pt")->excludes(app->get_option("--target"));
  app->add_option("--split", q.split, "finite data split 80/10/10 (Earth, proteins, molecules): test or validation points (choose settings on the latter)")
      ->check(CLI::IsMember({"test", "validation"}))->excludes(data)->excludes(app->get_option("--target"))->capture_default_str();
  app->add_option("--n", q.n, "points to draw from the run's target or --target")->check(positive_number())->capture_default_str();
  app->add_option("--solver", q.solver, "an ODE solver")->check(CLI::IsMember(fm::solver_names(false)))->capture_default_str();
  app->add_option("--steps", q.steps, "fixed-step solvers: steps from t=1 to t=0; token runs: times of the -ELBO's stratified grid")->check(positive_number())->capture_default_str();
  app->add_option("--atol", q.atol, "dopri5 absolute tolerance")->check(positive_number())->capture_default_str();
  app->add_option("--rtol", q.rtol, "dopri5 relative tolerance")->check(non_negative_number())->capture_default_str();
  app->add_option("--error-norm", q.error_norm, "dopri5: sample (each point's error within the tolerances) or batch (their RMS over a --batch: fewer steps)")
      ->check(CLI::IsMember({"sample", "batch"}))->capture_default_str();
  app->add_option("--divergence", q.divergence, "exact or hutchinson")->check(CLI::IsMember({"exact", "hutchinson"}))->capture_default_str();
  app->add_option("--probes", q.probes, "hutchinson: probes per point, fixed within a solve")->check(positive_number())->capture_default_str();
  app->add_option("--probe-distribution", q.probe_distribution, "hutchinson: rademacher or gaussian")
      ->check(CLI::IsMember({"rademacher", "gaussian"}))->capture_default_str();
  app->add_option("--batch", q.batch, "points per solve")->check(positive_number())->capture_default_str();
  app->add_option("--grid", q.grid, "2-D data with a known target: density map resolution (cells per side; 0: no map)")->check(non_negative_number())->capture_default_str();
  app->add_option("--density-map", q.density_map, "2-D data: density map PNG (default RUN/density.png)");
  app->add_option("--out", f.out,
                  "result JSON (default RUN/likelihood.json; also printed), or FILE.npy: log p per point (float64; token runs: the "
                  "-ELBO bound's, or the exact log p of an autoregressive run) with the JSON beside it as FILE.json");
  add_common_flags(app, f.common);
  return {app, [flags, app] { return run_likelihood(*flags, app); }};
}

}  // namespace fmcli
