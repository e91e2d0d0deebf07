// The molecules domain: configurations of identical particles (issue "Equivariant flow matching for
// molecules").
//   molecules:dw4    DW4, 4 particles in 2-D: DATA_DIR/molecules/dw4_train.npy (training), dw4_test.npy
//   molecules:lj13   LJ13, 13 particles in 3-D: lj13_val.npy (training), lj13_test.npy
//   FILE.npy|.pt with --system dw4|lj13   configurations of that system, split 80/10/10 (seeded)
// Configurations are centred on load (the DW4 files are not). Flows run in the mean-free subspace
// (MeanFreeSpace) from the mean-free Gaussian, on the EGNN by default; the evaluation reports the test
// NLL (exact divergence in the subspace), the importance weights of samples against the Boltzmann
// density exp(−U) with their Kish ESS, the integration path length, and histograms of energies and
// pair distances (model against data).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "flowmatch/data/point_cloud.h"
#include "flowmatch/domain.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/particles.h"
#include "flowmatch/run.h"
#include "flowmatch/train.h"

namespace flowmatch {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Configurations of `system` from a file, centred, float64; a bad width is named with the file (a NaN or
// infinite coordinate with its row and column, by load_point_cloud).
at::Tensor read_configurations(const std::string& file, const MolecularSystem& system) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw std::invalid_argument("'" + file + "' is not a file (molecular data sets are read from --data-dir/molecules; see docs/MOLECULES.md)");
  }
  at::Tensor x = data::load_point_cloud(file, "--data").to(at::kDouble);
  const int64_t width = system.particles * system.particle_dim;
  if (x.dim() != 2 || x.size(1) != width) {
    throw std::invalid_argument("'" + file + "': rows of " + std::to_string(x.dim() == 2 ? x.size(1) : 0) + " values, but " + system.name +
                                " configurations have " + std::to_string(system.particles) + " particles x " +
                                std::to_string(system.particle_dim) + " = " + std::to_string(width));
  }
  if (x.size(0) < 10) throw std::invalid_argument("'" + file + "' has " + std::to_string(x.size(0)) + " configurations; at least 10 are needed");
  return remove_center_of_mass(x, system.particles, system.particle_dim).reshape({x.size(0), width});
}

// Histogram bins for samples of n values: 2√n, in [10, 80].
int64_t bins_for(int64_t n) { return std::clamp<int64_t>(static_cast<int64_t>(2 * std::sqrt(static_cast<double>(n))), 10, 80); }

// A density histogram as a line: bin centres and densities of `values` in [lo, hi].
io::LineSeries histogram(const at::Tensor& values, double lo, double hi, int64_t bins, io::Color color, const std::string& label) {
  at::Tensor v = values.to(at::kDouble).flatten();
  v = v.masked_select(at::isfinite(v));
  at::Tensor inside = v.masked_select((v >= lo).logical_and(v <= hi));
  at::Tensor counts = at::histc(inside, bins, lo, hi);
  const double width = (hi - lo) / static_cast<double>(bins);
  const double total = std::max<double>(1, static_cast<double>(v.numel()));
  io::LineSeries s;
  s.color = color;
  s.label = label;
  for (int64_t k = 0; k < bins; ++k) {
    s.x.push_back(lo + (k + 0.5) * width);
    s.y.push_back(counts[k].item<double>() / (total * width));
  }
  return s;
}

class MoleculesDomain : public Domain {
 public:
  std::string name() const override { return "molecules"; }
  std::vector<std::string> own_settings() const override { return {"system"}; }
  bool claims(const json& given) const override { return given.contains("system"); }
  std::string default_model(const json&) const override { return "egnn"; }
  json default_settings() const override {
    return {{"objective", "riemannian"}, {"data-dir", default_data_dir()}, {"batch", 256}, {"steps", 5000}, {"lr", 5e-4}};
  }
  json model_options(const json& data, const std::string& model) const override {
    if (model == "egnn") return {{"particles", data.at("particles")}, {"particle_dim", data.at("particle_dim")}};
    if (model == "manifold-mlp") return {{"manifold", space(data)->spec()}};
    return json::object();
  }

