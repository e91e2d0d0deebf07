// Starting data-parallel processes (flowmatch launch): fork/exec this program once per local rank with
// torchrun's environment, forward signals, stop the others when one fails.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "flowmatch/distributed.h"

namespace flowmatch::distributed {

namespace {

constexpr int kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitInterrupted = 130;


std::atomic<int> g_signal{0};
extern "C" void on_launch_signal(int signal) { g_signal.store(signal); }

// A port the kernel says is free now (a small race with other programs remains, as with torchrun).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("cannot open a socket to find a free port");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot find a free port on 127.0.0.1");
  return ntohs(address.sin_port);
}

std::string self_executable() {
  std::error_code ec;
  auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find this program's path (/proc/self/exe): " + ec.message());
  return path.string();
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitRuntime;
}

}  // namespace

int launch_processes(const LaunchOptions& f, const std::function<void(const std::string&)>& report) {
  if (f.command.empty()) {
    throw std::invalid_argument("launch needs a command after '--', e.g. flowmatch launch --nproc 2 -- train --out runs/ddp");
  }
  if (f.command[0] != "train") {
    throw std::invalid_argument("launch runs 'train' (the data-parallel command), got '" + f.command[0] + "'");
  }
  if (f.node_rank >= f.nnodes) {
    throw std::invalid_argument("--node-rank " + std::to_string(f.node_rank) + " must be below --nnodes " + std::to_string(f.nnodes));
  }
  if (f.master_port == 0 && f.nnodes > 1) throw std::invalid_argument("--master-port 0 (any free port) needs --nnodes 1");
  std::vector<std::string> command = f.command;
  if (std::find(command.begin(), command.end(), "--distributed") == command.end()) {
    command.insert(command.begin() + 1, "--distributed");
  }
  const int port = f.master_port == 0 ? free_port() : static_cast<int>(f.master_port);
  const int64_t world = f.nproc * f.nnodes;
  // One thread per process unless told otherwise: N processes with all cores each oversubscribe.
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const std::string threads =
      omp && *omp ? std::string(omp)
                  : std::to_string(std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / f.nproc));
  const std::string exe = self_executable();

  struct sigaction action {};
  action.sa_handler = on_launch_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::vector<pid_t> children;
  for (int64_t local = 0; local < f.nproc; ++local) {
    const int64_t rank = f.node_rank * f.nproc + local;
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("cannot start process " + std::to_string(local) + ": fork failed");
    if (pid == 0) {
      // Own process group: a Ctrl-C reaches the processes once, forwarded by the launcher (a
      // second signal would end them without a checkpoint). They stop if the launcher dies.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(f.nproc).c_str(), 1);
      ::setenv("GROUP_RANK", std::to_string(f.node_rank).c_str(), 1);
      ::setenv("MASTER_ADDR", f.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("OMP_NUM_THREADS", threads.c_str(), 1);
      ::setenv("FLOWMATCH_LAUNCHED", "1", 1);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(exe.c_str()));
      for (auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(exe.c_str(), argv.data());
      ::_exit(127);
    }
    children.push_back(pid);
  }

  // Supervise: forward signals; when one process fails, stop the others (SIGTERM, then SIGKILL
  // after the grace period).
  std::vector<int> codes(children.size(), -1);
  size_t running = children.size();
  int first_failure = 0;
  bool kill_pending = false;
  auto kill_at = std::chrono::steady_clock::now();
  auto signal_all = [&](int sig) {
    for (size_t k = 0; k < children.size(); ++k)
      if (codes[k] < 0) ::kill(children[k], sig);
  };
  while (running > 0) {
    if (const int sig = g_signal.exchange(0); sig != 0) signal_all(sig);
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      const auto it = std::find(children.begin(), children.end(), pid);
      if (it == children.end()) continue;
      const size_t k = static_cast<size_t>(it - children.begin());
      codes[k] = exit_code(status);
      std::string how = "exited with code " + std::to_string(codes[k]);
      // Exit 1 and 2 are our own errors, which the process has said in its line; the rest is news.
      bool said = codes[k] == kExitRuntime || codes[k] == kExitUsage;
      if (codes[k] > 128 && codes[k] != kExitInterrupted) {
        said = false;
        // Killed by a signal: said by name, and reported as the runtime error it is (exit 1).
        how = "was killed by signal " + std::to_string(codes[k] - 128) + " (" + strsignal(codes[k] - 128) + ")";
        codes[k] = kExitRuntime;
      }
      --running;
      if (codes[k] != kExitOk && codes[k] != kExitInterrupted && first_failure == 0) {
        first_failure = codes[k];
        if (running > 0) {
          if (!said) {
            if (report) {
              report("process " + std::to_string(k) + " (rank " + std::to_string(f.node_rank * f.nproc + static_cast<int64_t>(k)) + ") " +
                     how + "; stopping the others");
            }
          }
          signal_all(SIGTERM);
          signal_all(SIGCONT);  // a stopped (hung) process acts on SIGTERM only once continued
          kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(f.grace * 1000));
          kill_pending = true;
        }
      }
      continue;
    }
    if (kill_pending && std::chrono::steady_clock::now() > kill_at) {
      signal_all(SIGKILL);
      kill_pending = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (first_failure != 0) return first_failure;
  for (int c : codes)
    if (c != kExitOk) return c;  // interrupted (130)
  return kExitOk;
}

}  // namespace flowmatch::distributed
