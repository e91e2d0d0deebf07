#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/optim/adam.h>
#include "flowmatch/flowmatch.h"
#include "flowmatch/assignment.h"
#include "flowmatch/optimizer.h"
namespace fm = flowmatch;
using Clock = std::chrono::steady_clock;
template <class F> double time_us(F f, int n) { for (int i=0;i<n/10;++i) f(); auto s=Clock::now(); for(int i=0;i<n;++i) f(); return std::chrono::duration<double,std::micro>(Clock::now()-s).count()/n; }
// Component timings (µs) of one 2-D training step and of Euler sampling, 1 thread: where the time goes.
// Built with -DFLOWMATCH_BUILD_BENCH=ON (make bench-profile).
int main(int argc, char** argv) {
  const bool only_sampling = argc > 1 && std::string(argv[1]) == "sampling";
  mallopt(M_MMAP_THRESHOLD, 512 << 20);  // as the CLI (apps/flowmatch/main.cpp)
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  at::set_num_threads(1);
  at::manual_seed(0);
  auto model = std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(64).depth(3));
  fm::FlowMatchingProblem problem{fm::data::toy2d_sampler("8gaussians"), fm::data::toy2d_sampler("moons"),
          std::make_shared<fm::CondOTPath>(fm::CondOTPathOptions().sigma(0.1)), fm::make_coupling("independent"), {}};
  auto g = at::make_generator<at::CPUGeneratorImpl>(0);
  fm::TrainingBatch b = fm::draw_training_batch(problem, 256, g);
  const int N = 3000;
  if (!only_sampling) {
  printf("draw batch      %8.1f us\n", time_us([&]{ fm::draw_training_batch(problem, 256, g); }, N));
  printf("  source        %8.1f us\n", time_us([&]{ problem.source(256, g); }, N));
  printf("  target        %8.1f us\n", time_us([&]{ problem.target(256, g); }, N));
  at::Tensor x0 = problem.source(256,g), x1 = problem.target(256,g);
  printf("  coupling      %8.1f us\n", time_us([&]{ problem.coupling->pair(x0,x1,g); }, N));
  {
    auto exact = fm::make_coupling("exact-ot");
    printf("  exact-ot pair %8.1f us\n", time_us([&]{ exact->pair(x0, x1, g); }, 500));
    at::Tensor cost = fm::squared_distances(x0.to(at::kDouble), x1.to(at::kDouble));
    printf("    cost matrix %8.1f us\n", time_us([&]{ fm::squared_distances(x0.to(at::kDouble), x1.to(at::kDouble)); }, 500));
    printf("    assignment  %8.1f us\n", time_us([&]{ fm::solve_assignment(cost); }, 500));
  }
  printf("  times         %8.1f us\n", time_us([&]{ fm::sample_times(256, problem.time_sampling, g); }, N));
  at::Tensor t = fm::sample_times(256, problem.time_sampling, g);
  printf("  path sample   %8.1f us\n", time_us([&]{ problem.path->sample(x0,x1,t,g); }, N));
  auto s = problem.path->sample(x0,x1,t,g);
  printf("  target        %8.1f us\n", time_us([&]{ fm::regression_target(*problem.path, s, problem.prediction); }, N));
  printf("  weights       %8.1f us\n", time_us([&]{ fm::loss_weights(t, problem.time_sampling, problem.path->scheduler().get()); }, N));
  printf("loss+grads      %8.1f us\n", time_us([&]{ model->loss_and_gradients(b.x_t, b.t, b.target, b.weight); }, N));
  { at::NoGradGuard ng; printf("forward         %8.1f us\n", time_us([&]{ model->forward(b.x_t, b.t); }, N)); }
  auto params = model->parameters();
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
  printf("adam (libtorch) %8.1f us\n", time_us([&]{ opt.step(); }, N));
  printf("adam (fused)    %8.1f us\n", time_us([&]{ fm::fused_adam_step(opt, params); }, N));
  fm::Trainer trainer(model, problem, fm::TrainerOptions().steps(100000).batch_size(256).lr(1e-3).seed(0).checkpoint_every(0));
  printf("train_step      %8.1f us\n", time_us([&]{ trainer.train_step(); }, N));
  }
  // sampling
  {
    c10::InferenceMode guard;
    at::Tensor x = problem.source(10000, g);
    auto field = fm::as_velocity_field(model);
    printf("euler100 10k    %8.1f us/step\n", time_us([&]{ fm::solve_ode(field, x, fm::SolverOptions().method(fm::SolverMethod::Euler).steps(100)); }, 10)/100);
    printf("forward 10k     %8.1f us\n", time_us([&]{ model->forward(x, at::scalar_tensor(0.5, at::kFloat)); }, 200));
  }
}
