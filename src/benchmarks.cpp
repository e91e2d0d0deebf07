// The benchmark set (flowmatch bench; docs/BENCHMARKS.md). Each case is timed after a warm-up and
// written as one JSON object with its settings, the thread count and the machine's cores.

#include <chrono>
#include <fstream>
#include <algorithm>
#include <stdexcept>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <c10/core/InferenceMode.h>

#include "flowmatch/benchmarks.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/coupling.h"
#include "flowmatch/cuda_graph.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/guidance.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/unet.h"
#include "flowmatch/optimizer.h"
#include "flowmatch/policy.h"
#include "flowmatch/solvers.h"
#include "flowmatch/train.h"
#include "timing.h"

namespace flowmatch::benchmarks {

namespace fm = flowmatch;
using json = nlohmann::json;

namespace {


const std::vector<std::string> kCases = {"train-independent", "train-exact-ot", "sample-euler100", "sample-dopri5",
                                         "likelihood-exact", "coupling", "gemm-peak", "mlp-roofline",
                                         "unet-train", "unet-sample", "policy-latency", "dopri5-norms", "likelihood-fixed",
                                         "unet-twin"};

using Clock = std::chrono::steady_clock;
using fm::detail::seconds_since;

// The reference's setting (../shared/bench/ref_cfm_2d.py): 8gaussians -> moons, MLP 3x64 SELU with t
// as an input, Adam 1e-3, batch 256, sigma 0.1.
fm::FlowMatchingProblem reference_problem(const std::string& coupling) {
  fm::FlowMatchingProblem problem;
  problem.source = fm::data::toy2d_sampler("8gaussians");
  problem.target = fm::data::toy2d_sampler("moons");
  problem.path = std::make_shared<fm::CondOTPath>(fm::CondOTPathOptions().sigma(0.1));
  problem.coupling = fm::make_coupling(coupling);
  return problem;
}
std::shared_ptr<fm::models::VelocityModel> reference_model(int64_t width = 64) {
  at::manual_seed(0);
  return std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(width).depth(3));
}

json base(const std::string& name) {
  return {{"case", name}, {"threads", at::get_num_threads()}, {"cores", std::thread::hardware_concurrency()}};
}

// Trains `steps` steps (after 50 untimed ones); the trained model is kept for the sampling cases.
json bench_train(const std::string& coupling, int64_t steps, std::shared_ptr<fm::models::VelocityModel>& trained) {
  auto model = reference_model();
  fm::Trainer trainer(model, reference_problem(coupling),
                      fm::TrainerOptions().steps(steps + 50).batch_size(256).lr(1e-3).seed(0).checkpoint_every(0));
  for (int k = 0; k < 50; ++k) trainer.train_step();
  const auto start = Clock::now();
  for (int64_t k = 0; k < steps; ++k) trainer.train_step();
  const double s = seconds_since(start);
  trained = model;
  json j = base("train-" + coupling);
  j.update({{"setting", "8gaussians->moons, MLP 3x64 SELU, Adam 1e-3, batch 256, sigma 0.1"}, {"steps", steps},
            {"seconds", s}, {"it_per_s", static_cast<double>(steps) / s}});
  return j;
}

// The fastest of `repeats` timed solves (seconds); `nfe` gets the solves' evaluation count.
double best_solve_seconds(const fm::VelocityField& field, const at::Tensor& x0, const fm::SolverOptions& options,
                          int64_t repeats, int64_t& nfe) {
  double best = 1e300;
  for (int64_t r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    fm::SolveResult result = fm::solve_ode(field, x0, options);
    if (!x0.is_cpu()) result.x.to(at::kCPU);  // a GPU's work is done when its result is here
    nfe = result.nfe;
    best = std::min(best, seconds_since(start));
  }
  return best;
}

json bench_sample(const std::string& method, std::shared_ptr<fm::models::VelocityModel> model, int64_t repeats) {
  c10::InferenceMode guard;
  model->eval();
  auto field = fm::as_velocity_field(model);
  const int64_t n = 10000;
  auto g = at::make_generator<at::CPUGeneratorImpl>(1);
  at::Tensor x0 = fm::data::toy2d_sampler("8gaussians")(n, g);
  fm::SolverOptions options = method == "euler100" ? fm::SolverOptions().method(fm::SolverMethod::Euler).steps(100)
                                                   : fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-5).rtol(1e-5);
  fm::solve_ode(field, x0, options);  // warm-up
  int64_t nfe = 0;
  const double best = best_solve_seconds(field, x0, options, repeats, nfe);
  json j = base("sample-" + method);
  j.update({{"batch", n}, {"nfe", nfe}, {"seconds", best}, {"samples_per_s", static_cast<double>(n) / best},
            {"model", "train-independent's"}});
  if (method != "euler100") j["atol"] = 1e-5, j["rtol"] = 1e-5;
  return j;
}

