// Data-parallel training on c10d Gloo over loopback: the environment is read and checked, two
// ranks stay identical and equal one process trained on the same global batches, a resumed
// data-parallel run continues bit-identically, and checkpoints refuse another number of ranks.
//
// Two-rank cases start the worker program (distributed_worker.cpp) once per rank, because c10d
// ranks are processes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <thread>


#include <torch/optim/adam.h>

#include "flowmatch/coupling.h"
#include "flowmatch/distributed.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/loss.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/train.h"
#include "distributed_setup.h"
#include "test_util.h"

namespace fm = flowmatch;
namespace fd = flowmatch::distributed;
using namespace distributed_setup;

namespace {

// Runs the worker program (tests/distributed_worker.cpp) as `world` ranks; returns their exit codes
// (-1: still running after the deadline, then killed).
std::vector<int> run_workers(const fmtest::TempDir& dir, int world, const std::string& mode) {
  const int port = fmtest::free_tcp_port();
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("FLOWMATCH_TEST_WORKER_DIR", dir.str().c_str(), 1);
      ::setenv("FLOWMATCH_TEST_WORKER_MODE", mode.c_str(), 1);
      const std::string log = dir / ("rank-" + std::to_string(rank) + ".log");
      if (!std::freopen(log.c_str(), "w", stdout) || !std::freopen(log.c_str(), "a", stderr)) ::_exit(126);
      ::execl(FLOWMATCH_TEST_WORKER, FLOWMATCH_TEST_WORKER, static_cast<char*>(nullptr));
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes(pids.size(), -1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  size_t left = pids.size();
  while (left > 0 && std::chrono::steady_clock::now() < deadline) {
    for (size_t k = 0; k < pids.size(); ++k) {
      int status = 0;
      if (codes[k] == -1 && ::waitpid(pids[k], &status, WNOHANG) == pids[k]) {
        codes[k] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        --left;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t k = 0; k < pids.size(); ++k) {
    if (codes[k] == -1) {
      ::kill(pids[k], SIGKILL);
      ::waitpid(pids[k], nullptr, 0);
    }
  }
  return codes;
}

std::string logs(const fmtest::TempDir& dir, int world) {
  std::string all;
  for (int r = 0; r < world; ++r) {
    std::error_code ec;
    const std::string path = dir / ("rank-" + std::to_string(r) + ".log");
    if (std::filesystem::exists(path, ec)) all += "--- rank " + std::to_string(r) + "\n" + fm::io::read_file(path);
  }
  return all;
}

struct EnvironmentGuard {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  explicit EnvironmentGuard(std::vector<std::string> names) {
    for (auto& n : names) {
      const char* v = std::getenv(n.c_str());
      saved.emplace_back(n, v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(n.c_str());
    }
  }
  ~EnvironmentGuard() {
    for (auto& [n, v] : saved) v ? (void)::setenv(n.c_str(), v->c_str(), 1) : (void)::unsetenv(n.c_str());
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// ---------------------------------------------------------------- tests

TEST(DataParallel, ReadsTorchrunEnvironmentAndNamesWhatIsWrong) {
  EnvironmentGuard guard({"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"});
  EXPECT_NE(error_of([] { fd::options_from_environment(); }).find("RANK is not set"), std::string::npos);
  ::setenv("RANK", "1", 1);
  EXPECT_NE(error_of([] { fd::options_from_environment(); }).find("WORLD_SIZE is not set"), std::string::npos);
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_ADDR", "node0", 1);
  ::setenv("MASTER_PORT", "1234", 1);
  const auto o = fd::options_from_environment();
  EXPECT_EQ(o.rank(), 1);
  EXPECT_EQ(o.world_size(), 2);
  EXPECT_EQ(o.local_rank(), 1);
  EXPECT_EQ(o.master_addr(), "node0");
  EXPECT_EQ(o.master_port(), 1234);
  ::setenv("RANK", "2", 1);
  EXPECT_NE(error_of([] { fd::options_from_environment(); }).find("rank must be in [0, 2), got 2"), std::string::npos);
  ::setenv("RANK", "0", 1);
  ::setenv("MASTER_PORT", "29x", 1);
  EXPECT_NE(error_of([] { fd::options_from_environment(); }).find("MASTER_PORT='29x' is not an integer"), std::string::npos);
  ::setenv("MASTER_PORT", "70000", 1);
  EXPECT_NE(error_of([] { fd::options_from_environment(); }).find("master port must be in [1, 65535], got 70000"),
            std::string::npos);
}

TEST(DataParallel, RankSeedsKeepRankZeroAndDifferAcrossRanks) {
  EXPECT_EQ(fd::rank_seed(42, 0), 42u);
  std::set<uint64_t> seen;
  for (int64_t r = 0; r < 64; ++r) seen.insert(fd::rank_seed(42, r));
  EXPECT_EQ(seen.size(), 64u);
  EXPECT_NE(fd::rank_seed(42, 1), fd::rank_seed(43, 1));
}

TEST(DataParallel, OneRankGroupAveragesToTheSameGradientsAndCarriesExtras) {
  ASSERT_TRUE(fd::gloo_available()) << "this build has no c10d Gloo (libgloo-dev and LibTorch's c10d headers at configure time)";
  fd::DataParallel group(fd::DistributedOptions().master_port(fmtest::free_tcp_port()).timeout_s(30).bucket_bytes(1024));
  auto model = fresh_model(1);
  model->forward(at::randn({8, 2}), at::rand({8})).pow(2).sum().backward();
  std::vector<at::Tensor> before;
  for (auto& p : model->parameters()) before.push_back(p.grad().clone());
  const auto extras = group.average_gradients(model->parameters(), {1.5, 1.0});
  ASSERT_EQ(extras.size(), 2u);
  EXPECT_DOUBLE_EQ(extras[0], 1.5);
  EXPECT_DOUBLE_EQ(extras[1], 1.0);
  auto params = model->parameters();
  for (size_t k = 0; k < params.size(); ++k) EXPECT_TRUE(at::equal(params[k].grad(), before[k])) << k;
  EXPECT_EQ(group.broadcast_string("hello"), "hello");
  EXPECT_EQ(group.all_gather(at::arange(3)).size(), 1u);
  EXPECT_EQ(group.communication_calls(), 1);
}

TEST(DataParallel, TwoRanksStayIdenticalAndEqualOneProcessOnTheSameGlobalBatches) {
  ASSERT_TRUE(fd::gloo_available()) << "this build has no c10d Gloo (libgloo-dev and LibTorch's c10d headers at configure time)";
  fmtest::TempDir dir;
  const auto codes = run_workers(dir, 2, "equivalence");
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << logs(dir, 2);
  const at::Tensor p0 = fm::io::load_pt(dir / "params-0.pt"), p1 = fm::io::load_pt(dir / "params-1.pt");
  EXPECT_TRUE(at::equal(p0, p1)) << "ranks diverged: max |diff| " << (p0 - p1).abs().max().item<double>();

  // One process, the same global batch of 2 × 64: rank r's half drawn from rank r's generator,
  // the loss the mean of the two halves' (equal sizes), plain Adam.
  auto model = fresh_model(kSeed);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(2e-3));
  auto problem_ = problem();
  std::vector<at::Generator> generators = {fmtest::generator(fd::rank_seed(kSeed, 0)), fmtest::generator(fd::rank_seed(kSeed, 1))};
  std::vector<double> losses;
  for (int64_t step = 0; step < kSteps; ++step) {
    adam.zero_grad();
    at::Tensor loss = at::zeros({});
    for (auto& g : generators) {
      fm::TrainingBatch b = fm::draw_training_batch(problem_, kBatch, g);
      loss = loss + 0.5 * fm::flow_matching_loss(model->forward(b.x_t, b.t), b.target, b.weight);
    }
    losses.push_back(loss.item<double>());
    loss.backward();
    adam.step();
  }
  const at::Tensor reference = flat_parameters(*model);
  EXPECT_TRUE(fmtest::AllClose(p0, reference, 0, 1e-5));
  // Every step's reported loss is the mean over the ranks, i.e. the global batch's.
  const at::Tensor reported = fm::io::load_pt(dir / "losses-0.pt");
  ASSERT_EQ(reported.numel(), kSteps);
  EXPECT_TRUE(fmtest::AllClose(reported, at::tensor(losses, at::kDouble), 1e-5, 1e-6));
}

TEST(DataParallel, ResumedTwoRankRunContinuesBitIdentically) {
  ASSERT_TRUE(fd::gloo_available()) << "this build has no c10d Gloo (libgloo-dev and LibTorch's c10d headers at configure time)";
  fmtest::TempDir dir;
  const auto codes = run_workers(dir, 2, "resume");
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << logs(dir, 2);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(fm::io::load_pt(dir / ("resume-equal-" + std::to_string(r) + ".pt")).item<int64_t>(), 1) << "rank " << r;
  }
  // Rank 0 alone wrote; the checkpoint refuses a run with another number of processes.
  fm::Trainer single(fresh_model(kSeed), problem(), full_options(dir / "single"));
  const std::string message = error_of([&] { single.load_checkpoint(dir / "checkpoints/step-15.ckpt"); });
  EXPECT_NE(message.find("written by 2 process(es), this run has 1"), std::string::npos) << message;
}
