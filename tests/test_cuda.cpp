// The same work on a CUDA device as on the CPU: solvers, guided U-Net sampling, likelihoods (exact,
// by autograd and by the MLP's forward mode), training steps, the latent autoencoder and a whole run
// through the command line. Each test is skipped where this LibTorch sees no CUDA device (a CPU-only
// build, a machine without a GPU); scripts/gpu-check.sh builds against a CUDA LibTorch and runs them.
// Tolerances: float32 on both sides with different kernels (cuBLAS/cuDNN vs OpenBLAS/oneDNN), so
// results agree to a few ulps per operation, amplified by the number of steps.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "flowmatch/autoencoder.h"
#include "flowmatch/cuda_graph.h"
#include "flowmatch/coupling.h"
#include "flowmatch/guidance.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/unet.h"
#include "flowmatch/solvers.h"
#include "flowmatch/train.h"
#include "flowmatch/velocity_field.h"
#include "test_util.h"

namespace fm = flowmatch;

#define REQUIRE_CUDA()                                                              \
  do {                                                                              \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this build"; \
  } while (0)

namespace {

// Two copies of one network: on the CPU and on the GPU.
template <typename Make>
auto twin_networks(Make make) {
  at::manual_seed(7);
  auto cpu = make();
  at::manual_seed(7);
  auto gpu = make();
  gpu->to(at::kCUDA);
  return std::make_pair(cpu, gpu);
}

std::shared_ptr<fm::models::MLPImpl> mlp() { return std::make_shared<fm::models::MLPImpl>(fm::models::MLPOptions(2).width(64).depth(3)); }

}  // namespace

TEST(Cuda, EverySolverGivesTheCpusSamples) {
  REQUIRE_CUDA();
  auto [cpu, gpu] = twin_networks(mlp);
  at::Tensor x0 = at::randn({512, 2}, fmtest::generator(1));
  c10::InferenceMode guard;
  for (auto method : {fm::SolverMethod::Euler, fm::SolverMethod::Midpoint, fm::SolverMethod::Heun, fm::SolverMethod::RK4}) {
    const auto options = fm::SolverOptions().method(method).steps(20);
    at::Tensor a = fm::solve_ode(fm::as_velocity_field(cpu), x0, options).x;
    fm::SolveResult b = fm::solve_ode(fm::as_velocity_field(gpu), x0.to(at::kCUDA), options);
    EXPECT_TRUE(b.x.is_cuda());
    EXPECT_TRUE(fmtest::AllClose(b.x.to(at::kCPU), a, 1e-4, 1e-4)) << static_cast<int>(method);
  }
  // Dopri5 at a tight tolerance: both land within their error control of the true solution.
  const auto adaptive = fm::SolverOptions().method(fm::SolverMethod::Dopri5).atol(1e-6).rtol(1e-6);
  fm::SolveResult a = fm::solve_ode(fm::as_velocity_field(cpu), x0, adaptive);
  fm::SolveResult b = fm::solve_ode(fm::as_velocity_field(gpu), x0.to(at::kCUDA), adaptive);
  EXPECT_TRUE(fmtest::AllClose(b.x.to(at::kCPU), a.x, 1e-4, 1e-4));
  EXPECT_NEAR(static_cast<double>(b.nfe), static_cast<double>(a.nfe), 0.2 * static_cast<double>(a.nfe));
}

TEST(Cuda, ACapturedSolveReplaysTheEagerSolveForEachNewStart) {
  REQUIRE_CUDA();
  ASSERT_TRUE(fm::CapturedSolve::available()) << "a CUDA device, but this build found no CUDA LibTorch at configure time";
  auto [cpu, gpu] = twin_networks(mlp);
  c10::InferenceMode guard;
  auto field = fm::as_velocity_field(gpu);
  for (auto method : {fm::SolverMethod::Euler, fm::SolverMethod::RK4}) {
    const auto options = fm::SolverOptions().method(method).steps(20);
    fm::CapturedSolve solve(field, at::zeros({512, 2}, at::kCUDA), options);
    EXPECT_EQ(solve.nfe(), method == fm::SolverMethod::Euler ? 20 : 80);
    for (uint64_t seed : {11, 12}) {  // a second start: the graph reads the new input, not the captured one
      at::Tensor x0 = at::randn({512, 2}, fmtest::generator(seed)).to(at::kCUDA);
      at::Tensor eager = fm::solve_ode(field, x0, options).x;
      at::Tensor replayed = solve(x0);
      EXPECT_TRUE(replayed.is_cuda());
      // The same kernels in the same order: equal up to cuBLAS's choice of algorithm per stream.
      EXPECT_TRUE(fmtest::AllClose(replayed.to(at::kCPU), eager.to(at::kCPU), 1e-5, 1e-5)) << static_cast<int>(method) << " seed " << seed;
      EXPECT_TRUE(solve.replay(x0).equal(replayed));  // the captured buffer itself, no copy
    }
  }
  at::Tensor wrong = at::zeros({3, 2}, at::kCUDA);
  fm::CapturedSolve solve(field, at::zeros({512, 2}, at::kCUDA), fm::SolverOptions().method(fm::SolverMethod::Euler).steps(2));
  EXPECT_THROW(solve(wrong), c10::Error);
}

TEST(Cuda, Bf16AutocastTrainingFollowsFloat32) {
  REQUIRE_CUDA();
  auto problem = [] {
    return fm::FlowMatchingProblem{fm::data::toy2d_sampler("8gaussians"), fm::data::toy2d_sampler("moons"), std::make_shared<fm::CondOTPath>(),
                                   fm::make_coupling("exact-ot"), {}};
  };
  auto [full, mixed] = twin_networks(mlp);
  full->to(at::kCUDA);
  fm::Trainer a(full, problem(), fm::TrainerOptions().steps(400).batch_size(256).lr(3e-3).seed(9));
  fm::Trainer b(mixed, problem(), fm::TrainerOptions().steps(400).batch_size(256).lr(3e-3).seed(9).autocast_bf16(true));
  double first = 0, last_a = 0, last_b = 0;
  for (int k = 0; k < 400; ++k) {
    const double la = a.train_step(), lb = b.train_step();
    if (k == 0) EXPECT_NEAR(lb, la, 2e-2 * la);  // the same batch and weights: bf16's rounding apart
    if (k < 20) first += lb / 20;
    if (k >= 300) last_a += la / 100, last_b += lb / 100;
  }
  EXPECT_LT(last_b, 0.5 * first);
  EXPECT_NEAR(last_b, last_a, 0.1 * last_a);
  EXPECT_EQ(mixed->parameters().front().scalar_type(), at::kFloat);
}

TEST(Cuda, GuidedUNetSamplingGivesTheCpusImages) {
  REQUIRE_CUDA();
  auto [cpu, gpu] = twin_networks([] {
    auto net = std::make_shared<fm::models::UNetImpl>(fm::models::UNetOptions(1, 28).base_channels(16).num_classes(10).attention_heads(2));
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.normal_(0, 0.05);  // no zero output layer
    return net;
  });
  at::Tensor labels = fm::grid_labels(20, 10);
  at::Tensor x0 = at::randn({20, 784}, fmtest::generator(2));
  c10::InferenceMode guard;
  const auto options = fm::SolverOptions().method(fm::SolverMethod::Midpoint).steps(5);
  at::Tensor a = fm::solve_ode(fm::guided_velocity_field(cpu, labels, 2.0), x0, options).x;
  at::Tensor b = fm::solve_ode(fm::guided_velocity_field(gpu, labels.to(at::kCUDA), 2.0), x0.to(at::kCUDA), options).x;
  EXPECT_TRUE(fmtest::AllClose(b.to(at::kCPU), a, 1e-3, 1e-3));
}

TEST(Cuda, ExactAndForwardModeLikelihoodsGiveTheCpusValues) {
  REQUIRE_CUDA();
  auto [cpu, gpu] = twin_networks(mlp);
  at::Tensor x1 = at::randn({256, 2}, fmtest::generator(3)).to(at::kDouble);
  cpu->to(at::kDouble);
  gpu->to(at::kDouble);
  const auto options = fm::LikelihoodOptions().solver(fm::SolverOptions().method(fm::SolverMethod::RK4).steps(20));
  at::Tensor a = fm::log_likelihood(fm::as_velocity_field(cpu), x1, options).log_prob;
  at::Tensor b = fm::log_likelihood(fm::as_velocity_field(gpu), x1.to(at::kCUDA), options).log_prob;
  EXPECT_TRUE(fmtest::AllClose(b.to(at::kCPU), a, 1e-9, 1e-9));
  // The MLP's own forward-mode divergence on the GPU equals autograd's on the CPU.
  auto forward_mode = fm::LikelihoodOptions(options).field_with_divergence(
      [net = gpu](const at::Tensor& x, const at::Tensor& t) { return net->forward_with_divergence(x, t); });
  at::Tensor c = fm::log_likelihood(fm::as_velocity_field(gpu), x1.to(at::kCUDA), forward_mode).log_prob;
  EXPECT_TRUE(fmtest::AllClose(c.to(at::kCPU), a, 1e-9, 1e-9));
}

TEST(Cuda, TrainingStepsFollowTheCpusLosses) {
  REQUIRE_CUDA();
  // Batches come from the trainer's CPU generator either way, so both see the same data: the losses
  // agree while float32 rounding differences stay small (the first steps).
  auto problem = [] {
    return fm::FlowMatchingProblem{fm::data::toy2d_sampler("8gaussians"), fm::data::toy2d_sampler("moons"), std::make_shared<fm::CondOTPath>(),
                                   fm::make_coupling("exact-ot"), {}};
  };
  const auto options = fm::TrainerOptions().steps(20).batch_size(256).lr(1e-3).ema_decay(0.9).seed(4).log_every(5);
  auto [cpu, gpu] = twin_networks(mlp);
  fm::Trainer a(cpu, problem(), options), b(gpu, problem(), options);
  for (int k = 0; k < 10; ++k) {
    const double la = a.train_step(), lb = b.train_step();
    EXPECT_NEAR(lb, la, 1e-4 * (1 + std::abs(la))) << "step " << k + 1;
  }
  EXPECT_TRUE(b.model()->parameters().front().is_cuda());
  // train() on the GPU reads its losses once per report (defer_loss_readback unset): the same reports.
  std::vector<double> ra, rb;
  a.train({[&](const fm::TrainProgress& p) { ra.push_back(p.loss); }});
  b.train({[&](const fm::TrainProgress& p) { rb.push_back(p.loss); }});
  ASSERT_EQ(ra.size(), 2u);
  ASSERT_EQ(rb.size(), 2u);
  for (size_t k = 0; k < 2; ++k) EXPECT_NEAR(rb[k], ra[k], 1e-3 * (1 + std::abs(ra[k]))) << "report " << k + 1;
}

TEST(Cuda, AutoencoderEncodesAndDecodesAsOnTheCpu) {
  REQUIRE_CUDA();
  auto [cpu, gpu] = twin_networks([] { return std::make_shared<fm::AutoencoderImpl>(fm::AutoencoderOptions(1, 28, 28).channels(16)); });
  at::Tensor x = at::rand({8, 784}, fmtest::generator(5)) * 2 - 1;
  c10::InferenceMode guard;
  at::Tensor a = cpu->decode(cpu->encode(x).mean);
  at::Tensor b = gpu->decode(gpu->encode(x.to(at::kCUDA)).mean);
  EXPECT_TRUE(fmtest::AllClose(b.to(at::kCPU), a, 1e-3, 1e-3));
}

TEST(Cuda, ARunTrainsAndSamplesOnTheDeviceFromTheCommandLine) {
  // The CLI alone decides whether there is a GPU: this process never touches CUDA. On the H200 (PyTorch 2.11,
  // 2026-12-04) this test once crashed (SIGSEGV) after all three commands succeeded: TempDir's
  // std::filesystem calls bound to pip LibTorch's own copy of it (CMakeLists.txt now links libstdc++ first).
  fmtest::TempDir dir;
  const std::string cli = std::string("cd '") + dir.str() + "' && " + FLOWMATCH_CLI;
  const int trained = std::system((cli + " train --device cuda --source gaussian --target moons --steps 200 --out run --quiet > train.log 2>&1").c_str());
  if (trained != 0) {
    std::ifstream log(dir / "train.log");
    const std::string said((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    if (said.find("no CUDA device is available") != std::string::npos) GTEST_SKIP() << "no CUDA device in this build";
    FAIL() << said;
  }
  ASSERT_EQ(std::system((cli + " sample --device cuda --run run --n 1000 --out s.npy").c_str()), 0);
  ASSERT_EQ(std::system((cli + " likelihood --device cuda --run run --n 100").c_str()), 0);
  EXPECT_TRUE(std::filesystem::exists(dir / "s.npy"));
}