// On a GPU: Euler, 100 steps, of the reference's 3x64 SELU MLP (untrained: the time does not depend on
// the weights) from 8gaussians at batch 10 000 and 1 000 000, launched step by step (eager) and
// replayed as one CUDA graph (cuda_graph.h); the best of `repeats`, each ending with the samples on the
// CPU.
json bench_sample_on_device(const c10::Device& device, int64_t repeats) {
  auto model = reference_model();
  model->to(device);
  model->eval();
  c10::InferenceMode guard;
  auto field = fm::as_velocity_field(model);
  const auto options = fm::SolverOptions().method(fm::SolverMethod::Euler).steps(100);
  json rows = json::array();
  for (int64_t n : {int64_t{10000}, int64_t{1000000}}) {
    auto g = at::make_generator<at::CPUGeneratorImpl>(1);
    at::Tensor x0 = fm::data::toy2d_sampler("8gaussians")(n, g).to(device);
    fm::solve_ode(field, x0, options);  // warm-up
    int64_t nfe = 0;
    const double eager = best_solve_seconds(field, x0, options, repeats, nfe);
    json j = base("sample-euler100");
    j.update({{"device", device.str()}, {"batch", n}, {"nfe", nfe}, {"seconds", eager},
              {"samples_per_s", static_cast<double>(n) / eager}, {"model", "untrained 3x64 SELU MLP"}});
    if (fm::CapturedSolve::available() && device.is_cuda()) {
      fm::CapturedSolve solve(field, x0, options);
      double best = 1e300;
      at::Tensor out;
      for (int64_t r = 0; r < repeats + 1; ++r) {  // the first replay is a warm-up
        const auto start = Clock::now();
        out = solve.replay(x0).to(at::kCPU);
        if (r > 0) best = std::min(best, seconds_since(start));
      }
      const at::Tensor reference = fm::solve_ode(field, x0, options).x.to(at::kCPU);
      j.update({{"seconds_cuda_graph", best}, {"samples_per_s_cuda_graph", static_cast<double>(n) / best},
                {"cuda_graph_max_abs_difference", (out - reference).abs().max().item<double>()}});
    }
    rows.push_back(j);
  }
  return rows;
}

// Exact likelihood on the trained demo model, adaptive (Dopri5 1e-5, float32 as trained): the network's
// forward-mode divergence (what `flowmatch likelihood` uses for MLP runs) and autograd's, same points.
json bench_likelihood(std::shared_ptr<fm::models::VelocityModel> model) {
  auto field = fm::as_velocity_field(model);
  const int64_t n = 1000;
  auto g = at::make_generator<at::CPUGeneratorImpl>(2);
  at::Tensor x1 = fm::data::toy2d_sampler("moons")(n, g);
  fm::LikelihoodOptions options;
  options.solver(fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-5).rtol(1e-5));
  torch::NoGradGuard no_grad;
  auto start = Clock::now();
  const auto autograd = fm::log_likelihood(field, x1, options);
  const double s_autograd = seconds_since(start);
  options.field_with_divergence([model](const at::Tensor& x, const at::Tensor& t) { return model->forward_with_divergence(x, t); });
  start = Clock::now();
  const auto fused = fm::log_likelihood(field, x1, options);
  const double s = seconds_since(start);
  json j = base("likelihood-exact");
  j.update({{"points", n}, {"divergence", "exact, forward-mode"}, {"solver", "dopri5 1e-5"}, {"nfe", fused.nfe}, {"seconds", s},
            {"samples_per_s", static_cast<double>(n) / s}, {"samples_per_s_autograd", static_cast<double>(n) / s_autograd},
            {"nfe_autograd", autograd.nfe},
            {"max_abs_log_prob_difference", (fused.log_prob - autograd.log_prob).abs().max().item<double>()}});
  return j;
}