  json describe_data(const json& settings, const std::vector<std::string>& given) const override {
    const std::string setting = settings.value("data", std::string());
    const bool system_given = std::find(given.begin(), given.end(), "system") != given.end();
    json d;
    d["name"] = setting;
    if (setting.rfind("molecules:", 0) == 0) {
      const std::string which = setting.substr(10);
      const MolecularSystem system = molecular_system(which);
      if (system_given && settings["system"] != which) {
        throw std::invalid_argument("--data " + setting + " is the " + which + " system, not --system " + settings["system"].get<std::string>());
      }
      const fs::path dir = fs::absolute(fs::path(settings.at("data-dir").get<std::string>()) / "molecules").lexically_normal();
      d["kind"] = "benchmark";
      d["system"] = which;
      d["train_file"] = (dir / (which == "dw4" ? "dw4_train.npy" : "lj13_val.npy")).string();
      d["test_file"] = (dir / (which + "_test.npy")).string();
      d["train_rows"] = read_configurations(d["train_file"], system).size(0);
      d["test_rows"] = read_configurations(d["test_file"], system).size(0);
    } else {
      if (setting.empty()) throw std::invalid_argument("--system needs --data FILE.npy (configurations, one per row)");
      if (!system_given) throw std::invalid_argument("--data '" + setting + "': no data domain takes it");
      const std::string which = settings["system"].get<std::string>();
      const MolecularSystem system = molecular_system(which);
      const std::string file = fs::absolute(setting).lexically_normal().string();
      d["kind"] = "file";
      d["system"] = which;
      d["file"] = file;
      d["rows"] = read_configurations(file, system).size(0);
      d["split_seed"] = split_seed_setting(settings);
    }
    const MolecularSystem system = molecular_system(d["system"]);
    d["particles"] = system.particles;
    d["particle_dim"] = system.particle_dim;
    d["manifold"] = MeanFreeSpace(system.particles, system.particle_dim).spec();
    if (std::find(given.begin(), given.end(), "source") != given.end() && settings["source"] != "gaussian") {
      throw std::invalid_argument("--source '" + settings["source"].get<std::string>() + "': particle systems start from the mean-free gaussian");
    }
    d["source"] = "mean-free-gaussian";
    return d;
  }

  std::vector<int64_t> sample_shape(const json& data) const override {
    return {data.at("particles").get<int64_t>() * data.at("particle_dim").get<int64_t>()};
  }
  std::shared_ptr<const Manifold> manifold(const json& data) const override { return space(data); }
  std::string sample_unit() const override { return ""; }

  data::PointSampler source(const json& data) const override {
    auto g = std::make_shared<MeanFreeGaussian>(data.at("particles").get<int64_t>(), data.at("particle_dim").get<int64_t>());
    return [g](int64_t n, at::Generator& gen) { return g->sample(n, gen, at::TensorOptions().dtype(at::kFloat)); };
  }
  std::function<at::Tensor(const at::Tensor&)> source_log_density(const json& data) const override {
    auto g = std::make_shared<MeanFreeGaussian>(data.at("particles").get<int64_t>(), data.at("particle_dim").get<int64_t>());
    return [g](const at::Tensor& x) { return g->log_density(x); };
  }

  void add_training_data(const json& data, const std::string&, FlowMatchingProblem& problem) const override {
    problem.target = data::point_cloud_sampler(split(data, 0).to(at::kFloat));
  }

  at::Tensor held_out(const json& data, int64_t n, at::Generator&) const override {
    at::Tensor test = split(data, 2);
    return test.slice(0, 0, std::min(n, test.size(0))).to(at::kFloat);
  }
  at::Tensor validation_split(const json& data) const override { return split(data, 1).to(at::kFloat); }
  std::string held_out_label(const json& data, int64_t n, const std::string& split) const override {
    return data.value("name", std::string("molecules")) + " " + split + " split (" + std::to_string(n) + " configurations)";
  }

  void complete_sample_options(const json&, SampleOptions& options) const override {
    if (options.n <= 0 && !options.initial.defined()) options.n = 1000;
    if (options.solver.empty()) options.solver = "dopri5";
    if (options.steps <= 0) options.steps = 100;
  }

