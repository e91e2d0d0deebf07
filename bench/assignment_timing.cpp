// Exact assignment time on 8gaussians -> moons minibatches (the OT-CFM coupling's work).
// Prints JSON lines {"impl", "n", "ms"}; bench/assignment_scipy.py prints the same for scipy.
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "flowmatch/assignment.h"
#include "flowmatch/data/toy2d.h"

int main(int argc, char** argv) {
  at::set_num_threads(1);
  const int max_n = argc > 1 ? std::atoi(argv[1]) : 2000;
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(0);
  for (int n : {256, 1024, 2000}) {
    if (n > max_n) break;
    const int reps = n == 256 ? 200 : 5;
    double total = 0;
    for (int r = 0; r < reps; ++r) {
      at::Tensor a = flowmatch::data::sample_toy2d("8gaussians", n, g).to(at::kDouble);
      at::Tensor b = flowmatch::data::sample_toy2d("moons", n, g).to(at::kDouble);
      at::Tensor cost = flowmatch::squared_distances(a, b).contiguous();
      const auto start = std::chrono::steady_clock::now();
      flowmatch::solve_assignment(cost);
      total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    std::printf("{\"impl\": \"flowmatch\", \"n\": %d, \"ms\": %.3f}\n", n, 1e3 * total / reps);
  }
  return 0;
}