// Work against precision of Dopri5 with the per-sample error norm and torchdiffeq's batch RMS norm: a
// random 3x64 SELU MLP field (seed 0) on 1000 N(0, I) points in float64, from t = 0 to 1; the error is
// the largest distance to a solve at tolerance 1e-12.
std::pair<std::shared_ptr<fm::models::MLPImpl>, at::Tensor> reference_mlp(const std::string& weights);

// Dopri5 with each error norm against a solve at 1e-12: a random 3x64 SELU MLP field (seed 0) from
// 1000 N(0, I) points, or, with --weights, ref_likelihood_2d.py's field and points (the field
// bench/dopri5_torchdiffeq.py gives torchdiffeq), in float64, from t = 0 to 1.
json bench_dopri5_norms(const std::string& weights) {
  at::manual_seed(0);
  auto mlp = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2));
  auto g = at::make_generator<at::CPUGeneratorImpl>(1);
  at::Tensor x0 = at::randn({1000, 2}, g, at::kDouble);
  if (!weights.empty()) std::tie(mlp, x0) = reference_mlp(weights);
  mlp->to(at::kDouble);
  x0 = x0.to(at::kDouble);
  auto field = fm::as_velocity_field(mlp);
  torch::NoGradGuard no_grad;
  const at::Tensor exact = fm::solve_ode(field, x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-12).rtol(1e-12)).x;
  json rows = json::array();
  for (double tol : {1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7}) {  // a work-precision curve
    for (auto norm : {fm::ErrorNorm::Sample, fm::ErrorNorm::Batch}) {
      auto r = fm::solve_ode(field, x0, fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(tol).rtol(tol).error_norm(norm));
      json j = base("dopri5-norms");
      j["field"] = weights.empty() ? "random 3x64 SELU MLP, seed 0" : weights;
      j.update({{"tolerance", tol}, {"error_norm", norm == fm::ErrorNorm::Sample ? "sample" : "batch"}, {"nfe", r.nfe},
                {"steps", r.steps}, {"rejected", r.rejected_steps}, {"max_error", (r.x - exact).norm(2, 1).max().item<double>()},
                {"rms_error", (r.x - exact).square().mean().sqrt().item<double>()}});
      rows.push_back(j);
    }
  }
  return rows;
}

// The median of `repeats` timed calls of `sample`, after 200 untimed ones, in microseconds.
double median_microseconds(const std::function<void()>& sample, int64_t repeats) {
  for (int r = 0; r < 200; ++r) sample();
  std::vector<double> us(static_cast<size_t>(repeats));
  for (auto& u : us) {
    const auto start = Clock::now();
    sample();
    u = 1e6 * seconds_since(start);
  }
  std::nth_element(us.begin(), us.begin() + repeats / 2, us.end());
  return us[static_cast<size_t>(repeats / 2)];
}

// The policy network's layers (weight, bias), seeded 0: in -> width (depth times) -> out, on `device`.
std::vector<std::pair<at::Tensor, at::Tensor>> policy_layers(int64_t in, int64_t width, int64_t depth, int64_t out, const c10::Device& device) {
  at::manual_seed(0);
  std::vector<std::pair<at::Tensor, at::Tensor>> layers;
  for (int64_t d = 0; d <= depth; ++d) {
    torch::nn::Linear layer(in, d == depth ? out : width);
    layers.emplace_back(layer->weight.detach().to(device), layer->bias.detach().to(device));
    in = width;
  }
  return layers;
}

