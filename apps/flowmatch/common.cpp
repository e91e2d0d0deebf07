#include "common.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include <unistd.h>

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include "flowmatch/data/toy2d.h"
#include "flowmatch/distributed.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/solvers.h"

namespace fmcli {

namespace fs = std::filesystem;
namespace fm = flowmatch;

void add_common_flags(CLI::App* app, CommonFlags& flags) {
  app->add_option("--threads", flags.threads, "CPU threads for LibTorch (0: OMP_NUM_THREADS if set, else one per core)")
      ->check(non_negative_number())->capture_default_str();
  app->add_option("--device", flags.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app->add_option("--seed", flags.seed_text, "random seed, an integer in [0, 2^63 - 1]")->capture_default_str();
  // Read before parsing (expand_config_file); declared here so that --help lists it.
  app->add_option("--config", "flags from a TOML/INI file (keys = flag names, top level or under [COMMAND]); the command line wins");
}

namespace {
CLI::Validator number_check(bool allow_zero) {
  return CLI::Validator(
      [allow_zero](std::string& text) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0') return "expected a number, got '" + text + "'";
        if (errno == ERANGE || !std::isfinite(v) || !(allow_zero ? v >= 0 : v > 0)) {
          return std::string("expected a finite number ") + (allow_zero ? ">= 0" : "> 0") + ", got " + text;
        }
        return "";
      },
      allow_zero ? "NUMBER >= 0" : "NUMBER > 0");
}
}  // namespace

CLI::Validator positive_number() { return number_check(false); }
CLI::Validator non_negative_number() { return number_check(true); }

c10::Device apply_common_flags(CommonFlags& flags) {
  {
    errno = 0;
    char* end = nullptr;
    const char* text = flags.seed_text.c_str();
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (flags.seed_text.empty() || !std::isdigit(static_cast<unsigned char>(text[0])) || *end != '\0' || errno == ERANGE ||
        v > static_cast<unsigned long long>(INT64_MAX)) {
      throw UsageError("--seed '" + flags.seed_text + "': expected an integer in [0, 9223372036854775807]");
    }
    flags.seed = v;
  }
  // 0: OMP_NUM_THREADS when set (flowmatch launch and torchrun set it per process), else all cores.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (flags.threads > 4 * cores) {
    throw UsageError("--threads " + std::to_string(flags.threads) + ": this machine has " + std::to_string(cores) +
                     " cores; more than " + std::to_string(4 * cores) + " threads only slow LibTorch down");
  }
  int threads = flags.threads;
  if (threads <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    threads = omp ? std::atoi(omp) : 0;
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  at::set_num_threads(threads);
  if (flags.device == "cuda") {
    if (!torch::cuda::is_available()) throw UsageError("--device cuda: no CUDA device is available to this LibTorch build (use --device cpu)");
    return c10::Device(c10::kCUDA);
  }
  return c10::Device(c10::kCPU);
}

void add_run_flags(CLI::App* app, RunFlags& f, bool with_target) {
  app->add_option("--run", f.run, "run folder written by 'flowmatch train'");
  app->add_option("--model-file", f.model_file, "a TorchScript velocity model (torch.jit.save) with forward(x, t) instead of --run");
  app->add_option("--source", f.source, "with --model-file: the source distribution at t = 0 (default gaussian)")
      ->check(CLI::IsMember(fm::data::toy2d_names()));
  if (with_target) {
    app->add_option("--target", f.target, "with --model-file: the data set to compare with")->check(CLI::IsMember(fm::data::toy2d_names()));
  }
  app->add_option("--checkpoint", f.checkpoint, "checkpoint file, or best (kept by train --validate nll) (default: the run's newest; EMA weights when kept)");
}

fm::Run open_run(const RunFlags& f) {
  if (!f.run.empty() && !f.model_file.empty()) throw UsageError("give --run or --model-file, not both");
  if (f.run.empty() && f.model_file.empty()) throw UsageError("needs --run RUN or --model-file v.pt");
  if (!f.model_file.empty()) return fm::Run::from_model_file(f.model_file, f.source, f.target);
  if (!f.source.empty()) throw UsageError("--source applies to --model-file; a run keeps its own source");
  return fm::Run::open(f.run);
}

fm::TrainRunOptions training_callbacks(const fm::Run& run, bool quiet, const c10::Device& device,
                                       std::shared_ptr<fm::distributed::DataParallel> group) {
  install_interrupt_handlers();
  fm::TrainRunOptions how;
  how.device = device;
  how.group = group;
  how.should_stop = [] { return interrupted(); };
  const json& cfg = run.config();
  const double batch = cfg["training"].value("batch", 0.0);
  const std::string unit = run.domain()->sample_unit();  // "images": images/s beside it/s
  if (!quiet && (!group || group->rank() == 0)) {
    // Said once the trainer is built: the network it trains, the run it trains (a reflow round's own).
    how.started = [group](const fm::Run& trained, const fm::models::VelocityModel& model, int64_t step) {
      const json& c = trained.config();
      std::cerr << (step == 0 ? "training " : "resuming at step " + std::to_string(step) + ": ")
                << (c["data"].contains("pairs") ? std::to_string(c["data"]["pairs"].value("n", int64_t{0})) + " stored pairs of " : std::string())
                << c["data"].value("source", std::string("?")) << " -> " << c["data"].value("target", c["data"].value("name", std::string("?"))) << " ("
                << c["model"].value("type", std::string("?")) << ", " << fm::models::parameter_count(model) << " parameters), "
                << at::get_num_threads() << " thread(s)"
                << (group ? " per rank, " + std::to_string(group->world_size()) + " ranks (" + fm::distributed::to_string(group->backend()) + ")"
                          : std::string())
                << ", " << c["training"].value("steps", int64_t{0}) << " steps of batch " << c["training"].value("batch", int64_t{0})
                << (group ? " per rank" : "") << "\n";
    };
    auto last = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now() - std::chrono::hours(1));
    // On a terminal one line updates in place (4 times a second); elsewhere (CI logs, files) a line
    // every 2 seconds.
    const bool terminal = ::isatty(STDERR_FILENO) == 1;
    how.progress = [last, batch, unit, group, terminal](const fm::TrainProgress& p) {
      const auto now = std::chrono::steady_clock::now();
      if (now - *last < std::chrono::milliseconds(terminal ? 250 : 2000) && p.step != p.total_steps) return;
      if (terminal) std::fprintf(stderr, "\r");
      char rate[64] = "";
      if (!unit.empty()) std::snprintf(rate, sizeof rate, " (%.0f %s/s)", p.it_per_s * batch, unit.c_str());
      std::fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.2e  %.*f it/s%s  elapsed %s  left %s", static_cast<long long>(p.step),
                   static_cast<long long>(p.total_steps), p.loss, p.lr, p.it_per_s < 10 ? 2 : 0, p.it_per_s, rate,
                   format_duration(p.elapsed_s).c_str(), format_duration(p.eta_s).c_str());
      if (group) std::fprintf(stderr, "  all-reduce %.2f ms/step", p.communication_ms);
      if (terminal) {
        std::fprintf(stderr, "\x1b[K");  // clear what a longer line left
        g_progress_open = p.step != p.total_steps;
        if (!g_progress_open) std::fprintf(stderr, "\n");
      } else {
        std::fprintf(stderr, "\n");
      }
      std::fflush(stderr);
      *last = now;
    };
    how.validated = [](int64_t step, const json& v, bool best) {
      end_progress_line();
      std::fprintf(stderr, "validation NLL %.4f ± %.4f at step %lld (NFE %lld, %.1f s)%s\n", v.value("validation_nll", 0.0), v.value("validation_nll_stderr", 0.0),
                   static_cast<long long>(step), v.value("validation_nfe", 0LL), v.value("validation_seconds", 0.0), best ? ": the best so far, kept as checkpoints/best.ckpt" : "");
    };
  }
  return how;
}

