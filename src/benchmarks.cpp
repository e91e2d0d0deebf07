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
#include <torch/optim/adam.h>
#include <c10/core/InferenceMode.h>

#include "flowmatch/benchmarks.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/coupling.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/guidance.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/unet.h"
#include "flowmatch/optimizer.h"
#include "flowmatch/solvers.h"
#include "flowmatch/train.h"

namespace flowmatch::benchmarks {

namespace fm = flowmatch;
using json = nlohmann::json;

namespace {


const std::vector<std::string> kCases = {"train-independent", "train-exact-ot", "sample-euler100", "sample-dopri5",
                                         "likelihood-exact", "coupling", "gemm-peak", "mlp-roofline",
                                         "unet-train", "unet-sample"};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

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
    nfe = fm::solve_ode(field, x0, options).nfe;
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

json bench_likelihood(std::shared_ptr<fm::models::VelocityModel> model) {
  auto field = fm::as_velocity_field(model);
  const int64_t n = 1000;
  auto g = at::make_generator<at::CPUGeneratorImpl>(2);
  at::Tensor x1 = fm::data::toy2d_sampler("moons")(n, g);
  fm::LikelihoodOptions options;
  options.solver(fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-5).rtol(1e-5));
  torch::NoGradGuard no_grad;
  const auto start = Clock::now();
  const auto result = fm::log_likelihood(field, x1, options);
  const double s = seconds_since(start);
  json j = base("likelihood-exact");
  j.update({{"points", n}, {"divergence", "exact"}, {"solver", "dopri5 1e-5"}, {"nfe", result.nfe}, {"seconds", s},
            {"samples_per_s", static_cast<double>(n) / s}});
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

json bench_unet_train(int64_t steps) {
  at::manual_seed(0);
  auto net = std::make_shared<fm::models::UNetImpl>(default_unet());
  fm::data::ImageDataset data{at::randint(0, 256, {512, 1, 28, 28}, at::TensorOptions().dtype(at::kByte)),
                              at::arange(512, at::kLong).remainder(10), fm::data::fashion_mnist_class_names()};
  fm::FlowMatchingProblem problem;
  problem.source = fm::data::gaussian_sampler(784);
  problem.labeled_target = fm::data::image_sampler(data);
  problem.label_dropout = 0.1;
  problem.coupling = fm::make_coupling("independent");
  problem.path = std::make_shared<fm::CondOTPath>();
  const int64_t batch = 64;
  fm::Trainer trainer(net, problem, fm::TrainerOptions().steps(steps + 3).batch_size(batch).lr(5e-4).ema_decay(0.999).seed(1));
  for (int k = 0; k < 3; ++k) trainer.train_step();
  const auto start = Clock::now();
  for (int64_t k = 0; k < steps; ++k) trainer.train_step();
  const double seconds = seconds_since(start);
  json j = base("unet-train");
  j["parameters"] = fm::models::parameter_count(*net);
  j["batch"] = batch;
  j["steps"] = steps;
  j["train_it_per_s"] = static_cast<double>(steps) / seconds;
  j["train_images_per_s"] = static_cast<double>(steps * batch) / seconds;
  return j;
}

json bench_unet_sample(int64_t repeats) {
  at::manual_seed(0);
  auto net = std::make_shared<fm::models::UNetImpl>(default_unet());
  {
    // Random weights, so that the output layer is not the zero it starts at.
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.normal_(0, 0.05);
  }
  const int64_t batch = 500, steps = 10;
  c10::InferenceMode guard;
  auto field = fm::guided_velocity_field(net, fm::grid_labels(batch, 10), 2.0);
  const auto options = fm::SolverOptions().method(fm::SolverMethod::Midpoint).steps(steps);
  at::Tensor x0 = at::randn({batch, 784});
  fm::solve_ode(field, x0, fm::SolverOptions().method(fm::SolverMethod::Euler).steps(1));  // warm-up
  int64_t nfe = 0;
  const double best = best_solve_seconds(field, x0, options, repeats, nfe);
  json j = base("unet-sample");
  j["batch"] = batch;
  j["solver"] = "midpoint";
  j["steps"] = steps;
  j["nfe"] = nfe;
  j["guidance"] = 2.0;
  j["sample_images_per_s"] = static_cast<double>(batch) / best;
  j["network_images_per_s"] = static_cast<double>(batch * nfe * 2) / best;
  return j;
}

}  // namespace

const std::vector<std::string>& case_names() { return kCases; }

json run(const std::vector<std::string>& wanted, const BenchmarkOptions& f, const std::function<void(const json&)>& report) {
  for (const auto& name : wanted) {
    if (std::find(kCases.begin(), kCases.end(), name) == kCases.end()) throw std::invalid_argument("unknown benchmark case '" + name + "'");
  }
  const std::vector<std::string> cases = wanted.empty() ? kCases : wanted;
  json all = json::array();
  auto emit = [&](const json& j) {
    for (const auto& row : j.is_array() ? j : json::array({j})) {
      all.push_back(row);
      if (report) report(row);
    }
  };
  auto wants = [&](const std::string& name) { return std::find(cases.begin(), cases.end(), name) != cases.end(); };
  std::shared_ptr<fm::models::VelocityModel> trained;
  if (wants("train-independent") || wants("sample-euler100") || wants("sample-dopri5") || wants("likelihood-exact")) {
    json j = bench_train("independent", f.train_steps, trained);
    if (wants("train-independent")) emit(j);
  }
  if (wants("train-exact-ot")) {
    std::shared_ptr<fm::models::VelocityModel> unused;
    emit(bench_train("exact-ot", std::max<int64_t>(1, f.train_steps / 4), unused));
  }
  if (wants("sample-euler100")) emit(bench_sample("euler100", trained, f.repeats));
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
  if (wants("unet-train")) emit(bench_unet_train(std::max<int64_t>(5, f.train_steps / 50)));
  if (wants("unet-sample")) emit(bench_unet_sample(f.repeats));
  return all;
}


}  // namespace flowmatch::benchmarks