// ../shared/bench/ref_policy_latency.py's setting: an action-chunk policy (horizon 16 × 2 actions,
// observation 20, MLP 3 × 256 SiLU over [x, observation, t]), 10 Euler steps at batch 1; the median of
// 2000 samples after 200 untimed ones, by the small-batch sampler (policy.h) and by LibTorch's
// operations at batch 1 (what eager PyTorch does, without Python).
json bench_policy_latency() {
  const int64_t horizon = 16, action_dim = 2, observation = 20, width = 256, depth = 3, steps = 10, repeats = 2000;
  const int64_t action = horizon * action_dim;
  const auto layers = policy_layers(action + observation + 1, width, depth, action, c10::kCPU);
  const fm::EulerPolicySampler sampler(fm::SmallBatchMLP(layers, fm::SmallBatchMLP::Activation::SiLU), action, observation, steps);
  const at::Tensor obs = at::randn({1, observation}), noise = at::randn({1, action});
  auto median_us = [&](const std::function<void()>& sample) { return median_microseconds(sample, repeats); };
  std::vector<float> x(static_cast<size_t>(action));
  const float* obs_data = obs.data_ptr<float>();
  const double fused = median_us([&] {
    std::copy(noise.data_ptr<float>(), noise.data_ptr<float>() + action, x.begin());
    sampler.sample(obs_data, x.data());
  });
  c10::InferenceMode guard;
  at::Tensor out;
  const double eager = median_us([&] {
    at::Tensor y = noise.clone();
    const double h = 1.0 / static_cast<double>(steps);
    for (int64_t k = 0; k < steps; ++k) {
      at::Tensor a = at::cat({y, obs, at::full({1, 1}, static_cast<double>(k) * h)}, 1);
      for (size_t l = 0; l < layers.size(); ++l) {
        a = at::addmm(layers[l].second, a, layers[l].first.t());
        if (l + 1 < layers.size()) a = at::silu(a);
      }
      y = y + a * h;
    }
    out = y;
  });
  const double difference = (out - at::from_blob(x.data(), {1, action}, at::kFloat)).abs().max().item<double>();
  json j = base("policy-latency");
  j.update({{"horizon", horizon}, {"action_dim", action_dim}, {"obs_dim", observation}, {"width", width}, {"depth", depth},
            {"steps", steps}, {"repeats", repeats}, {"latency_us_batch1", fused}, {"latency_us_batch1_libtorch_ops", eager},
            {"max_abs_difference", difference}});
  return j;
}

// policy-latency's setting on a GPU: each sample takes the observation from the CPU and brings the
// 16 x 2 actions back, the 10 Euler steps launched op by op (eager) or replayed as one CUDA graph.
json bench_policy_latency_on_device(const c10::Device& device) {
  const int64_t horizon = 16, action_dim = 2, observation = 20, width = 256, depth = 3, steps = 10, repeats = 2000;
  const int64_t action = horizon * action_dim;
  const auto layers = policy_layers(action + observation + 1, width, depth, action, device);
  c10::InferenceMode guard;
  const at::Tensor obs_cpu = at::randn({1, observation}), noise = at::randn({1, action}).to(device);
  at::Tensor obs = obs_cpu.to(device);  // the field reads it where it lies: copied into at each tick
  fm::VelocityField field = [&layers, &obs](const at::Tensor& x, const at::Tensor& t) {
    at::Tensor a = at::cat({x, obs, t.reshape({1, 1}).expand({x.size(0), 1})}, 1);
    for (size_t l = 0; l < layers.size(); ++l) {
      a = at::addmm(layers[l].second, a, layers[l].first.t());
      if (l + 1 < layers.size()) a = at::silu(a);
    }
    return a;
  };
  const auto options = fm::SolverOptions().method(fm::SolverMethod::Euler).steps(steps);
  auto median_us = [&](const std::function<void()>& sample) { return median_microseconds(sample, repeats); };
  at::Tensor eager_out, graph_out;
  const double eager = median_us([&] {
    obs.copy_(obs_cpu);
    eager_out = fm::solve_ode(field, noise, options).x.to(at::kCPU);
  });
  json j = base("policy-latency");
  j.update({{"device", device.str()}, {"horizon", horizon}, {"action_dim", action_dim}, {"obs_dim", observation}, {"width", width},
            {"depth", depth}, {"steps", steps}, {"repeats", repeats}, {"latency_us_batch1_libtorch_ops", eager}});
  if (fm::CapturedSolve::available() && device.is_cuda()) {
    fm::CapturedSolve solve(field, noise, options);
    const double graph = median_us([&] {
      obs.copy_(obs_cpu);
      graph_out = solve.replay(noise).to(at::kCPU);
    });
    j.update({{"latency_us_batch1_cuda_graph", graph}, {"cuda_graph_max_abs_difference", (graph_out - eager_out).abs().max().item<double>()}});
  }
  return j;
}