int report_training(const fm::Run& run, const fm::TrainOutcome& o, const std::string& resume_hint) {
  end_progress_line();
  if (o.step == o.first_step && !o.interrupted()) {
    std::cout << "run '" << run.dir() << "' is already at step " << o.step << " of " << o.total_steps << "; raise --steps to train further\n";
    return kExitOk;
  }
  if (o.interrupted()) {
    std::cerr << "interrupted at step " << o.step << "; checkpoint " << o.last_checkpoint << "; continue with: " << resume_hint << "\n";
    return kExitInterrupted;
  }
  const double rate = o.seconds > 0 ? static_cast<double>(o.step - o.first_step) / o.seconds : 0;
  std::cout << "trained " << (o.step - o.first_step) << " steps in " << format_duration(o.seconds) << " (" << static_cast<long>(rate)
            << " it/s); checkpoint " << o.last_checkpoint << "; loss curve " << run.dir() << "/loss.png";
  if (o.best.is_object()) std::cout << "; best validation NLL " << std::to_string(o.best["validation_nll"].get<double>()) << " at step " << o.best["step"] << ": " << run.checkpoint_dir() << "/best.ckpt";
  if (std::filesystem::exists(run.dir() + "/index.html")) std::cout << "; page " << run.dir() << "/index.html";
  std::cout << "\n";
  return kExitOk;
}

