// flowmatch launch: start data-parallel training processes (like torchrun --standalone); the
// process management is flowmatch::distributed::launch_processes.

#include <iostream>

#include "common.h"
#include "flowmatch/distributed.h"

namespace fmcli {

Command register_launch(CLI::App& root) {
  auto options = std::make_shared<flowmatch::distributed::LaunchOptions>();
  auto& f = *options;
  CLI::App* app = root.add_subcommand("launch", "Start data-parallel training processes (like torchrun --standalone)");
  app->footer(
      "Example: flowmatch launch --nproc 2 -- train --out runs/ddp --steps 5000\n"
      "Each process gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and\n"
      "OMP_NUM_THREADS (cores / nproc unless set); --distributed is added to the command if missing.\n"
      "Several machines: run the same line on each with --nnodes M --node-rank K --master-addr HOST\n"
      "(HOST: machine 0's address; the same --master-port everywhere).\n"
      "Ctrl-C is forwarded once (checkpoint, exit 130); when a process fails the others are stopped.");
  app->add_option("--nproc", f.nproc, "processes on this machine")->check(positive_number())->capture_default_str();
  app->add_option("--nnodes", f.nnodes, "machines taking part")->check(positive_number())->capture_default_str();
  app->add_option("--node-rank", f.node_rank, "this machine's index in [0, nnodes)")->check(non_negative_number())->capture_default_str();
  app->add_option("--master-addr", f.master_addr, "address of machine 0 (where rank 0 runs the TCPStore)")->capture_default_str();
  app->add_option("--master-port", f.master_port, "its port (0: any free port, single machine only)")->check(CLI::Range(0, 65535))->capture_default_str();
  app->add_option("--grace", f.grace, "seconds the others get to stop after one process fails, before SIGKILL")
      ->check(positive_number())->capture_default_str();
  app->add_option("command", f.command, "the command and its flags, after '--' (train ...)");
  return {app, [options] {
            return flowmatch::distributed::launch_processes(*options, [](const std::string& line) { std::cerr << "flowmatch launch: " << line << "\n"; });
          }};
}

}  // namespace fmcli
