// One rank of the data-parallel tests (test_distributed.cpp starts it once per rank, with torchrun's
// variables and FLOWMATCH_TEST_WORKER_DIR / FLOWMATCH_TEST_WORKER_MODE set). It trains, writes what
// the test compares into the directory, and exits 0; any failure is printed and exits 1.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>

#include "distributed_setup.h"
#include "flowmatch/distributed.h"
#include "flowmatch/io/pt.h"

namespace fd = flowmatch::distributed;
using namespace distributed_setup;

namespace {

void expect_step(const fm::Trainer& trainer, int64_t expected, const char* what) {
  if (trainer.step() != expected) {
    throw std::runtime_error(std::string(what) + " stopped at step " + std::to_string(trainer.step()) + ", expected " +
                             std::to_string(expected));
  }
}

void run(const std::string& dir, const std::string& mode) {
  at::set_num_threads(1);
  // Small buckets, so that the gradients travel in several all-reduces.
  auto group = std::make_shared<fd::DataParallel>(fd::options_from_environment().timeout_s(60).bucket_bytes(2048));
  const std::string rank = std::to_string(group->rank());
  if (mode == "equivalence") {
    // Each rank starts from different weights: the broadcast must make them rank 0's.
    fm::Trainer trainer(fresh_model(kSeed + static_cast<uint64_t>(group->rank())), problem(), plain_options());
    trainer.distribute(group);
    std::vector<double> losses;
    trainer.train({[&](const fm::TrainProgress& p) { losses.push_back(p.loss); }});
    expect_step(trainer, kSteps, "training");
    fm::io::save_pt(dir + "/params-" + rank + ".pt", flat_parameters(*trainer.model()));
    fm::io::save_pt(dir + "/losses-" + rank + ".pt", at::tensor(losses, at::kDouble));
  } else if (mode == "resume") {
    const std::string ckpt = dir + "/checkpoints";
    fm::Trainer straight(fresh_model(kSeed), problem(), full_options(ckpt));
    straight.distribute(group);
    straight.train();
    expect_step(straight, kSteps, "the uninterrupted run");
    // A new trainer (other initial weights) resumes from the middle checkpoint.
    fm::Trainer resumed(fresh_model(99), problem(), full_options(dir + "/unused"));
    resumed.distribute(group);
    resumed.load_checkpoint(ckpt + "/step-" + std::to_string(kSteps / 2) + ".ckpt");
    expect_step(resumed, kSteps / 2, "the resumed run's checkpoint");
    resumed.train();
    const bool same = at::equal(flat_parameters(*straight.model()), flat_parameters(*resumed.model())) &&
                      at::equal(flat_parameters(*straight.sampling_model()), flat_parameters(*resumed.sampling_model()));
    fm::io::save_pt(dir + "/resume-equal-" + rank + ".pt", at::tensor({same ? 1 : 0}));
  } else {
    throw std::invalid_argument("unknown worker mode '" + mode + "'");
  }
  group->barrier();
}

}  // namespace

int main() {
  const char* dir = std::getenv("FLOWMATCH_TEST_WORKER_DIR");
  const char* mode = std::getenv("FLOWMATCH_TEST_WORKER_MODE");
  if (!dir || !mode) {
    std::fprintf(stderr, "distributed_worker: started by test_distributed.cpp only (FLOWMATCH_TEST_WORKER_DIR and "
                         "FLOWMATCH_TEST_WORKER_MODE unset)\n");
    return 2;
  }
  try {
    run(dir, mode);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "distributed_worker: %s\n", e.what());
    return 1;
  }
  return 0;
}
