// Run: sampling with any registered solver, writing samples, evaluation and likelihoods.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/accumulate.h>

#include "flowmatch/autoregressive.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/discrete_path.h"
#include "flowmatch/guidance.h"
#include "flowmatch/time_sampling.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/run.h"
#include "flowmatch/run_index.h"

namespace flowmatch {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

void ensure_parent(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  try {
    io::ensure_writable_directory(parent.empty() ? "." : parent.string());
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument("cannot write '" + path + "': " + e.what());
  }
}

}  // namespace

namespace {

// Given source points as the state a solver starts from: float32, or token ids (int64) on a token run.
at::Tensor initial_state(const at::Tensor& given, const ProbabilityPath& path) {
  const auto* tokens = dynamic_cast<const MixtureDiscretePath*>(&path);
  if (!tokens) {
    // Points given on a manifold must lie on it (a solver would project them silently).
    if (auto space = path.manifold()) space->check_points(given.to(at::kDouble), 1e-4, "--initial");
    return given.to(at::kFloat);
  }
  at::Tensor ids = given.is_floating_point() ? given.round() : given;
  if ((given.is_floating_point() && !at::equal(ids, given)) || given.numel() == 0 || ids.min().item<double>() < 0 ||
      ids.max().item<double>() >= static_cast<double>(tokens->input_vocabulary())) {
    throw std::invalid_argument("--initial: a token run starts from integer ids in [0, " + std::to_string(tokens->input_vocabulary()) + ")");
  }
  return ids.to(at::kLong);
}

}  // namespace

