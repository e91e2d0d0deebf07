// flowmatch: the command-line tool. Parses flags (and --config files), runs one subcommand,
// and turns every error into one line on stderr with the exit code of shared/DESIGN.md.

#include <malloc.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <c10/util/Exception.h>

#include "common.h"

namespace {

std::ostream& null_stream() {
  static std::ostream sink(nullptr);  // no buffer: everything written is dropped
  return sink;
}

std::string one_line(const std::string& message) { return message.substr(0, message.find('\n')); }  // npos: all of it

}  // namespace

int main(int argc, char** argv) {
  using namespace fmcli;
  // Tensors of a few MB (a 10 000 x 64 activation is 2.5 MB) are above glibc's mmap threshold, so
  // every such allocation was a fresh mmap whose pages fault in again: half the time of Euler
  // sampling at batch 10 000. Keep freed memory in the heap instead (docs/BENCHMARKS.md).
  mallopt(M_MMAP_THRESHOLD, 512 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // Under `flowmatch launch`, every rank sees the same flags, so a usage error is said once, by rank 0.
  const char* launched = std::getenv("FLOWMATCH_LAUNCHED");
  const char* rank = std::getenv("RANK");
  const bool say_usage_errors = !(launched && rank && std::string(rank) != "0");
  std::ostream& usage_err = say_usage_errors ? std::cerr : null_stream();
  CLI::App app{"flowmatch " FLOWMATCH_VERSION ": flow-matching generative models in C++ (LibTorch)"};
  app.name("flowmatch");
  app.require_subcommand(1, 1);
  app.set_version_flag("--version", FLOWMATCH_VERSION);
  app.footer("Run 'flowmatch COMMAND --help' for a command's flags. Exit codes: 0 ok, 1 runtime error, 2 usage error, 130 interrupted.");
  std::vector<Command> commands = {register_train(app), register_sample(app), register_eval(app),
                                  register_likelihood(app), register_reflow(app), register_distill(app),
                                  register_export(app), register_launch(app), register_bench(app),
                                  register_classifier(app), register_autoencoder(app), register_compare(app)};

  std::vector<std::string> args(argv, argv + argc);
  try {
    args = expand_config_file(args);
    std::vector<const char*> cargs;
    for (const auto& a : args) cargs.push_back(a.c_str());
    app.parse(static_cast<int>(cargs.size()), cargs.data());
  } catch (const CLI::Success& e) {  // --help, --help-all, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11 checks required flags before unknown ones: name an unknown flag first ("--bogus", not "--out is required").
    const auto extras = dynamic_cast<const CLI::RequiredError*>(&e) ? app.remaining(true) : std::vector<std::string>{};
    usage_err << "flowmatch: error: " << one_line(extras.empty() ? e.what() : CLI::ExtrasError(extras).what()) << " (see 'flowmatch "
              << (args.size() > 1 ? args[1] + " " : std::string()) << "--help')\n";
    return kExitUsage;
  } catch (const UsageError& e) {
    usage_err << "flowmatch: error: " << one_line(e.what()) << "\n";
    return kExitUsage;
  }

  for (auto& command : commands) {
    if (!command.app->parsed()) continue;
    try {
      return command.run();
    } catch (const UsageError& e) {
      end_progress_line();  // an error starts on a line of its own
      usage_err << "flowmatch " << command.app->get_name() << ": error: " << one_line(e.what()) << "\n";
      return kExitUsage;
    } catch (const std::invalid_argument& e) {
      end_progress_line();
      usage_err << "flowmatch " << command.app->get_name() << ": error: " << one_line(e.what()) << "\n";
      return kExitUsage;
    } catch (const c10::Error& e) {
      end_progress_line();
      std::cerr << "flowmatch " << command.app->get_name() << ": error: " << one_line(e.what_without_backtrace()) << "\n";
      return kExitRuntime;
    } catch (const std::exception& e) {
      end_progress_line();
      // Under launch, a collective that failed after launch began stopping this process (SIGTERM:
      // another process failed, and launch has named it) is a consequence, not news: one line in all.
      const char* launched = std::getenv("FLOWMATCH_LAUNCHED");
      const bool consequence = launched && *launched && interrupted() && std::string(e.what()).rfind("distributed ", 0) == 0;
      if (!consequence) std::cerr << "flowmatch " << command.app->get_name() << ": error: " << one_line(e.what()) << "\n";
      return kExitRuntime;
    }
  }
  return kExitUsage;
}
