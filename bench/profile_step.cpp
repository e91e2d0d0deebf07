// Where the time of one 2-D training step and of one Euler step goes: each component timed alone
// (µs per call, mean after a warm-up), 1 thread, the reference's setting (8gaussians -> moons, MLP
// 3x64 SELU, batch 256; sampling at batch 10 000). Built with -DFLOWMATCH_BUILD_BENCH=ON:
//   make bench-profile                 # everything
//   build-bench/bench/bench_profile_step sampling   # the sampling lines only (for perf record)
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adam.h>

#include "flowmatch/assignment.h"
#include "flowmatch/flowmatch.h"
#include "flowmatch/optimizer.h"

namespace fm = flowmatch;

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double microseconds_per_call(F f, int calls) {
  for (int i = 0; i < calls / 10; ++i) f();
  const auto start = Clock::now();
  for (int i = 0; i < calls; ++i) f();
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / calls;
}

void line(const char* what, double us) { std::printf("%-22s %9.1f us\n", what, us); }

}  // namespace

int main(int argc, char** argv) {
  const bool only_sampling = argc > 1 && std::string(argv[1]) == "sampling";
  mallopt(M_MMAP_THRESHOLD, 512 << 20);  // as the CLI does (apps/flowmatch/main.cpp)
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  at::set_num_threads(1);
  at::manual_seed(0);
  auto model = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(64).depth(3));
  fm::FlowMatchingProblem problem;
  problem.source = fm::data::toy2d_sampler("8gaussians");
  problem.target = fm::data::toy2d_sampler("moons");
  problem.path = std::make_shared<fm::CondOTPath>(fm::CondOTPathOptions().sigma(0.1));
  problem.coupling = fm::make_coupling("independent");
  auto g = at::make_generator<at::CPUGeneratorImpl>(0);
  const int calls = 3000;

  if (!only_sampling) {
    line("draw batch", microseconds_per_call([&] { fm::draw_training_batch(problem, 256, g); }, calls));
    line("  source", microseconds_per_call([&] { problem.source(256, g); }, calls));
    line("  target", microseconds_per_call([&] { problem.target(256, g); }, calls));
    const at::Tensor x0 = problem.source(256, g), x1 = problem.target(256, g);
    line("  times", microseconds_per_call([&] { fm::sample_times(256, problem.time_sampling, g); }, calls));
    const at::Tensor t = fm::sample_times(256, problem.time_sampling, g);
    line("  path sample", microseconds_per_call([&] { problem.path->sample(x0, x1, t, g); }, calls));
    auto exact = fm::make_coupling("exact-ot");
    line("exact-ot pair", microseconds_per_call([&] { exact->pair(x0, x1, g); }, 500));
    const at::Tensor cost = fm::squared_distances(x0.to(at::kDouble), x1.to(at::kDouble));
    line("  cost matrix", microseconds_per_call([&] { fm::squared_distances(x0.to(at::kDouble), x1.to(at::kDouble)); }, 500));
    line("  assignment", microseconds_per_call([&] { fm::solve_assignment(cost); }, 500));

    const fm::TrainingBatch b = fm::draw_training_batch(problem, 256, g);
    line("loss + gradients", microseconds_per_call([&] { model->loss_and_gradients(b.x_t, b.t, b.target, b.weight); }, calls));
    {
      at::NoGradGuard no_grad;
      line("  forward alone", microseconds_per_call([&] { model->forward(b.x_t, b.t); }, calls));
    }
    auto parameters = model->parameters();
    torch::optim::Adam adam(parameters, torch::optim::AdamOptions(1e-3));
    line("Adam (LibTorch)", microseconds_per_call([&] { adam.step(); }, calls));
    line("Adam (fused)", microseconds_per_call([&] { fm::fused_adam_step(adam, parameters); }, calls));
    fm::Trainer trainer(model, problem,
                        fm::TrainerOptions().steps(1000000).batch_size(256).lr(1e-3).seed(0).checkpoint_every(0));
    line("Trainer::train_step", microseconds_per_call([&] { trainer.train_step(); }, calls));
  }

  c10::InferenceMode guard;
  const at::Tensor x = problem.source(10000, g);
  auto field = fm::as_velocity_field(model);
  const auto euler = fm::SolverOptions().method(fm::SolverMethod::Euler).steps(100);
  line("Euler step, 10 000", microseconds_per_call([&] { fm::solve_ode(field, x, euler); }, 10) / 100);
  line("  forward, 10 000", microseconds_per_call([&] { model->forward(x, at::scalar_tensor(0.5, at::kFloat)); }, 200));
  return 0;
}