void add_pair_flags(CLI::App* app, fm::PairGenerationOptions& g) {
  app->add_option("--pairs", g.pairs, "noise-sample pairs generated from the parent model")->check(positive_number())->capture_default_str();
  app->add_option("--solver", g.solver, "ODE solver that generates the pairs")->check(CLI::IsMember(fm::solver_names(false)))->capture_default_str();
  app->add_option("--steps", g.steps, "fixed-step solvers: steps from t=0 to t=1")->check(positive_number())->capture_default_str();
  app->add_option("--atol", g.atol, "dopri5 absolute tolerance")->check(positive_number())->capture_default_str();
  app->add_option("--rtol", g.rtol, "dopri5 relative tolerance")->check(non_negative_number())->capture_default_str();
  app->add_option("--train-steps", g.train_steps, "training steps (default: the parent's)")->check(positive_number());
  app->add_flag("--from-scratch", g.from_scratch, "train from fresh weights instead of the parent's");
}

void check_solver_flags(const std::string& solver, CLI::App* app, bool steps_are_fixed_step_only) {
  const bool adaptive = fm::solver_info(solver).adaptive;
  const bool norm = app->get_option_no_throw("--error-norm") && app->count("--error-norm");
  if (!adaptive && (app->count("--atol") || app->count("--rtol") || norm)) throw UsageError((norm ? "--error-norm applies" : "--atol/--rtol apply") + std::string(" to --solver dopri5, not ") + solver);
  if (steps_are_fixed_step_only && adaptive && app->count("--steps")) {
    throw UsageError("--steps applies to fixed-step solvers, not " + solver);
  }
}

void ensure_new_output_folder(const std::string& out, const std::string& hint) {
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec)) throw UsageError("--out '" + out + "' already exists; choose another" + hint);
  const fs::path parent = fs::path(out).parent_path();
  try {
    fm::io::ensure_writable_directory(parent.empty() ? "." : parent.string());
  } catch (const std::runtime_error& e) {
    throw UsageError(std::string("--out: ") + e.what());
  }
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];  // h:mm:ss from an hour on, else m:ss
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

namespace {
std::atomic<bool> g_interrupted{false};
}  // namespace

bool g_progress_open = false;

void end_progress_line() {
  if (g_progress_open) std::fprintf(stderr, "\n");
  g_progress_open = false;
}

namespace {
extern "C" void on_signal(int signal) {
  g_interrupted.store(true);
  std::signal(signal, SIG_DFL);  // a second Ctrl-C ends the process at once
}
}  // namespace

void install_interrupt_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

bool interrupted() { return g_interrupted.load(); }

void add_run_setting_flags(CLI::App* app, SettingValues& values, const std::vector<std::string>& skip) {
  for (const auto& s : fm::run_settings()) {
    if (s.name == "seed") continue;  // a common flag
    if (std::find(skip.begin(), skip.end(), s.name) != skip.end()) continue;
    std::string help = s.help;
    if (!s.default_value.is_null() && !(s.default_value.is_string() && s.default_value.get<std::string>().empty()) &&
        !(s.default_value.is_array() && s.default_value.empty())) {
      help += " [default: " + (s.default_value.is_string() ? s.default_value.get<std::string>() : s.default_value.dump()) + "]";
    }
    if (s.kind == "bool") {
      app->add_flag("--" + s.name)->description(help);
    } else {
      auto* option = app->add_option("--" + s.name, values[s.name], help);
      option->type_name(s.kind == "int" ? "INT" : s.kind == "float" ? "FLOAT" : s.kind == "ints" ? "INT,..." : "TEXT");
      if (s.kind == "ints") option->delimiter(',');
      if (s.kind != "ints" && s.kind != "strings") option->expected(1);
    }
  }
}

json run_settings_from_flags(CLI::App* app, SettingValues& values, const CommonFlags& common) {
  json settings = json::object();
  for (const auto& s : fm::run_settings()) {
    if (s.name != "seed" && app->get_option_no_throw("--" + s.name) && app->count("--" + s.name) > 0) {
      settings[s.name] = fm::setting_value_from_text(s, values[s.name]);
    }
  }
  if (app->count("--seed") > 0) settings["seed"] = common.seed;
  return settings;
}

}  // namespace fmcli