SampleResult Run::sample(SampleOptions o) const {
  const json& data = config_["data"];
  domain_->complete_sample_options(data, o);
  const SolverInfo info = solver_info(o.solver);
  if (!info.adaptive && o.steps < 1) throw std::invalid_argument("--steps must be >= 1, got " + std::to_string(o.steps));
  auto model = this->model(o.checkpoint, o.device);
  const int64_t dim = c10::multiply_integers(model->sample_shape().empty() ? domain_->sample_shape(data) : model->sample_shape());
  if (o.initial.defined()) {
    if (o.initial.dim() != 2 || o.initial.size(1) != dim) {
      throw std::runtime_error("--initial has shape " + c10::str(o.initial.sizes()) + " but the run's model takes (n, " +
                               std::to_string(dim) + ")");
    }
    o.n = o.initial.size(0);
  }
  if (o.n < 1) throw std::invalid_argument("--n must be >= 1, got " + std::to_string(o.n));
  const models::Conditioning condition = domain_->conditioning(data, o, o.n);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto source = domain_->source(data);

  std::vector<double> time_grid;
  if (o.time_shift != 1.0) {
    // The solvers that integrate on SolverOptions::time_grid: the Runge-Kutta ones and ctmc-euler.
    if (info.adaptive || o.solver == "sde" || o.solver == "autoregressive") {
      throw std::invalid_argument("--time-shift applies to fixed-step solvers (euler, midpoint, heun, rk4, ctmc-euler), not " + o.solver);
    }
    time_grid = shifted_time_grid(o.steps, o.time_shift);
  }
  std::function<double(double)> corrector;
  if (!o.corrector.empty()) {
    if (o.solver != "ctmc-euler") throw std::invalid_argument("--corrector applies to --solver ctmc-euler (token runs)");
    corrector = corrector_schedule(o.corrector);
  }
  SampleResult r;
  c10::InferenceMode guard;
  auto solve_from = [&](const SamplingFlow& flow, const at::Tensor& x0, bool record) {
    if (info.stochastic && !flow.path->scheduler()) {
      throw std::invalid_argument("--solver " + o.solver + " needs a run on an affine path (a scheduler)");
    }
    const bool discrete_path = dynamic_cast<const MixtureDiscretePath*>(flow.path.get()) != nullptr;
    if (info.discrete != discrete_path) {
      throw std::invalid_argument("--solver " + o.solver + (discrete_path ? " is for continuous data; token runs sample with ctmc-euler"
                                                                          : " samples tokens; this run's data are continuous"));
    }
    return solve(o.solver, flow.field, x0,
                 SolverOptions()
                     .steps(o.steps)
                     .atol(o.atol)
                     .rtol(o.rtol)
                     .error_norm(error_norm_from_string(o.error_norm))
                     .record_trajectory(record)
                     .scheduler(flow.path->scheduler())
                     .manifold(flow.path->manifold())
                     .noise_scale(o.noise_scale)
                     .path(flow.path)
                     .corrector(corrector)
                     .time_grid(time_grid)
                     .generator(gen));
  };
  std::string scheduler_used;
  if (condition.empty()) {
    SamplingFlow flow = this->flow(model, o.scheduler);
    scheduler_used = flow.scheduler;
    at::Tensor x0 = flow.path->start(o.initial.defined() ? initial_state(o.initial, *flow.path) : source(o.n, gen)).to(o.device);
    SolveResult result = solve_from(flow, x0, false);
    r.x = result.x.to(at::kCPU);
    r.nfe = result.nfe;
    r.steps = result.steps;
    r.rejected_steps = result.rejected_steps;
    if (o.trajectories > 0) {
      const int64_t k = std::min(o.trajectories, o.n);
      auto traj = solve_from(flow, x0.slice(0, 0, k), true);
      r.trajectories = at::stack(traj.trajectory).to(at::kCPU);
    }
  } else {
    if (o.trajectories > 0) throw std::invalid_argument("--trajectories applies to unconditional runs (2-D points)");
    // Conditional: chunk by chunk (noise drawn chunk by chunk), each with its part of the conditioning.
    std::vector<at::Tensor> parts;
    const int64_t chunk = std::max<int64_t>(1, o.chunk);
    for (int64_t start = 0; start < o.n; start += chunk) {
      const int64_t b = std::min(chunk, o.n - start);
      const models::Conditioning part = condition.narrow(start, b).to(o.device);
      const VelocityField network = part.labels.defined() && !part.context.defined() && !part.mask.defined()
                                        ? guided_velocity_field(model, part.labels, o.guidance)
                                        : as_velocity_field(model, part);
      SamplingFlow flow = this->flow(model, o.scheduler, network);
      scheduler_used = flow.scheduler;
      at::Tensor x0 = flow.path->start(o.initial.defined() ? initial_state(o.initial.narrow(0, start, b), *flow.path) : source(b, gen)).to(o.device);
      SolveResult result = solve_from(flow, x0, false);
      r.nfe = result.nfe;
      r.steps = result.steps;
      r.rejected_steps += result.rejected_steps;
      parts.push_back(result.x.to(at::kCPU));
    }
    r.x = at::cat(parts);
    r.labels = condition.labels;
  }
  // Broken models (or a diverging solve) are not reported as success.
  const int64_t bad = r.x.numel() == 0 ? 0 : (~at::isfinite(r.x.reshape({r.x.size(0), -1})).all(1)).sum().item<int64_t>();
  if (bad > 0) {
    throw std::runtime_error(std::to_string(bad) + " of " + std::to_string(r.x.size(0)) + " samples are not finite (" + o.solver +
                             (info.stochastic ? ", noise " + std::to_string(o.noise_scale) : std::string()) +
                             "): the network's weights or the solve diverged; nothing written");
  }
  r.x = domain_->decode(data, r.x, o.device);  // a latent run's images
  r.description = info.adaptive ? o.solver : o.solver + " " + std::to_string(o.steps) + " steps";
  if (info.stochastic) {
    char noise[48];
    std::snprintf(noise, sizeof noise, ", noise %.3g", o.noise_scale);
    r.description += noise;
  }
  if (!o.scheduler.empty()) r.description += ", " + scheduler_used;
  if (o.time_shift != 1.0) {
    char shift[48];
    std::snprintf(shift, sizeof shift, ", time shift %.3g", o.time_shift);
    r.description += shift;
  }
  if (!o.corrector.empty()) r.description += ", corrector " + o.corrector;
  r.info = {{"run", is_model_file() ? config_["model"]["file"].get<std::string>() : dir_},
            {"n", o.n},
            {"solver", o.solver},
            {"nfe", r.nfe},
            {"steps", r.steps},
            {"seed", o.seed},
            {"scheduler", scheduler_used}};
  if (info.adaptive) {
    r.info["atol"] = o.atol;
    r.info["rtol"] = o.rtol;
    r.info["rejected_steps"] = r.rejected_steps;
  }
  if (info.stochastic) r.info["sde_noise"] = o.noise_scale;
  if (o.time_shift != 1.0) r.info["time_shift"] = o.time_shift;
  if (!o.corrector.empty()) r.info["corrector"] = o.corrector;
  if (r.labels.defined()) {
    const at::Tensor labels = r.labels.to(at::kCPU).contiguous();
    r.info["guidance"] = o.guidance;
    r.info["class"] = o.which_class;
    r.info["labels"] = std::vector<int64_t>(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel());
  }
  r.info.update(domain_->sample_info(data));
  return r;
}