// The 3x64 SELU MLP (t as an input) and the points of ref_likelihood_2d.py's --save-weights file.
std::pair<std::shared_ptr<fm::models::MLPImpl>, at::Tensor> reference_mlp(const std::string& weights) {
  const auto tensors = fm::io::load_pt_tensors(weights);
  auto get = [&](const std::string& key) {
    auto it = tensors.find(key);
    if (it == tensors.end()) throw std::runtime_error("'" + weights + "' has no tensor '" + key + "' (expected ref_likelihood_2d.py's --save-weights file)");
    return it->second;
  };
  const at::Tensor points = get("points");
  if (points.dim() != 2 || !points.is_floating_point()) throw std::runtime_error("'" + weights + "': points must be (n, D) floating point");
  const int64_t dim = points.size(1), width = get("state_dict.net.0.weight").size(0);
  auto mlp = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(dim).width(width).depth(3));
  mlp->to(points.scalar_type());
  {
    torch::NoGradGuard no_grad;
    const auto parameters = mlp->parameters();  // layer by layer: weight, bias
    for (size_t k = 0; k < 4; ++k) {
      const std::string prefix = "state_dict.net." + std::to_string(2 * k) + ".";
      for (size_t j = 0; j < 2; ++j) {
        const at::Tensor source = get(prefix + (j == 0 ? "weight" : "bias"));
        at::Tensor target = parameters.at(2 * k + j);
        if (source.sizes() != target.sizes()) {
          throw std::runtime_error("'" + weights + "': " + prefix + (j == 0 ? "weight" : "bias") + " has shape " + c10::str(source.sizes()) +
                                   ", expected " + c10::str(target.sizes()) + " (a 3-hidden-layer MLP)");
        }
        target.copy_(source);
      }
    }
  }
  return {mlp, points};
}

// ../shared/bench/ref_likelihood_2d.py's setting on its own weights and points (--save-weights): the
// 3x64 SELU MLP with t as an input, exact divergence, RK4 with 20 steps from t = 1 back to 0, in the
// points' dtype; the divergence by forward mode (the MLP's) and, for reference, by autograd.
json bench_likelihood_fixed(const std::string& weights, int64_t repeats) {
  if (weights.empty()) throw std::invalid_argument("bench case likelihood-fixed needs --weights FILE.pt (ref_likelihood_2d.py --save-weights FILE.pt)");
  const auto loaded = reference_mlp(weights);  // not a structured binding: lambdas below capture the network
  const std::shared_ptr<fm::models::MLPImpl> mlp = loaded.first;
  const at::Tensor points = loaded.second;
  auto field = fm::as_velocity_field(mlp);
  const int64_t steps = 20;
  auto options = fm::LikelihoodOptions().solver(fm::SolverOptions().method(fm::SolverMethod::RK4).steps(steps));
  auto fused = fm::LikelihoodOptions(options).field_with_divergence(
      [mlp](const at::Tensor& x, const at::Tensor& t) { return mlp->forward_with_divergence(x, t); });
  torch::NoGradGuard no_grad;
  auto time_best = [&](const fm::LikelihoodOptions& how, fm::LikelihoodResult& result) {
    fm::log_likelihood(field, points.slice(0, 0, std::min<int64_t>(10, points.size(0))), how);  // warm-up
    double best = 1e300;
    for (int64_t r = 0; r < std::max<int64_t>(1, repeats); ++r) {
      const auto start = Clock::now();
      result = fm::log_likelihood(field, points, how);
      best = std::min(best, seconds_since(start));
    }
    return best;
  };
  fm::LikelihoodResult with_forward_mode, with_autograd;
  const double s = time_best(fused, with_forward_mode);
  const double s_autograd = time_best(options, with_autograd);
  const double n = static_cast<double>(points.size(0));
  json j = base("likelihood-fixed");
  j.update({{"points", points.size(0)}, {"dtype", c10::toString(points.scalar_type())}, {"solver", "rk4"}, {"steps", steps},
            {"nfe", with_forward_mode.nfe}, {"divergence", "exact, forward-mode"}, {"likelihood_points_per_s", n / s},
            {"mean_nll", -with_forward_mode.log_prob.mean().item<double>()},
            {"likelihood_points_per_s_autograd", n / s_autograd}, {"mean_nll_autograd", -with_autograd.log_prob.mean().item<double>()}});
  return j;
}