  std::vector<std::string> picture_samples(const Run& run, const SampleResult& samples, const SampleOptions&,
                                           const std::string& stem) const override {
    const json& data = run.config()["data"];
    const MolecularSystem system = molecular_system(data.at("system"));
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0x5eedULL);
    at::Tensor reference = held_out(data, 2000, gen).to(at::kDouble);
    return pictures(samples.x.to(at::kDouble), reference, system, stem, "samples: " + samples.description);
  }

  json evaluate(const Run& run, const EvaluationOptions& o, const ReportFunction& report) const override {
    const json& data = run.config()["data"];
    const MolecularSystem system = molecular_system(data.at("system"));
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 0x5eed0000ULL);
    const int64_t n = std::max<int64_t>(2, o.n);
    at::Tensor test = held_out(data, n, gen);

    // Test NLL in the (n − 1)·d subspace, exact divergence.
    LikelihoodRequest q;
    q.points = test;
    q.data_label = data["name"].get<std::string>() + " test configurations";
    q.grid = 0;
    q.checkpoint = o.checkpoint;
    q.device = o.device;
    q.seed = o.seed;
    q.batch = 250;
    if (report) report("test NLL on " + std::to_string(test.size(0)) + " configurations (dopri5, exact divergence) ...");
    const LikelihoodSummary nll = run.likelihood(q);

    // Samples and their model log-density in one forward solve (dopri5, exact divergence), and their
    // importance weights against exp(−U): log w = −U(x) − log q(x).
    if (report) report("sampling " + std::to_string(test.size(0)) + " configurations with their log-densities (dopri5) ...");
    at::Tensor x, log_q;
    int64_t sample_nfe = 0;
    {
      auto model = run.model(o.checkpoint, o.device);
      model->to(at::kDouble);  // as Run::likelihood: float64, so dopri5 does not chase float32 rounding
      const SamplingFlow flow = run.flow(model);
      const auto log_p0 = source_log_density(data);
      at::Generator sample_gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
      at::Tensor x0 = source(data)(test.size(0), sample_gen).to(at::kDouble);
      std::vector<at::Tensor> xs, lqs;
      for (int64_t start = 0; start < x0.size(0); start += 250) {
        const int64_t len = std::min<int64_t>(250, x0.size(0) - start);
        const LikelihoodResult r = sample_with_log_likelihood(
            flow.field, x0.slice(0, start, start + len).to(o.device, at::kDouble),
            LikelihoodOptions()
                .solver(SolverOptions().method(SolverMethod::Dopri5).atol(1e-5).rtol(1e-5).manifold(flow.path->manifold()))
                .source_log_density(log_p0));
        xs.push_back(r.x1.to(at::kCPU, at::kDouble));
        lqs.push_back(r.log_prob.to(at::kCPU, at::kDouble));
        sample_nfe += r.nfe;
      }
      x = at::cat(xs);
      log_q = at::cat(lqs);
    }
    at::Tensor energy = system.energy(x);
    at::Tensor log_w = -energy - log_q;
    const double ess = kish_effective_sample_size(log_w);

    // Integration path length: E Σ_k ‖x_(k+1) − x_k‖ along midpoint trajectories of 100 steps.
    SampleOptions sp;
    sp.seed = o.seed;
    sp.checkpoint = o.checkpoint;
    sp.device = o.device;
    sp.n = std::min<int64_t>(test.size(0), 500);
    sp.solver = "midpoint";
    sp.steps = 100;
    sp.trajectories = sp.n;
    if (report) report("path length on " + std::to_string(sp.n) + " trajectories (midpoint, 100 steps) ...");
    const SampleResult paths = run.sample(sp);
    at::Tensor steps = paths.trajectories.to(at::kDouble).diff(1, 0);  // (T − 1, k, D)
    const double path_length = steps.square().sum(2).sqrt().sum(0).mean().item<double>();

    at::Tensor test_energy = system.energy(test.to(at::kDouble));
    // bgflow, Klein et al.'s code, leaves out the source's normalising constant ((n − 1)·d/2)·log 2π:
    // their published NLLs are ours minus it (docs/MOLECULES.md).
    const double log_normaliser = 0.5 * static_cast<double>((system.particles - 1) * system.particle_dim) * std::log(2 * M_PI);
    json metrics = {{"nll", nll.result["nll"]},
                    {"nll_without_normalizer", nll.result["nll"].get<double>() - log_normaliser},
                    {"nll_stderr", nll.result["nll_stderr"]},
                    {"nll_nfe", nll.result["nfe"]},
                    {"ess", ess},
                    {"ess_n", x.size(0)},
                    {"path_length", path_length},
                    {"path_length_n", sp.n},
                    {"sample_nfe", sample_nfe},
                    {"energy_mean_samples", energy.masked_select(at::isfinite(energy)).mean().item<double>()},
                    {"energy_median_samples", energy.masked_select(at::isfinite(energy)).median().item<double>()},
                    {"energy_nonfinite_samples", at::isfinite(energy).logical_not().sum().item<int64_t>()},
                    {"energy_mean_test", test_energy.mean().item<double>()},
                    {"energy_median_test", test_energy.median().item<double>()},
                    {"n", test.size(0)},
                    {"system", system.name},
                    {"data", q.data_label}};
    const auto files = pictures(x, test.to(at::kDouble), system, run.dir() + "/eval", "model (dopri5) vs test data");
    metrics["pictures"] = files;
    return metrics;
  }

 private:
  static std::shared_ptr<const Manifold> space(const json& data) {
    return std::make_shared<MeanFreeSpace>(data.at("particles").get<int64_t>(), data.at("particle_dim").get<int64_t>());
  }

  // Split k (0 train, 1 validation, 2 test): the benchmark's files, or a seeded 80/10/10 split of a file.
  static at::Tensor split(const json& data, int k) {
    const MolecularSystem system = molecular_system(data.at("system"));
    if (data.value("kind", std::string()) == "benchmark") {
      if (k == 1) throw std::invalid_argument("the " + system.name + " benchmark has no validation split here");
      const std::string file = data.at(k == 0 ? "train_file" : "test_file");
      at::Tensor x = read_configurations(file, system);
      const int64_t rows = data.at(k == 0 ? "train_rows" : "test_rows").get<int64_t>();
      if (x.size(0) != rows) {
        throw std::runtime_error("'" + file + "' now has " + std::to_string(x.size(0)) + " rows; the run was made with " + std::to_string(rows));
      }
      return x;
    }
    const std::string file = data.at("file");
    at::Tensor x = read_configurations(file, system);
    const int64_t n = x.size(0);
    if (n != data.at("rows").get<int64_t>()) {
      throw std::runtime_error("'" + file + "' now has " + std::to_string(n) + " rows; the run was made with " +
                               std::to_string(data.at("rows").get<int64_t>()) + " (the splits would differ)");
    }
    return data::split_rows(x, data.value("split_seed", uint64_t{0}), k);
  }

  // STEM.png: configurations aligned onto the first (first two coordinates, a colour per particle);
  // STEM-energy.png, STEM-distances.png: histograms, model against data.
  static std::vector<std::string> pictures(const at::Tensor& x, const at::Tensor& data, const MolecularSystem& system, const std::string& stem,
                                           const std::string& title) {
    const int64_t n = system.particles, d = system.particle_dim;
    std::vector<std::string> files;
    {
      const int64_t k = std::min<int64_t>(x.size(0), 300);
      at::Tensor some = x.slice(0, 0, k);
      at::Tensor ref = some.slice(0, 0, 1).expand({k, n * d}).contiguous();
      at::Tensor aligned = align_particles(some, ref, n, d).aligned.reshape({k, n, d});
      std::vector<io::ScatterSeries> series;
      for (int64_t i = 0; i < n; ++i) {
        const double hue = static_cast<double>(i) / static_cast<double>(n);
        const io::Color color{static_cast<uint8_t>(40 + 200 * std::abs(std::sin(M_PI * hue))),
                              static_cast<uint8_t>(40 + 180 * std::abs(std::sin(M_PI * (hue + 1.0 / 3)))),
                              static_cast<uint8_t>(40 + 200 * std::abs(std::sin(M_PI * (hue + 2.0 / 3))))};
        at::Tensor p = aligned.select(1, i);
        at::Tensor xy = d >= 2 ? p.slice(1, 0, 2) : at::cat({p, at::zeros_like(p)}, 1);
        series.push_back({xy, color, i == 0 ? "a colour per particle, matched to the first configuration" : "", 0.35f});
      }
      io::PlotStyle style;
      style.title = system.name + ": " + std::to_string(k) + " generated configurations aligned onto the first (x, y)";
      io::write_scatter_png(stem + ".png", series, style);
      files.push_back(stem + ".png");
    }
    auto quantiles = [](const at::Tensor& v, double a, double b) {
      at::Tensor s = std::get<0>(at::sort(v.masked_select(at::isfinite(v))));
      const int64_t m = s.size(0);
      return std::make_pair(s[static_cast<int64_t>(a * (m - 1))].item<double>(), s[static_cast<int64_t>(b * (m - 1))].item<double>());
    };
    {
      at::Tensor e_model = system.energy(x), e_data = system.energy(data);
      auto [lo, hi] = quantiles(e_data, 0.0, 0.995);
      const double pad = 0.1 * (hi - lo);
      const int64_t bins = bins_for(std::min(e_model.numel(), e_data.numel()));
      io::PlotStyle style;
      style.title = system.name + " energy U: " + title;
      io::write_line_png(stem + "-energy.png",
                         {histogram(e_data, lo - pad, hi + pad, bins, {31, 119, 180}, "data"),
                          histogram(e_model, lo - pad, hi + pad, bins, {214, 39, 40}, "model")},
                         style);
      files.push_back(stem + "-energy.png");
    }
    {
      at::Tensor r_model = pair_distances(x, n, d), r_data = pair_distances(data, n, d);
      auto [lo, hi] = quantiles(r_data, 0.0, 1.0);
      const int64_t bins = bins_for(std::min(r_model.numel(), r_data.numel()));
      io::PlotStyle style;
      style.title = system.name + " interatomic distances: " + title;
      io::write_line_png(stem + "-distances.png",
                         {histogram(r_data, 0, hi * 1.1, bins, {31, 119, 180}, "data"), histogram(r_model, 0, hi * 1.1, bins, {214, 39, 40}, "model")},
                         style);
      files.push_back(stem + "-distances.png");
    }
    return files;
  }
};

}  // namespace

std::shared_ptr<Domain> make_molecules_domain() { return std::make_shared<MoleculesDomain>(); }
bool molecules_domain_accepts(const std::string& data) { return data.rfind("molecules:", 0) == 0; }

}  // namespace flowmatch