std::vector<std::string> Run::write_samples(const std::string& path, const SampleResult& samples, const SampleOptions& options) const {
  const std::string extension = fs::path(path).extension().string();
  if (extension != ".npy" && extension != ".pt") {
    throw std::invalid_argument("--out '" + path + "': samples are written as .npy or .pt (pictures and .json go beside them)");
  }
  ensure_parent(path);
  // Samples, pictures and their .json come as a set: a failure (a full disk) removes what was written.
  std::vector<std::string> files;
  try {
    io::save_array(path, samples.x);
    files.push_back(path);
    const std::string stem = fs::path(path).replace_extension("").string();
    for (const auto& f : domain_->picture_samples(*this, samples, options, stem)) files.push_back(f);
    write_json_file(stem + ".json", samples.info);
    files.push_back(stem + ".json");
    std::error_code same;
    if (fs::equivalent(fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path(), dir_, same)) {
      try_write_run_index(*this);  // the samples' pictures are the run's
    }
  } catch (...) {
    std::error_code ec;
    for (const auto& f : files) fs::remove(f, ec);
    throw;
  }
  return files;
}

json Run::evaluate(const EvaluationOptions& options, const std::string& out, const ReportFunction& report) const {
  const std::string path = out.empty() ? metrics_json() : out;
  ensure_parent(path);
  EvaluationOptions resolved = options;
  // Every domain's metrics name the checkpoint scored and its step ("best" and the latest resolved here).
  if (resolved.checkpoint == "best") resolved.checkpoint = best_checkpoint();
  if (resolved.checkpoint.empty() && !is_model_file()) resolved.checkpoint = latest_checkpoint();
  json metrics = domain_->evaluate(*this, resolved, report);
  metrics["checkpoint"] = is_model_file() ? config_["model"]["file"].get<std::string>() : resolved.checkpoint;
  metrics["step"] = is_model_file() ? int64_t{-1} : checkpoint_step_of(resolved.checkpoint);
  write_json_file(path, metrics);
  try_write_run_index(*this);
  return metrics;
}