json bench_coupling(int64_t repeats) {
  json rows = json::array();
  auto g = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int64_t n : {256, 1024}) {
    fm::ExactOTCoupling coupling;
    at::Tensor x0 = fm::data::toy2d_sampler("8gaussians")(n, g), x1 = fm::data::toy2d_sampler("moons")(n, g);
    coupling.pair(x0, x1, g);
    double total = 0;
    const int64_t reps = n <= 256 ? 10 * repeats : repeats;
    for (int64_t r = 0; r < reps; ++r) {
      x0 = fm::data::toy2d_sampler("8gaussians")(n, g);
      x1 = fm::data::toy2d_sampler("moons")(n, g);
      const auto start = Clock::now();
      coupling.pair(x0, x1, g);
      total += seconds_since(start);
    }
    json j = base("coupling");
    j.update({{"coupling", "exact-ot"}, {"batch", n}, {"ms_per_batch", 1000 * total / static_cast<double>(reps)}});
    rows.push_back(j);
  }
  return rows;
}

// Best of a few runs of an n x n x n float32 matrix product: the machine's practical GEMM peak.
json bench_gemm(int64_t repeats) {
  double best_gflops = 0;
  int64_t best_n = 0;
  for (int64_t n : {256, 512, 1024, 2048}) {
    at::Tensor a = at::randn({n, n}), b = at::randn({n, n}), c = at::empty({n, n});
    at::mm_out(c, a, b);
    const int64_t reps = std::max<int64_t>(repeats, (int64_t{1} << 31) / (n * n * n));
    const auto start = Clock::now();
    for (int64_t r = 0; r < reps; ++r) at::mm_out(c, a, b);
    const double gflops = 2.0 * static_cast<double>(n * n * n) * static_cast<double>(reps) / seconds_since(start) / 1e9;
    if (gflops > best_gflops) best_gflops = gflops, best_n = n;
  }
  json j = base("gemm-peak");
  j.update({{"dtype", "float32"}, {"best_n", best_n}, {"gflops", best_gflops}});
  return j;
}

// One training step of the MLP (forward, backward, Adam) on a fixed batch: FLOPs counted as
// 6·B·Σ(in·out) over the linear layers (forward 2·B·in·out, backward twice that). Two ways:
// "autograd" (LibTorch's autograd and Adam, as a LibTorch user would write it) and "trainer" (what
// Trainer does: the MLP's hand-written backward and the fused Adam step).
json bench_mlp_step(int64_t width, int64_t batch, double peak_gflops, int64_t repeats, const std::string& path) {
  auto model = std::dynamic_pointer_cast<fm::models::MLPImpl>(reference_model(width));
  auto parameters = model->parameters();
  torch::optim::Adam adam(parameters, torch::optim::AdamOptions(1e-3));
  at::Tensor x = at::randn({batch, 2}), t = at::rand({batch}), target = at::randn({batch, 2});
  const bool trainer = path == "trainer";
  auto step = [&] {
    if (trainer) {
      model->loss_and_gradients(x, t, target, at::Tensor());
      fm::fused_adam_step(adam, parameters);
      return;
    }
    adam.zero_grad();
    at::Tensor loss = (model->forward(x, t) - target).pow(2).mean();
    loss.backward();
    adam.step();
  };
  for (int k = 0; k < 20; ++k) step();
  const int64_t reps = std::max<int64_t>(50, 200 * repeats * 256 / batch);
  const auto start = Clock::now();
  for (int64_t r = 0; r < reps; ++r) step();
  const double s = seconds_since(start) / static_cast<double>(reps);
  double macs = 0;  // Σ in·out: input 3 (x, t) → width → ... → 2
  int64_t in = 3;
  for (int layer = 0; layer < 3; ++layer) macs += static_cast<double>(in * width), in = width;
  macs += static_cast<double>(width * 2);
  const double gflops = 6.0 * static_cast<double>(batch) * macs / s / 1e9;
  json j = base("mlp-roofline");
  j.update({{"path", path}, {"width", width}, {"depth", 3}, {"batch", batch}, {"ms_per_step", 1000 * s}, {"gflops", gflops},
            {"fraction_of_gemm_peak", peak_gflops > 0 ? gflops / peak_gflops : 0.0}});
  return j;
}

