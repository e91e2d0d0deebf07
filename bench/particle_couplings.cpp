// Transport cost of the couplings on particle systems (docs/MOLECULES.md): for DW4 or LJ13, BATCHES
// minibatches of B mean-free Gaussian configurations and B training configurations, paired by the
// independent coupling, exact OT on flattened coordinates and equivariant OT (alignment by permutation
// and rotation, then exact OT); prints one JSON line per coupling: {"system", "coupling", "batch",
// "batches", "cost" (mean squared distance ‖x0 − x1‖² of a pair), "cost_stderr", "ms_per_batch"}.
// usage: bench_particle_couplings DATA_DIR dw4|lj13 [BATCH=64] [BATCHES=1000]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "flowmatch/coupling.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/particles.h"

namespace fm = flowmatch;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_particle_couplings DATA_DIR dw4|lj13 [BATCH] [BATCHES]\n");
    return 2;
  }
  const std::string dir = argv[1], name = argv[2];
  const int64_t batch = argc > 3 ? std::atoll(argv[3]) : 64, batches = argc > 4 ? std::atoll(argv[4]) : 1000;
  const fm::MolecularSystem system = fm::molecular_system(name);
  const int64_t n = system.particles, d = system.particle_dim;
  at::Tensor data = fm::data::load_point_cloud(dir + "/molecules/" + (name == "dw4" ? "dw4_train.npy" : "lj13_val.npy")).to(at::kDouble);
  data = fm::remove_center_of_mass(data, n, d).reshape({data.size(0), n * d});
  const fm::MeanFreeGaussian source(n, d);
  const std::vector<std::pair<std::string, std::shared_ptr<fm::Coupling>>> couplings = {
      {"independent", std::make_shared<fm::IndependentCoupling>()},
      {"exact-ot", std::make_shared<fm::ExactOTCoupling>()},
      {"equivariant-ot", std::make_shared<fm::EquivariantOTCoupling>(n, d)}};
  for (const auto& [label, coupling] : couplings) {
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(0);  // the same minibatches for every coupling
    double seconds = 0, sum = 0, sum_sq = 0;
    for (int64_t k = 0; k < batches; ++k) {
      at::Tensor x0 = source.sample(batch, g, at::TensorOptions().dtype(at::kDouble));
      at::Tensor x1 = data.index_select(0, at::randint(data.size(0), {batch}, g, at::kLong));
      const auto start = std::chrono::steady_clock::now();
      const fm::CoupledBatch pairs = coupling->pair(x0, x1, g);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double cost = (pairs.x0 - pairs.x1).square().sum(1).mean().item<double>();
      sum += cost;
      sum_sq += cost * cost;
    }
    const double mean = sum / batches, var = std::max(0.0, sum_sq / batches - mean * mean);
    std::printf("{\"system\": \"%s\", \"coupling\": \"%s\", \"batch\": %lld, \"batches\": %lld, \"cost\": %.4f, \"cost_stderr\": %.4f, "
                "\"ms_per_batch\": %.2f, \"threads\": %d}\n",
                name.c_str(), label.c_str(), static_cast<long long>(batch), static_cast<long long>(batches), mean,
                std::sqrt(var / batches), 1000 * seconds / batches, at::get_num_threads());
    std::fflush(stdout);
  }
  return 0;
}