namespace {

// The run's own rows a likelihood is measured on: the first q.n of the test split (held_out) or of
// the validation split.
at::Tensor split_rows(const Domain& domain, const json& data, const LikelihoodRequest& q, at::Generator& gen) {
  if (q.split != "validation") return domain.held_out(data, q.n, gen);
  at::Tensor x = domain.validation_split(data);
  return x.slice(0, 0, std::min(q.n, x.size(0)));
}

// Token runs: the likelihood bound −ELBO (discrete_path.h) on a stratified random time grid of
// `q.steps` times, per sequence, in nats (and per token, in bits per token).
LikelihoodSummary discrete_likelihood(const Run& run, const Domain& domain, const LikelihoodRequest& q,
                                      const std::shared_ptr<MixtureDiscretePath>& path) {
  const json& data = run.config()["data"];
  if (q.steps < 1 || q.steps > 100000) throw std::invalid_argument("--steps " + std::to_string(q.steps) + ": expected 1 to 100000 time points");
  if (q.n < 1 || q.n > 10000000) throw std::invalid_argument("--n " + std::to_string(q.n) + ": expected 1 to 10^7 sequences");
  if (q.batch < 1) throw std::invalid_argument("--batch must be >= 1, got " + std::to_string(q.batch));
  auto model = run.model(q.checkpoint, q.device);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(q.seed + 0x11e1ULL);
  at::Tensor x;
  std::string label = q.data_label;
  if (q.points.defined()) {
    x = q.points;
    if (x.is_floating_point()) {
      if (!at::equal(x, x.round())) throw std::invalid_argument("token data must be integer ids");
      x = x.to(at::kLong);
    }
  } else {
    x = split_rows(domain, data, q, gen);
    label = data.value("name", std::string("held-out data")) + (q.split == "validation" ? " validation split" : "") + " (" +
            std::to_string(x.size(0)) + " sequences)";
  }
  const int64_t length = model->sample_shape().empty() ? x.size(1) : model->sample_shape()[0];
  if (x.dim() != 2 || x.size(1) != length || x.scalar_type() != at::kLong) {
    throw std::invalid_argument("the run's model takes (n, " + std::to_string(length) + ") token ids, got " + c10::str(x.sizes()));
  }
  if (x.min().item<int64_t>() < 0 || x.max().item<int64_t>() >= path->vocabulary()) {
    throw std::invalid_argument("token ids must be in [0, " + std::to_string(path->vocabulary()) + ")");
  }
  c10::InferenceMode guard;
  const auto start = std::chrono::steady_clock::now();
  // An autoregressive run's likelihood is exact (the chain rule); a flow's is the bound.
  const bool autoregressive = data.value("autoregressive", false);
  at::Tensor elbo = autoregressive ? autoregressive_negative_log_likelihood(as_velocity_field(model), x.to(q.device), q.batch)
                                   : discrete_negative_elbo(as_velocity_field(model), x.to(q.device), *path,
                                                            DiscreteELBOOptions().time_points(q.steps).chunk(q.batch), gen);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double nll = elbo.mean().item<double>();
  const double stderr_ = x.size(0) > 1 ? elbo.std().item<double>() / std::sqrt(static_cast<double>(x.size(0))) : 0.0;
  json result = {{"nll", nll},
                 {"nll_stderr", stderr_},
                 {"nll_per_token", nll / static_cast<double>(length)},
                 {"bits_per_token", nll / (static_cast<double>(length) * std::log(2.0))},
                 {"bound", autoregressive ? "exact (chain rule)" : "-ELBO (generalized KL, stratified time grid)"},
                 {"time_points", autoregressive ? 0 : q.steps},
                 {"n", x.size(0)},
                 {"tokens_per_sequence", length},
                 {"data", label},
                 {"seconds", seconds}};
  return {result, -elbo};
}

}  // namespace