// The default Fashion-MNIST U-Net (docs/IMAGES.md: 28×28, base 32, levels 1-2-2, attention, 10 classes)
// on random images: training steps of batch 64 (forward, loss, backward, Adam) and guided sampling
// (w = 2: one network call on a doubled batch per evaluation) at batch 500, in images per second.
fm::models::UNetOptions default_unet() {
  return fm::models::UNetOptions(1, 28).base_channels(32).channel_multipliers({1, 2, 2}).num_classes(10);
}

json bench_unet_train(int64_t steps, const c10::Device& device, bool autocast_bf16) {
  at::manual_seed(0);
  auto net = std::make_shared<fm::models::UNetImpl>(default_unet());
  net->to(device);  // the trainer moves its batches to the network's device
  fm::data::ImageDataset data{at::randint(0, 256, {512, 1, 28, 28}, at::TensorOptions().dtype(at::kByte)),
                              at::arange(512, at::kLong).remainder(10), fm::data::fashion_mnist_class_names()};
  fm::FlowMatchingProblem problem;
  problem.source = fm::data::gaussian_sampler(784);
  problem.labeled_target = fm::data::image_sampler(data);
  problem.label_dropout = 0.1;
  problem.coupling = fm::make_coupling("independent");
  problem.path = std::make_shared<fm::CondOTPath>();
  const int64_t batch = 64;
  fm::Trainer trainer(net, problem, fm::TrainerOptions().steps(steps + 3).batch_size(batch).lr(5e-4).ema_decay(0.999).seed(1).autocast_bf16(autocast_bf16));
  for (int k = 0; k < 3; ++k) trainer.train_step();
  const auto start = Clock::now();
  // As `flowmatch train` runs: on a GPU the losses are read back once per report (defer_loss_readback),
  // and train() ends with a read of the last ones and a check of the weights, so no work is left queued.
  trainer.train();
  const double seconds = seconds_since(start);
  json j = base("unet-train");
  j["device"] = device.str();
  j["autocast"] = autocast_bf16 ? "bf16" : "off";
  j["parameters"] = fm::models::parameter_count(*net);
  j["batch"] = batch;
  j["steps"] = steps;
  j["train_it_per_s"] = static_cast<double>(steps) / seconds;
  j["train_images_per_s"] = static_cast<double>(steps * batch) / seconds;
  return j;
}

json bench_unet_sample(int64_t repeats, const c10::Device& device) {
  at::manual_seed(0);
  auto net = std::make_shared<fm::models::UNetImpl>(default_unet());
  {
    // Random weights, so that the output layer is not the zero it starts at.
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.normal_(0, 0.05);
  }
  net->to(device);
  const int64_t batch = 500, steps = 10;
  c10::InferenceMode guard;
  auto field = fm::guided_velocity_field(net, fm::grid_labels(batch, 10).to(device), 2.0);
  const auto options = fm::SolverOptions().method(fm::SolverMethod::Midpoint).steps(steps);
  at::Tensor x0 = at::randn({batch, 784}).to(device);
  fm::solve_ode(field, x0, fm::SolverOptions().method(fm::SolverMethod::Euler).steps(1));  // warm-up
  int64_t nfe = 0;
  const double best = best_solve_seconds(field, x0, options, repeats, nfe);
  json j = base("unet-sample");
  j["device"] = device.str();
  j["batch"] = batch;
  j["solver"] = "midpoint";
  j["steps"] = steps;
  j["nfe"] = nfe;
  j["guidance"] = 2.0;
  j["sample_images_per_s"] = static_cast<double>(batch) / best;
  j["network_images_per_s"] = static_cast<double>(batch * nfe * 2) / best;
  return j;
}

// The U-Net of unet-sample (random weights, so that no layer is the zero it starts at) written for
// bench/unet_twin.py with a probe: its output v on random x, t and labels (one of them "no class").
json bench_unet_twin(const std::string& path) {
  if (path.empty()) throw std::invalid_argument("bench case unet-twin needs --save-weights FILE.pt (read by bench/unet_twin.py --weights FILE.pt)");
  at::manual_seed(0);
  auto net = std::make_shared<fm::models::UNetImpl>(default_unet());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.normal_(0, 0.05);
  }
  std::map<std::string, at::Tensor> tensors;
  for (const auto& item : net->named_parameters(true)) tensors["state_dict." + item.key()] = item.value();
  for (const auto& item : net->named_buffers(true)) tensors["state_dict." + item.key()] = item.value();
  at::Tensor x = at::randn({6, 784}), t = at::rand({6});
  at::Tensor labels = at::tensor(std::vector<int64_t>{0, 3, fm::models::kNullLabel, 9, 5, 1});
  at::Tensor v;
  {
    c10::InferenceMode guard;
    v = net->forward_conditional(x, t, labels);
  }
  tensors["x"] = x, tensors["t"] = t, tensors["labels"] = labels, tensors["v"] = v;
  fm::io::save_pt_tensors(path, tensors);
  json j = base("unet-twin");
  j["parameters"] = fm::models::parameter_count(*net);
  j["weights"] = path;
  j["probe_max_abs_output"] = v.abs().max().item<double>();
  return j;
}

}  // namespace

