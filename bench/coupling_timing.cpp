// Coupling time per minibatch, 8gaussians -> moons (float32 points, float64 cost, 1 thread):
// exact OT (assignment) and Sinkhorn. Writes each minibatch to DIR as .npy so that
// bench/coupling_scipy.py times scipy on exactly the same matrices, and prints JSON lines
// {"impl", "coupling", "n", "reps", "ms", "cost"} (cost: mean squared distance of the pairs).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "flowmatch/coupling.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/io/npy.h"

namespace fm = flowmatch;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_coupling DIR [MAX_N]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int max_n = argc > 2 ? std::atoi(argv[2]) : 4096;
  std::filesystem::create_directories(dir);
  at::set_num_threads(1);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(0);
  const fm::ExactOTCoupling exact;
  const fm::SinkhornCoupling sinkhorn(fm::SinkhornOptions().reg(0.5));
  for (int n : {256, 1024, 4096}) {
    if (n > max_n) break;
    const int reps = n == 256 ? 50 : n == 1024 ? 5 : 1;
    double exact_s = 0, sinkhorn_s = 0, exact_cost = 0, sinkhorn_cost = 0;
    for (int r = 0; r < reps; ++r) {
      at::Tensor x0 = fm::data::sample_toy2d("8gaussians", n, g);
      at::Tensor x1 = fm::data::sample_toy2d("moons", n, g);
      const std::string stem = dir + "/" + std::to_string(n) + "-" + std::to_string(r);
      fm::io::save_npy(stem + "-x0.npy", x0);
      fm::io::save_npy(stem + "-x1.npy", x1);
      auto start = std::chrono::steady_clock::now();
      auto paired = exact.pair(x0, x1, g);
      exact_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      exact_cost += (paired.x0 - paired.x1).to(at::kDouble).square().sum(1).mean().item<double>() / reps;
      if (n <= 1024) {
        start = std::chrono::steady_clock::now();
        auto soft = sinkhorn.pair(x0, x1, g);
        sinkhorn_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        sinkhorn_cost += (soft.x0 - soft.x1).to(at::kDouble).square().sum(1).mean().item<double>() / reps;
      }
    }
    std::printf("{\"impl\": \"flowmatch\", \"coupling\": \"exact-ot\", \"n\": %d, \"reps\": %d, \"ms\": %.3f, \"cost\": %.9f}\n",
                n, reps, 1e3 * exact_s / reps, exact_cost);
    if (n <= 1024) {
      std::printf("{\"impl\": \"flowmatch\", \"coupling\": \"sinkhorn-0.5\", \"n\": %d, \"reps\": %d, \"ms\": %.3f, \"cost\": %.9f}\n",
                  n, reps, 1e3 * sinkhorn_s / reps, sinkhorn_cost);
    }
    std::fflush(stdout);
  }
  return 0;
}