LikelihoodSummary Run::likelihood(const LikelihoodRequest& q) const {
  const json& data = config_["data"];
  if (q.split != "test" && q.split != "validation") throw std::invalid_argument("--split " + q.split + ": expected test or validation");
  if (q.split == "validation" && (q.points.defined() || !q.target.empty())) {
    throw std::invalid_argument("--split validation names the run's own data; it does not go with given points or a --target");
  }
  if (config_["path"].value("type", std::string()) == "mixture-discrete") {
    return discrete_likelihood(*this, *domain_, q, std::dynamic_pointer_cast<MixtureDiscretePath>(make_path(config_["path"])));
  }
  if (!domain_->source_log_density(data)) {
    throw std::invalid_argument("likelihood needs a run whose source is 'gaussian' (a known density at t = 0); '" + dir_ +
                                "' starts from '" + data.value("source", std::string("?")) + "'");
  }
  const SolverInfo info = solver_info(q.solver);
  if (info.stochastic) throw std::invalid_argument("likelihood needs an ODE solver, not " + q.solver);
  if (q.divergence != "exact" && q.divergence != "hutchinson") {
    throw std::invalid_argument("--divergence must be exact or hutchinson, got " + q.divergence);
  }
  if (q.batch < 1) throw std::invalid_argument("--batch must be >= 1, got " + std::to_string(q.batch));
  // Refused before the main result is computed: the map solves grid^2 points.
  if (q.grid < 0 || q.grid > 1000) throw std::invalid_argument("--grid " + std::to_string(q.grid) + ": expected 0 to 1000 cells per side");
  if (q.n < 1 || q.n > 10000000) throw std::invalid_argument("--n " + std::to_string(q.n) + ": expected 1 to 10^7 points");
  const std::string map_path = q.density_map.empty() ? dir_ + "/density.png" : q.density_map;
  auto model = this->model(q.checkpoint, q.device);
  // Float64 throughout: adaptive steps on the augmented state would otherwise chase float32 rounding
  // in the divergence integral (several times the NFE at atol 1e-5).
  model->to(at::kDouble);
  SamplingFlow flow = this->flow(model);
  // Where sampling starts: σ₀·x₀ (σ₀ = 1 except on VE paths), so the t = 0 density is N(0, σ₀² I).
  const double source_scale = flow.path->start(at::ones({1, 1}, at::kDouble)).item<double>();

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(q.seed + 0x11e1ULL);
  at::Tensor x;
  std::string data_label = q.data_label;
  if (q.points.defined()) {
    x = q.points;
  } else if (!q.target.empty()) {
    x = data::toy2d_sampler(q.target)(q.n, gen);
    data_label = q.target + " (" + std::to_string(q.n) + " fresh samples)";
  } else {
    if (is_model_file() && !data.contains("target")) throw std::invalid_argument("with --model-file, give --data or --target");
    x = split_rows(*domain_, data, q, gen);
    data_label = domain_->held_out_label(data, x.size(0), q.split);
    if (data.contains("autoencoder")) data_label += ", as latents of the autoencoder " + data["autoencoder"].value("dir", std::string());
  }
  const int64_t dim = model->sample_shape().empty() ? x.size(1) : c10::multiply_integers(model->sample_shape());
  if (x.dim() != 2 || x.size(1) != dim) {
    throw std::runtime_error("the data has dimension " + std::to_string(x.dim() == 2 ? x.size(1) : x.numel()) +
                             " but the run's model has " + std::to_string(dim));
  }
  auto solver = SolverOptions()
                    .method(solver_method_from_string(q.solver))
                    .steps(q.steps)
                    .atol(q.atol)
                    .rtol(q.rtol)
                    .error_norm(error_norm_from_string(q.error_norm))
                    .manifold(flow.path->manifold());
  auto options = LikelihoodOptions()
                     .solver(solver)
                     .divergence(q.divergence == "exact" ? DivergenceMethod::Exact : DivergenceMethod::Hutchinson)
                     .probes(q.probes)
                     .probe_distribution(q.probe_distribution == "gaussian" ? ProbeDistribution::Gaussian : ProbeDistribution::Rademacher)
                     .source_scale(source_scale);
  // On a manifold the source is the domain's (uniform: −log volume), not a Gaussian.
  if (flow.path->manifold()) options.source_log_density(domain_->source_log_density(data));
  // A network that gives its own exact divergence (the MLP: forward-mode, no autograd), when the field
  // is the network itself: velocity prediction on flat space.
  if (model->supports_divergence() && options.divergence() == DivergenceMethod::Exact && flow.prediction == "velocity" &&
      !flow.path->manifold()) {
    options.field_with_divergence([model](const at::Tensor& x, const at::Tensor& t) { return model->forward_with_divergence(x, t); });
  }
  // Solved in batches (each its own adaptive solve); NFE is reported per point's solve, summed and max.
  auto log_prob_of = [&](const at::Tensor& points, int64_t& nfe_total, int64_t& nfe_max, const LikelihoodOptions& how) {
    std::vector<at::Tensor> parts;
    for (int64_t k = 0; k < points.size(0); k += q.batch) {
      at::Tensor chunk = points.slice(0, k, std::min(points.size(0), k + q.batch)).to(q.device, at::kDouble);
      auto r = log_likelihood(flow.field, chunk, how, gen);
      nfe_total += r.nfe;
      nfe_max = std::max(nfe_max, r.nfe);
      parts.push_back(r.log_prob.detach().to(at::kCPU, at::kDouble));
    }
    return at::cat(parts);
  };

  const auto start = std::chrono::steady_clock::now();
  int64_t nfe_total = 0, nfe_max = 0;
  at::Tensor log_prob = log_prob_of(x, nfe_total, nfe_max, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!at::isfinite(log_prob).all().item<bool>()) {
    throw std::runtime_error("the log-likelihood is not finite for some points (the solve diverged; try a tighter --atol/--rtol or more --steps)");
  }
  at::Tensor nll_per_point = -log_prob;
  const double nll = nll_per_point.mean().item<double>();
  const double stderr_ = x.size(0) > 1 ? nll_per_point.std().item<double>() / std::sqrt(static_cast<double>(x.size(0))) : 0.0;
  // Per intrinsic dimension: a manifold's (the sphere S² has 2 in 3 coordinates, n particles with their
  // centre of mass fixed have (n − 1)·d).
  const int64_t intrinsic = flow.path->manifold() && flow.path->manifold()->dimension() > 0 ? flow.path->manifold()->dimension() : dim;
  json result = {{"nll", nll},      {"nll_stderr", stderr_}, {"bpd", nll / (static_cast<double>(intrinsic) * std::log(2.0))},
                 {"nfe", nfe_max},  {"nfe_total", nfe_total}, {"n", x.size(0)},
                 {"dim", dim},      {"data", data_label},     {"solver", q.solver},
                 {"divergence", q.divergence}, {"seconds", seconds}};
  if (info.adaptive) {
    result["atol"] = q.atol;
    result["rtol"] = q.rtol;
    result["error_norm"] = q.error_norm;
  } else {
    result["steps"] = q.steps;
  }
  if (q.divergence == "hutchinson") {
    result["probes"] = q.probes;
    result["probe_distribution"] = q.probe_distribution;
  }
  if (source_scale != 1.0) result["source_scale"] = source_scale;

  // Density map for 2-D data with a known target: log p on a grid over the target's range, beside a
  // histogram of the target.
  const bool target_known = !q.target.empty() || data.contains("target");
  if (dim == 2 && q.grid > 0 && target_known) {
    ensure_parent(map_path);
    at::Tensor reference = (q.target.empty() ? domain_->held_out(data, 100000, gen) : data::toy2d_sampler(q.target)(100000, gen)).to(at::kDouble);
    at::Tensor quantiles = at::quantile(reference, at::tensor({0.002, 0.998}, at::kDouble), 0);
    const double cx = (quantiles[0][0].item<double>() + quantiles[1][0].item<double>()) / 2;
    const double cy = (quantiles[0][1].item<double>() + quantiles[1][1].item<double>()) / 2;
    const double span = 1.2 * std::max(quantiles[1][0].item<double>() - quantiles[0][0].item<double>(),
                                       quantiles[1][1].item<double>() - quantiles[0][1].item<double>());
    const double x_lo = cx - span / 2, x_hi = cx + span / 2, y_lo = cy - span / 2, y_hi = cy + span / 2;
    const int64_t g = q.grid;
    const double cell = span / static_cast<double>(g);
    at::Tensor centres = at::linspace(0.5 * cell, span - 0.5 * cell, g, at::kDouble);
    at::Tensor gx = (centres + x_lo).unsqueeze(0).expand({g, g}), gy = (centres + y_lo).unsqueeze(1).expand({g, g});
    at::Tensor grid_points = at::stack({gx.reshape(-1), gy.reshape(-1)}, 1);  // row-major, row 0 at y_lo
    // A picture, not a figure: Dopri5 at tolerance 1e-3 (or the looser one given) keeps it to seconds;
    // the divergence integral near t = 1 is what drives the NFE up at tight tolerances.
    auto map_options = options;
    if (info.adaptive) map_options.solver(SolverOptions(solver).atol(std::max(q.atol, 1e-3)).rtol(std::max(q.rtol, 1e-3)));
    int64_t map_nfe = 0, unused_max = 0;
    at::Tensor model_log_p = log_prob_of(grid_points, map_nfe, unused_max, map_options).reshape({g, g});
    // Histogram density estimate on the same cells.
    at::Tensor ix = ((reference.select(1, 0) - x_lo) / cell).floor().to(at::kLong);
    at::Tensor iy = ((reference.select(1, 1) - y_lo) / cell).floor().to(at::kLong);
    at::Tensor inside = (ix >= 0) & (ix < g) & (iy >= 0) & (iy < g);
    at::Tensor counts = at::bincount((iy * g + ix).index({inside}), {}, g * g).to(at::kDouble).reshape({g, g});
    at::Tensor hist_log_p = (counts / (static_cast<double>(reference.size(0)) * cell * cell)).log();
    const double top = std::max(model_log_p.max().item<double>(), hist_log_p.max().item<double>());
    io::PlotStyle style;
    style.width = 560;
    style.height = 560;
    char title[160];
    std::snprintf(title, sizeof title, "model log p (NLL %.3f)", nll);
    io::write_heatmaps_png(map_path,
                           {{model_log_p, x_lo, x_hi, y_lo, y_hi, top - 8, top, title},
                            {hist_log_p, x_lo, x_hi, y_lo, y_hi, top - 8, top, "target log density (histogram)"}},
                           style);
    result["density_map"] = map_path;
  }
  return {result, log_prob};
}

}  // namespace flowmatch