const std::vector<std::string>& case_names() { return kCases; }

json run(const std::vector<std::string>& wanted, const BenchmarkOptions& f, const std::function<void(const json&)>& report) {
  for (const auto& name : wanted) {
    if (std::find(kCases.begin(), kCases.end(), name) == kCases.end()) throw std::invalid_argument("unknown benchmark case '" + name + "'");
  }
  const std::vector<std::string> cases = wanted.empty() ? kCases : wanted;
  if (!f.device.is_cpu()) {
    for (const auto& name : cases) {
      if (name != "unet-train" && name != "unet-sample" && name != "sample-euler100" && name != "policy-latency") {
        throw std::invalid_argument("bench case '" + name + "' runs on the CPU only; on " + f.device.str() +
                                    " run unet-train, unet-sample, sample-euler100 and policy-latency");
      }
    }
  }
  json all = json::array();
  auto emit = [&](const json& j) {
    for (const auto& row : j.is_array() ? j : json::array({j})) {
      all.push_back(row);
      if (report) report(row);
    }
  };
  auto wants = [&](const std::string& name) { return std::find(cases.begin(), cases.end(), name) != cases.end(); };
  std::shared_ptr<fm::models::VelocityModel> trained;
  const bool on_cpu = f.device.is_cpu();
  if (wants("train-independent") || (on_cpu && wants("sample-euler100")) || wants("sample-dopri5") || wants("likelihood-exact")) {
    json j = bench_train("independent", f.train_steps, trained);
    if (wants("train-independent")) emit(j);
  }
  if (wants("train-exact-ot")) {
    std::shared_ptr<fm::models::VelocityModel> unused;
    emit(bench_train("exact-ot", std::max<int64_t>(1, f.train_steps / 4), unused));
  }
  if (wants("sample-euler100")) emit(on_cpu ? bench_sample("euler100", trained, f.repeats) : bench_sample_on_device(f.device, f.repeats));
  if (wants("sample-dopri5")) emit(bench_sample("dopri5", trained, f.repeats));
  if (wants("likelihood-exact")) emit(bench_likelihood(trained));
  if (wants("coupling")) emit(bench_coupling(f.repeats));
  double peak = 0;
  if (wants("gemm-peak") || wants("mlp-roofline")) {
    json g = bench_gemm(f.repeats);
    peak = g["gflops"].get<double>();
    if (wants("gemm-peak")) emit(g);
  }
  if (wants("mlp-roofline")) {
    for (int64_t width : {64, 256})
      for (int64_t batch : {256, 4096}) {
        for (const char* path : {"autograd", "trainer"}) emit(bench_mlp_step(width, batch, peak, f.repeats, path));
      }
  }
  if (wants("unet-train")) emit(bench_unet_train(std::max<int64_t>(5, f.train_steps / 50), f.device, f.autocast_bf16));
  if (wants("unet-sample")) emit(bench_unet_sample(f.repeats, f.device));
  if (wants("policy-latency")) emit(on_cpu ? bench_policy_latency() : bench_policy_latency_on_device(f.device));
  if (wants("dopri5-norms")) emit(bench_dopri5_norms(f.weights));
  // Needs the reference's weights: run when asked for, or with --weights.
  if ((!wanted.empty() && wants("likelihood-fixed")) || !f.weights.empty()) emit(bench_likelihood_fixed(f.weights, f.repeats));
  if ((!wanted.empty() && wants("unet-twin")) || !f.save_weights.empty()) emit(bench_unet_twin(f.save_weights));
  return all;
}


}  // namespace flowmatch::benchmarks
