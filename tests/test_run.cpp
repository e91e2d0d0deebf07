// Run: a new model, a new data domain and a new objective registered from this file alone are
// trained, sampled and evaluated through Run (the proof that adding one is a one-file change); the
// settings are resolved and checked; runs resume with their settings frozen.

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include "flowmatch/checkpoint.h"
#include "flowmatch/domain.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/metrics.h"
#include "flowmatch/objective.h"
#include "flowmatch/run.h"
#include "flowmatch/run_index.h"
#include "flowmatch/train.h"
#include "test_util.h"

namespace fm = flowmatch;
using json = nlohmann::json;

namespace {

// v(x, t) = A x + b t + c: an affine field (a model type the library does not know).
class AffineVelocity : public fm::models::VelocityModel {
 public:
  explicit AffineVelocity(int64_t dim) : dim_(dim) { linear_ = register_module("linear", torch::nn::Linear(dim + 1, dim)); }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override {
    return linear_->forward(at::cat({x, fm::models::time_column(t, x.size(0), x.options())}, 1));
  }
  json spec() const override { return {{"type", "test-affine"}, {"options", {{"dim", dim_}}}}; }
  std::vector<int64_t> sample_shape() const override { return {dim_}; }

 private:
  int64_t dim_;
  torch::nn::Linear linear_{nullptr};
};

// Points on a circle of radius 2 (a data domain the library does not know); its evaluation is the
// mean radius of Euler samples.
class RingDomain : public fm::Domain {
 public:
  std::string name() const override { return "test-ring"; }
  json describe_data(const json& settings, const std::vector<std::string>&) const override {
    return {{"source", "gaussian"}, {"target", "ring"}, {"radius", 2.0}, {"seed_setting", settings["seed"]}};
  }
  std::vector<int64_t> sample_shape(const json&) const override { return {2}; }
  fm::data::PointSampler source(const json&) const override {
    return [](int64_t n, at::Generator& g) { return at::randn({n, 2}, g); };
  }
  static at::Tensor ring(int64_t n, at::Generator& g) {
    at::Tensor angle = at::rand({n}, g) * (2 * M_PI);
    return at::stack({2 * at::cos(angle), 2 * at::sin(angle)}, 1);
  }
  void add_training_data(const json&, const std::string&, fm::FlowMatchingProblem& problem) const override { problem.target = ring; }
  at::Tensor held_out(const json&, int64_t n, at::Generator& g) const override { return ring(n, g); }
  std::vector<std::string> picture_samples(const fm::Run&, const fm::SampleResult&, const fm::SampleOptions&,
                                           const std::string&) const override {
    return {};
  }
  json evaluate(const fm::Run& run, const fm::EvaluationOptions& o, const fm::ReportFunction& report) const override {
    fm::SampleOptions s;
    s.n = o.n;
    s.seed = o.seed;
    const at::Tensor x = run.sample(s).x;
    if (report) report("ring evaluated");
    return {{"mean_radius", x.norm(2, 1).mean().item<double>()}, {"n", o.n}};
  }
};

// Mean absolute error (an objective the library does not know); counts its calls.
std::atomic<int> g_l1_calls{0};
class L1Objective : public fm::Objective {
 public:
  std::string name() const override { return "test-l1"; }
  json spec() const override { return {{"type", "test-l1"}}; }
  at::Tensor loss(fm::models::VelocityModel& model, const fm::TrainingBatch& batch) const override {
    ++g_l1_calls;
    return (model.forward_with(batch.x_t, batch.t, batch.condition) - batch.target).abs().mean();
  }
};

void register_test_plugins() {
  static const bool done = [] {
    fm::models::register_model(
        "test-affine",
        {[](const std::vector<int64_t>& shape, int64_t, const json& options) {
           if (!options.empty()) throw std::invalid_argument("model option '" + options.begin().key() + "' does not apply to test-affine");
           return json{{"type", "test-affine"}, {"options", {{"dim", shape.at(0)}}}};
         },
         [](const json& spec) -> std::shared_ptr<fm::models::VelocityModel> {
           return std::make_shared<AffineVelocity>(spec.at("options").at("dim").get<int64_t>());
         },
         "an affine field (tests)", {}});
    fm::register_domain("test-ring", [](const std::string& data) { return data == "test-ring"; },
                        [] { return std::make_shared<RingDomain>(); });
    fm::register_objective("test-l1", [](const json&) { return std::make_shared<L1Objective>(); });
    return true;
  }();
  (void)done;
}

std::vector<json> metrics_lines(const std::string& path) {
  std::vector<json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

}  // namespace

TEST(Run, RegisteredModelDomainAndObjectiveTrainSampleAndEvaluate) {
  register_test_plugins();
  EXPECT_NE(std::find(fm::domain_names().begin(), fm::domain_names().end(), "test-ring"), fm::domain_names().end());
  fmtest::TempDir dir;
  const std::string out = dir / "ring";
  const json settings = {{"data", "test-ring"}, {"model", "test-affine"}, {"objective", "test-l1"}, {"steps", 600},
                         {"batch", 256}, {"lr", 0.005}, {"coupling", "independent"}, {"log-every", 100}, {"checkpoint-every", 300}};
  fm::Run run = fm::Run::prepare(out, settings);
  EXPECT_EQ(run.domain()->name(), "test-ring");
  EXPECT_EQ(run.config()["model"], (json{{"type", "test-affine"}, {"options", {{"dim", 2}}}}));
  EXPECT_EQ(run.config()["objective"]["type"], "test-l1");
  EXPECT_FALSE(std::filesystem::exists(out + "/config.json"));  // nothing written before training
  g_l1_calls = 0;
  const fm::TrainOutcome outcome = run.train();
  EXPECT_EQ(outcome.step, 600);
  EXPECT_FALSE(outcome.interrupted());
  EXPECT_EQ(g_l1_calls.load(), 600);  // the registered objective computed every step's loss
  EXPECT_EQ(outcome.last_checkpoint, out + "/checkpoints/step-600.ckpt");
  // The L1 loss of the affine flow falls from the untrained field's.
  const auto lines = metrics_lines(run.metrics_jsonl());
  ASSERT_EQ(lines.size(), 6u);
  for (size_t k = 1; k < lines.size(); ++k) EXPECT_LT(lines[k]["loss"].get<double>(), lines[k - 1]["loss"].get<double>()) << k;
  EXPECT_LT(lines.back()["loss"].get<double>(), 0.95 * lines.front()["loss"].get<double>());

  // Reopened from the folder: the same domain, model type and samples.
  fm::Run opened = fm::Run::open(out);
  EXPECT_EQ(opened.domain()->name(), "test-ring");
  fm::SampleOptions s;
  s.n = 500;
  s.seed = 9;
  const fm::SampleResult a = opened.sample(s);
  ASSERT_EQ(a.x.sizes(), (std::vector<int64_t>{500, 2}));
  EXPECT_EQ(a.nfe, 100);  // the default solver: Euler, 100 steps
  EXPECT_TRUE(a.x.equal(run.sample(s).x));
  // The domain's evaluation through Run: its number equals the same computation on the same samples.
  fm::EvaluationOptions e;
  e.n = 500;
  e.seed = 9;
  std::vector<std::string> said;
  const json metrics = opened.evaluate(e, "", [&](const std::string& line) { said.push_back(line); });
  EXPECT_DOUBLE_EQ(metrics["mean_radius"].get<double>(), a.x.norm(2, 1).mean().item<double>());
  EXPECT_EQ(said, std::vector<std::string>{"ring evaluated"});
  EXPECT_EQ(json::parse(fm::io::read_file(out + "/metrics.json"))["mean_radius"], metrics["mean_radius"]);
  // Training moved the samples towards the ring: their mean radius is nearer 2 than the source's
  // (E|z| = sqrt(pi/2) = 1.2533 for z ~ N(0, I) in 2-D, where the untrained near-zero field leaves them).
  EXPECT_LT(std::abs(metrics["mean_radius"].get<double>() - 2.0), 2.0 - std::sqrt(M_PI / 2));
}

TEST(Run, IndexPageShowsMetricsAndEmbedsEveryPictureAndFollowsTrainEvaluateAndSamples) {
  // Base64 (RFC 4648's test vectors).
  EXPECT_EQ(fm::base64_encode(""), "");
  EXPECT_EQ(fm::base64_encode("f"), "Zg==");
  EXPECT_EQ(fm::base64_encode("fo"), "Zm8=");
  EXPECT_EQ(fm::base64_encode("foo"), "Zm9v");
  EXPECT_EQ(fm::base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(fm::base64_encode(std::string("\xff\x00\x10", 3)), "/wAQ");
  fmtest::TempDir dir;
  const std::string out = dir / "r";
  fm::Run run = fm::Run::prepare(out, {{"steps", 20}, {"width", 16}, {"depth", 2}, {"batch", 32}, {"log-every", 5}});
  run.train();
  const std::string page_path = out + "/index.html";
  ASSERT_TRUE(std::filesystem::exists(page_path));
  std::string page = fm::io::read_file(page_path);
  const std::string loss = fm::io::read_file(out + "/loss.png");
  EXPECT_NE(page.find("data:image/png;base64," + fm::base64_encode(loss)), std::string::npos) << "the loss curve, embedded";
  EXPECT_NE(page.find("step-20.ckpt"), std::string::npos);
  EXPECT_EQ(page.find("<h2>Metrics"), std::string::npos);  // no metrics.json yet
  // An evaluation adds its metrics and pictures; samples written into the folder add theirs.
  fm::EvaluationOptions e;
  e.n = 200;
  const json metrics = fm::Run::open(out).evaluate(e);
  page = fm::io::read_file(page_path);
  EXPECT_NE(page.find("<td>w2_euler100</td>"), std::string::npos);
  for (const auto& entry : std::filesystem::directory_iterator(out)) {
    if (entry.path().extension() != ".png") continue;
    EXPECT_NE(page.find(fm::base64_encode(fm::io::read_file(entry.path().string()))), std::string::npos) << entry.path();
  }
  fm::SampleOptions s;
  s.n = 100;
  fm::Run opened = fm::Run::open(out);
  opened.write_samples(out + "/drawn.npy", opened.sample(s), s);
  page = fm::io::read_file(page_path);
  EXPECT_NE(page.find("<figcaption>drawn.png</figcaption>"), std::string::npos);
  // Samples written elsewhere leave the page alone.
  opened.write_samples(dir / "elsewhere.npy", opened.sample(s), s);
  EXPECT_EQ(fm::io::read_file(page_path), page);
}

TEST(Run, SettingsAreResolvedCheckedAndFrozenOnResume) {
  fmtest::TempDir dir;
  const std::string out = dir / "r";
  // Defaults follow the data: points get the MLP; the path and coupling defaults are TorchCFM's.
  const json config = fm::make_run_config({{"steps", 40}, {"width", 16}, {"depth", 2}});
  EXPECT_EQ(config["data"]["domain"], "points");
  EXPECT_EQ(config["model"]["type"], "mlp");
  EXPECT_EQ(config["model"]["options"]["width"], 16);
  EXPECT_EQ(config["path"]["sigma"], 0.1);
  EXPECT_EQ(config["coupling"]["type"], "exact-ot");
  EXPECT_EQ(config["settings"]["steps"], 40);
  // Named mistakes: an unknown setting, a value of the wrong kind, an option of another model, a
  // path parameter of another path.
  auto message = [](const json& settings) {
    try {
      fm::make_run_config(settings);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"stepz", 3}}).find("unknown setting 'stepz'"), std::string::npos);
  EXPECT_NE(message({{"steps", "many"}}).find("--steps \"many\": expected an integer"), std::string::npos);
  EXPECT_NE(message({{"steps", 0}}).find("--steps 0: expected >= 1"), std::string::npos);
  EXPECT_NE(message({{"channels", 8}}).find("model option 'channels' does not apply to model mlp"), std::string::npos);
  EXPECT_NE(message({{"model-option", {"widht=3"}}}).find("model option 'widht'"), std::string::npos);
  EXPECT_NE(message({{"model", "vision-transformer"}}).find("unknown model type 'vision-transformer'"), std::string::npos);
  EXPECT_NE(message({{"objective", "hinge"}}).find("unknown objective 'hinge'"), std::string::npos);
  EXPECT_NE(message({{"beta-min", 0.2}}).find("--beta-min applies to --path vp, not --path condot"), std::string::npos);
  EXPECT_NE(message({{"label-dropout", 0.2}}).find("--label-dropout applies to images data"), std::string::npos);
  // model-option KEY=VALUE reaches the model like its own flag.
  EXPECT_EQ(fm::make_run_config({{"model-option", {"width=24", "activation=silu"}}})["model"]["options"]["activation"], "silu");

  fm::Run run = fm::Run::prepare(out, {{"steps", 40}, {"width", 16}, {"depth", 2}, {"batch", 32}, {"checkpoint-every", 20}});
  run.train();
  // Resume: steps may grow; a frozen setting given again must equal the stored one.
  fm::Run resumed = fm::Run::prepare(out, {{"steps", 60}, {"width", 16}}, /*resume=*/true);
  EXPECT_EQ(resumed.resume_from(), out + "/checkpoints/step-40.ckpt");
  EXPECT_EQ(resumed.config()["training"]["steps"], 60);
  EXPECT_EQ(resumed.train().step, 60);
  try {
    fm::Run::prepare(out, {{"width", 32}}, /*resume=*/true);
    ADD_FAILURE() << "a changed width was accepted on resume";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--width 32 differs from the run's 16"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fm::Run::prepare(out, {{"steps", 10}}), std::invalid_argument);  // already holds a run
  EXPECT_THROW(fm::Run::open(dir / "nothing"), std::invalid_argument);
}

TEST(Run, RunsWrittenBeforeDomainsStillOpenAndSample) {
  // A config.json as session 6 wrote it: no data.domain, no settings, no objective.
  fmtest::TempDir dir;
  const std::string out = dir / "old";
  fm::Run fresh = fm::Run::prepare(out, {{"steps", 20}, {"width", 8}, {"depth", 1}, {"batch", 16}});
  fresh.train();
  json old = json::parse(fm::io::read_file(out + "/config.json"));
  old["data"].erase("domain");
  old.erase("settings");
  old.erase("objective");
  fm::write_json_file(out + "/config.json", old);
  fm::Run opened = fm::Run::open(out);
  EXPECT_EQ(opened.domain()->name(), "points");
  fm::SampleOptions s;
  s.n = 10;
  EXPECT_EQ(opened.sample(s).x.size(0), 10);
  // Resuming it with a frozen setting cannot be checked, and says so.
  try {
    fm::Run::prepare(out, {{"width", 8}, {"steps", 30}}, true);
    ADD_FAILURE() << "resumed without stored settings";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("before its settings were stored"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fm::Run::prepare(out, {{"steps", 30}}, true).train().step, 30);
}

// --split-seed: runs of other seeds that share it hold out the same points (so their densities can be
// averaged point by point, bench/ensemble_nll.py); without it the split follows --seed, as before.
TEST(Run, ASplitSeedSharesTheHeldOutPointsBetweenRunsOfOtherSeeds) {
  const std::string data_dir = std::string(FLOWMATCH_SOURCE_DIR) + "/../shared/data";
  ASSERT_TRUE(std::filesystem::exists(data_dir + "/earth/flood.csv")) << "no " << data_dir << "/earth (docs/MANIFOLDS.md)";
  auto config = [&](int seed, std::optional<int> split_seed) {
    json s = {{"data", "earth:flood"}, {"data-dir", data_dir}, {"seed", seed}};
    if (split_seed) s["split-seed"] = *split_seed;
    return fm::make_run_config(s);
  };
  auto held_out = [](const json& c) {
    auto domain = fm::domain_named(c["data"]["domain"]);
    auto g = at::make_generator<at::CPUGeneratorImpl>(0);
    return std::make_pair(domain->validation_split(c["data"]), domain->held_out(c["data"], 1 << 30, g));
  };
  const json a = config(3, 7), b = config(4, 7), own = config(7, std::nullopt), other = config(3, std::nullopt);
  EXPECT_EQ(a["data"]["split_seed"], 7);
  EXPECT_EQ(other["data"]["split_seed"], 3);
  const auto [val_a, test_a] = held_out(a);
  const auto [val_b, test_b] = held_out(b);
  const auto [val_own, test_own] = held_out(own);
  const auto [val_other, test_other] = held_out(other);
  ASSERT_EQ(test_a.size(0), 4875 - 3900 - 487);  // Flood's rows less 80 % and a tenth, each rounded down
  ASSERT_EQ(val_a.size(0), 487);
  EXPECT_TRUE(at::equal(test_a, test_b));
  EXPECT_TRUE(at::equal(val_a, val_b));
  EXPECT_TRUE(at::equal(test_a, test_own));  // the split of --seed 7 itself
  EXPECT_FALSE(at::equal(test_a, test_other));
  try {
    fm::make_run_config({{"split-seed", 2}});
    ADD_FAILURE() << "--split-seed on 2-D toy data was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--split-seed applies to finite data sets"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fm::make_run_config({{"data", "sphere-checkerboard"}, {"split-seed", 2}}), std::invalid_argument);
}

// --data-noise σ on a manifold: each training draw moves along a tangent Gaussian step (σ per tangent
// direction), so on S² a point's geodesic distance from where it was is Rayleigh: mean σ√(π/2), mean
// square 2σ². Checked on data that are all the north pole; without the setting the draws stay put.
TEST(Run, DataNoiseMovesTrainingPointsByATangentGaussianStep) {
  fmtest::TempDir dir;
  at::Tensor pole = at::zeros({100, 3}, at::kFloat);
  pole.select(1, 2).fill_(1);
  fm::io::save_npy(dir / "pole.npy", pole);
  auto draws = [&](const json& settings) {
    const json c = fm::make_run_config(settings);
    fm::FlowMatchingProblem problem;
    fm::domain_named(c["data"]["domain"])->add_training_data(c["data"], dir.str(), problem);
    auto g = at::make_generator<at::CPUGeneratorImpl>(5);
    return problem.target(20000, g).to(at::kDouble);
  };
  const json base = {{"data", dir / "pole.npy"}, {"manifold", "sphere"}};
  json noisy = base;
  noisy["data-noise"] = 0.05;
  at::Tensor x = draws(noisy);
  EXPECT_LT((x.norm(2, 1) - 1).abs().max().item<double>(), 1e-6);
  const at::Tensor d = x.select(1, 2).clamp(-1, 1).acos();  // the angle from the pole
  // Rayleigh(σ): standard deviation σ√((4 − π)/2) = 0.033, so the mean of 20 000 is within 2.3e-4 (1σ).
  EXPECT_NEAR(d.mean().item<double>(), 0.05 * std::sqrt(M_PI / 2), 1e-3);
  EXPECT_NEAR(d.square().mean().item<double>(), 2 * 0.05 * 0.05, 1.5e-4);
  EXPECT_TRUE(at::allclose(draws(base), pole.to(at::kDouble).index({at::indexing::Slice(0, 1)}).expand({20000, 3})));
  json bad = base;
  bad["data-noise"] = -0.1;
  EXPECT_THROW(fm::make_run_config(bad), std::invalid_argument);
  EXPECT_THROW(fm::make_run_config({{"data-noise", 0.1}}), std::invalid_argument);  // 2-D toy data
  EXPECT_THROW(fm::make_run_config({{"data", "sphere-checkerboard"}, {"data-noise", 0.1}}), std::invalid_argument);
}

// --validate nll: every checkpoint's sampling weights are scored on the validation split (RFM's
// protocol: the best validation checkpoint is the one tested). The kept checkpoints/best.ckpt is the
// argmin of the logged NLLs, survives the pruning of old checkpoints, and scores exactly that NLL
// again through `--checkpoint best`; a best is replaced only by a lower NLL; validating leaves the
// trained weights as they are without it (dropout draws from the generator a validation would use).
TEST(Run, ValidationKeepsTheCheckpointWithTheLowestValidationNLL) {
  const std::string data_dir = std::string(FLOWMATCH_SOURCE_DIR) + "/../shared/data";
  ASSERT_TRUE(std::filesystem::exists(data_dir + "/earth/flood.csv")) << "no " << data_dir << "/earth (docs/MANIFOLDS.md)";
  fmtest::TempDir dir;
  const json base = {{"data", "earth:flood"}, {"data-dir", data_dir}, {"width", 16},    {"depth", 2}, {"fourier-features", 8},
                     {"batch", 64},           {"lr", 3e-3},         {"dropout", 0.1}, {"keep", 1},  {"checkpoint-every", 20}};
  auto validation_lines = [](const std::string& run) {
    std::vector<std::pair<int64_t, double>> logged;
    std::ifstream in(run + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const json j = json::parse(line);
      if (j.contains("validation_nll")) logged.emplace_back(j["step"].get<int64_t>(), j["validation_nll"].get<double>());
    }
    return logged;
  };
  auto final_weights = [](const std::string& run) { return fm::load_model(fm::Run::open(run).latest_checkpoint(), false)->parameters(); };

  // A run validated from the start, 100 steps, against the same run without validation.
  const std::string out = dir / "validated", plain = dir / "plain";
  json settings = base;
  settings["steps"] = 100;
  fm::Run::prepare(plain, settings).train();
  settings["validate"] = "nll";
  settings["validate-tol"] = 1e-3;
  fm::Run run = fm::Run::prepare(out, settings);
  std::vector<std::pair<int64_t, bool>> told;
  fm::TrainRunOptions how;
  how.validated = [&](int64_t step, const json& line, bool best) {
    EXPECT_EQ(line["validation_n"], 487);  // the whole split
    told.emplace_back(step, best);
  };
  const fm::TrainOutcome outcome = run.train(how);
  const auto a = final_weights(out), b = final_weights(plain);
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) EXPECT_TRUE(at::equal(a[k], b[k])) << "parameter " << k << " differs with validation on";
  const auto logged = validation_lines(out);
  ASSERT_EQ(logged.size(), 5u);
  ASSERT_EQ(told.size(), 5u);
  double so_far = INFINITY;
  for (size_t k = 0; k < logged.size(); ++k) {
    EXPECT_EQ(logged[k].first, 20 + 20 * static_cast<int64_t>(k));
    EXPECT_EQ(told[k].second, logged[k].second < so_far) << "step " << logged[k].first;
    so_far = std::min(so_far, logged[k].second);
    EXPECT_TRUE(std::isfinite(logged[k].second)) << logged[k].second;
  }
  const auto best = std::min_element(logged.begin(), logged.end(), [](const auto& x, const auto& y) { return x.second < y.second; });
  const json kept = json::parse(fm::io::read_file(run.best_json()));
  EXPECT_EQ(kept["step"], best->first);
  EXPECT_EQ(kept["validation_nll"].get<double>(), best->second);
  EXPECT_EQ(kept["checkpoint"], "step-" + std::to_string(best->first) + ".ckpt");
  EXPECT_EQ(outcome.best["step"], best->first);
  EXPECT_EQ(run.checkpoint_step_of(run.best_checkpoint()), best->first);
  EXPECT_EQ(fm::list_checkpoints(run.checkpoint_dir()).size(), 1u);  // --keep 1 pruned the others, not best.ckpt
  EXPECT_TRUE(std::filesystem::exists(dir / "validated/validation.png"));
  fm::LikelihoodRequest q;  // the kept weights give the same NLL again
  q.split = "validation";
  q.atol = q.rtol = 1e-3;
  q.error_norm = "batch";
  q.n = 100000;
  q.checkpoint = "best";
  EXPECT_DOUBLE_EQ(run.likelihood(q).result["nll"].get<double>(), best->second);

  // A run trained without validation, then resumed with it: the resumed checkpoint is scored first. A
  // best recorded as lower than anything trained (made here) is never replaced.
  const std::string later = dir / "later";
  json first = base;
  first["steps"] = 20;
  fm::Run::prepare(later, first).train();
  EXPECT_THROW(fm::Run::open(later).best_checkpoint(), std::invalid_argument);
  const std::string step20 = later + "/checkpoints/step-20.ckpt";
  std::filesystem::copy_file(step20, later + "/checkpoints/best.ckpt");
  fm::write_json_file(later + "/checkpoints/best.json", {{"step", 20}, {"validation_nll", -100.0}});
  told.clear();
  fm::Run::prepare(later, {{"steps", 60}, {"validate", "nll"}, {"validate-tol", 1e-3}}, /*resume=*/true).train(how);
  ASSERT_EQ(told.size(), 3u);  // steps 20 (the resumed one), 40, 60
  EXPECT_EQ(told[0].first, 20);
  for (const auto& [step, was_best] : told) EXPECT_FALSE(was_best) << step;
  EXPECT_EQ(json::parse(fm::io::read_file(later + "/checkpoints/best.json"))["validation_nll"], -100.0);
  // Resumed further with validation off: no new lines, the best stays.
  fm::Run::prepare(later, {{"steps", 80}, {"validate", "off"}}, true).train();
  EXPECT_FALSE(fm::Run::open(later).config().contains("validation"));
  EXPECT_EQ(validation_lines(later).size(), 3u);
  // best.json and best.ckpt that disagree (a validation cut off between the two writes) are named.
  fm::write_json_file(later + "/checkpoints/best.json", {{"step", 40}, {"validation_nll", -100.0}});
  try {
    fm::Run::open(later).best_checkpoint();
    ADD_FAILURE() << "a best.ckpt of step 20 was taken for best.json's step 40";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("holds step 20 but"), std::string::npos) << e.what();
  }
  // A best from steps after the checkpoint a run resumes from is forgotten (those steps are trained again).
  fm::write_json_file(later + "/checkpoints/best.json", {{"step", 1000}, {"validation_nll", -100.0}});
  fm::Run::prepare(later, {{"steps", 100}}, true).train();
  EXPECT_FALSE(std::filesystem::exists(later + "/checkpoints/best.json"));
  EXPECT_FALSE(std::filesystem::exists(later + "/checkpoints/best.ckpt"));

  // Where there is nothing to validate on, or a bad value, the message says so.
  try {
    fm::make_run_config({{"validate", "nll"}});
    ADD_FAILURE() << "--validate nll on 2-D toy data was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--validate nll: "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no validation split"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fm::make_run_config({{"data", "earth:flood"}, {"data-dir", data_dir}, {"validate-tol", 0.0}}), std::invalid_argument);
  EXPECT_THROW(fm::Run::prepare(later, {{"validate", true}}, true), std::invalid_argument);
  EXPECT_THROW(fm::Run::prepare(later, {{"validate-tol", 2.0}}, true), std::invalid_argument);
}
