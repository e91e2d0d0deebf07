// The manifold domain: data on the sphere or the torus (issue "Flow matching on manifolds").
//   earth:volcano|earth:quakes|earth:flood|earth:fire  locations on S² (DATA_DIR/earth/*.csv)
//   sphere-checkerboard, torus-checkerboard             the toy cases of flow_matching's notebooks
//   proteins[:general|glycine|proline|pre-proline]       backbone (φ, ψ) on T² from PDB files (theseus-examples)
//   FILE.npy|.pt with --manifold sphere|torus            unit vectors (N, 3) or angles (N, d) in radians
// Finite data sets are split 80/10/10 (train/validation/test) by a permutation seeded with the run's
// seed; likelihoods and evaluations use the test split.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "flowmatch/data/pdb.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/domain.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/run.h"
#include "flowmatch/train.h"
#include "flowmatch/von_mises_fisher_mixture.h"
#include "flowmatch/von_mises_mixture.h"
#include "flowmatch/wrapped_normal.h"

namespace flowmatch {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct EarthSet {
  const char* name;
  const char* file;
};
constexpr EarthSet kEarthSets[] = {{"volcano", "volerup.csv"}, {"quakes", "quakes_all.csv"}, {"flood", "flood.csv"}, {"fire", "fire.csv"}};

std::string earth_names() {
  std::string s;
  for (const auto& e : kEarthSets) s += (s.empty() ? "earth:" : ", earth:") + std::string(e.name);
  return s;
}

bool parse_number(const std::string& text, double& value) {
  const char* begin = text.c_str();
  char* end = nullptr;
  value = std::strtod(begin, &end);
  if (end == begin) return false;
  while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '"') ++end;
  return *end == '\0' && std::isfinite(value);
}

std::string trimmed(std::string s) {
  const auto a = s.find_first_not_of(" \t\r\"");
  const auto b = s.find_last_not_of(" \t\r\"");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// (latitude, longitude) rows in degrees (N, 2) to unit vectors (N, 3):
// x = (cos φ cos λ, cos φ sin λ, sin φ).
at::Tensor lat_lon_to_unit_vectors(const at::Tensor& degrees) {
  at::Tensor phi = degrees.select(1, 0) * (M_PI / 180), lambda = degrees.select(1, 1) * (M_PI / 180);
  return at::stack({at::cos(phi) * at::cos(lambda), at::cos(phi) * at::sin(lambda), at::sin(phi)}, 1);
}

// Latitude/longitude rows (degrees) of an Earth-science CSV as unit vectors (N, 3), float64.
// Comment lines (#) and one header line are skipped; a malformed line or a latitude outside
// [−90, 90] is named with its line number.
at::Tensor read_earth_csv(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw std::invalid_argument("'" + path + "' is not a file (Earth data sets are read from --data-dir/earth; see docs/DATASETS.md)");
  }
  if (fs::file_size(path, ec) > (int64_t{1} << 30)) throw std::invalid_argument("'" + path + "' is larger than 1 GiB");
  std::ifstream in(path);
  std::string line;
  std::vector<double> values;
  int64_t number = 0;
  bool seen_data = false;
  while (std::getline(in, line)) {
    ++number;
    const std::string t = trimmed(line);
    if (t.empty() || t[0] == '#') continue;
    std::stringstream fields(t);
    std::string lat_text, lon_text;
    std::getline(fields, lat_text, ',');
    std::getline(fields, lon_text, ',');
    double lat = 0, lon = 0;
    const bool numbers = parse_number(trimmed(lat_text), lat) && parse_number(trimmed(lon_text), lon);
    if (!numbers) {
      if (!seen_data) {  // the header
        seen_data = true;
        continue;
      }
      throw std::invalid_argument("'" + path + "' line " + std::to_string(number) + ": expected latitude,longitude in degrees, got '" +
                                  t.substr(0, 60) + "'");
    }
    seen_data = true;
    if (lat < -90 || lat > 90) {
      throw std::invalid_argument("'" + path + "' line " + std::to_string(number) + ": latitude " + trimmed(lat_text) + " is outside [-90, 90]");
    }
    if (lon < -360 || lon > 360) {
      throw std::invalid_argument("'" + path + "' line " + std::to_string(number) + ": longitude " + trimmed(lon_text) +
                                  " is outside [-360, 360]");
    }
    values.push_back(lat);
    values.push_back(lon);
  }
  if (values.empty()) throw std::invalid_argument("'" + path + "' holds no latitude,longitude rows");
  return lat_lon_to_unit_vectors(at::tensor(values, at::kDouble).reshape({-1, 2}));
}

// Unit vectors (N, 3) to (latitude, longitude) in degrees.
at::Tensor unit_vectors_to_lat_lon(const at::Tensor& x) {
  at::Tensor d = x.to(at::kDouble);
  at::Tensor lat = at::asin(d.select(1, 2).clamp(-1, 1)) * (180 / M_PI);
  at::Tensor lon = at::atan2(d.select(1, 1), d.select(1, 0)) * (180 / M_PI);
  return at::stack({lat, lon}, 1);
}


// The checkerboards of flow_matching's Riemannian notebooks: the 2-D checkerboard of 8 unit cells in
// [−2, 2]² (cells with ⌊a⌋ + ⌊b⌋ even), on the torus as angles (the rest of [−π, π)² is empty: true
// density 1/8, NLL log 8 = 2.079), on the sphere as exp at the north pole of (a, b, 0)/2.
at::Tensor plane_checkerboard(int64_t n, at::Generator& gen) {
  at::Tensor a = at::rand({n}, gen, at::kDouble) * 4 - 2;
  at::Tensor b = at::rand({n}, gen, at::kDouble) - at::randint(0, 2, {n}, gen, at::kDouble) * 2 + at::floor(a).remainder(2);
  return at::stack({a, b}, 1);
}

at::Tensor sphere_checkerboard(int64_t n, at::Generator& gen) {
  at::Tensor ab = plane_checkerboard(n, gen) / 2;
  at::Tensor north = at::zeros({n, 3}, at::kDouble);
  north.select(1, 2).fill_(1);
  return Sphere(2).expmap(north, at::cat({ab, at::zeros({n, 1}, at::kDouble)}, 1)).to(at::kFloat);
}

at::Tensor torus_checkerboard(int64_t n, at::Generator& gen) { return plane_checkerboard(n, gen).to(at::kFloat); }

std::string default_protein_dir() {
  if (const char* env = std::getenv("FLOWMATCH_PDB_DIR"); env && *env) return env;
  return "/usr/share/doc/theseus/examples";  // Debian's theseus-examples
}

// φ/ψ of one residue class over every PDB file (.pdb, .pdb.gz, .ent) under `dir`, in path order.
at::Tensor protein_angles(const std::string& dir, const std::string& cls, int64_t* files = nullptr) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::invalid_argument("protein folder '" + dir + "' does not exist (install theseus-examples, or set FLOWMATCH_PDB_DIR)");
  }
  std::vector<fs::path> paths;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    auto ends = [&](const std::string& suffix) { return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0; };
    if (e.is_regular_file() && (ends(".pdb") || ends(".pdb.gz") || ends(".ent") || ends(".ent.gz"))) paths.push_back(e.path());
  }
  std::sort(paths.begin(), paths.end());
  if (files) *files = static_cast<int64_t>(paths.size());
  std::vector<at::Tensor> parts;
  for (const auto& p : paths) {
    const data::BackboneAngles a = data::read_backbone_angles(p.string());
    std::vector<int64_t> keep;
    for (size_t k = 0; k < a.classes.size(); ++k)
      if (a.classes[k] == cls) keep.push_back(static_cast<int64_t>(k));
    if (!keep.empty()) parts.push_back(a.phi_psi.index_select(0, at::tensor(keep, at::kLong)));
  }
  if (parts.empty()) throw std::invalid_argument("no " + cls + " residues in the PDB files under '" + dir + "'");
  return at::cat(parts);
}

class ManifoldDomain : public Domain {
 public:
  std::string name() const override { return "manifold"; }
  std::vector<std::string> own_settings() const override { return {"manifold", "data-noise"}; }
  bool claims(const json& given) const override { return given.contains("manifold"); }
  std::string default_model(const json&) const override { return "manifold-mlp"; }
  json model_options(const json& data, const std::string& model) const override {
    if (model != "manifold-mlp") return json::object();
    return {{"manifold", manifold_of(data)->spec()}};
  }
  json default_settings() const override { return {{"objective", "riemannian"}, {"data-dir", default_data_dir()}}; }

  json describe_data(const json& settings, const std::vector<std::string>& given) const override {
    const std::string data = settings.value("data", std::string());
    const bool manifold_given = std::find(given.begin(), given.end(), "manifold") != given.end();
    json d;
    d["name"] = data;
    const bool drawn = data == "sphere-checkerboard" || data == "torus-checkerboard";  // no split to seed
    if (!drawn) d["split_seed"] = split_seed_setting(settings);
    if (data.rfind("earth:", 0) == 0) {
      if (manifold_given && settings["manifold"] != "sphere") throw std::invalid_argument("--data " + data + " lies on the sphere, not --manifold " + settings["manifold"].get<std::string>());
      const std::string which = data.substr(6);
      const EarthSet* set = nullptr;
      for (const auto& e : kEarthSets)
        if (which == e.name) set = &e;
      if (!set) throw std::invalid_argument("unknown Earth data set '" + data + "' (expected: " + earth_names() + ")");
      const std::string dir = settings.at("data-dir").get<std::string>();
      const std::string file = fs::absolute(fs::path(dir) / "earth" / set->file).lexically_normal().string();
      d["kind"] = "earth";
      d["file"] = file;
      d["rows"] = read_earth_csv(file).size(0);
      d["manifold"] = Sphere(2).spec();
    } else if (data == "proteins" || data.rfind("proteins:", 0) == 0) {
      const std::string cls = data == "proteins" ? "general" : data.substr(9);
      const auto names = data::residue_class_names();
      if (std::find(names.begin(), names.end(), cls) == names.end()) {
        throw std::invalid_argument("unknown residue class '" + cls + "' (expected proteins:general, proteins:glycine, proteins:proline, proteins:pre-proline)");
      }
      if (manifold_given && settings["manifold"] != "torus") throw std::invalid_argument("--data " + data + " lies on the torus, not --manifold " + settings["manifold"].get<std::string>());
      const std::string dir = fs::absolute(default_protein_dir()).lexically_normal().string();
      int64_t files = 0;
      d["kind"] = "proteins";
      d["class"] = cls;
      d["file"] = dir;
      d["rows"] = protein_angles(dir, cls, &files).size(0);
      d["pdb_files"] = files;
      d["manifold"] = FlatTorus(2).spec();
    } else if (data == "sphere-checkerboard" || data == "torus-checkerboard") {
      d["kind"] = "checkerboard";
      d["manifold"] = data == "sphere-checkerboard" ? Sphere(2).spec() : FlatTorus(2).spec();
      if (manifold_given && settings["manifold"] != d["manifold"]["type"]) {
        throw std::invalid_argument("--data " + data + " lies on the " + d["manifold"]["type"].get<std::string>() + ", not --manifold " +
                                    settings["manifold"].get<std::string>());
      }
    } else {
      if (data.empty()) throw std::invalid_argument("--manifold needs --data FILE.npy (unit vectors for the sphere, angles for the torus)");
      if (!manifold_given) throw std::invalid_argument("--data '" + data + "': no data domain takes it");
      const std::string kind = settings["manifold"].get<std::string>();
      const std::string file = fs::absolute(data).lexically_normal().string();
      at::Tensor x = data::load_point_cloud(file);
      if (x.dim() != 2) throw std::invalid_argument("'" + file + "': expected points (N, D), got " + std::to_string(x.dim()) + " dimensions");
      std::shared_ptr<Manifold> m = kind == "sphere" ? std::shared_ptr<Manifold>(std::make_shared<Sphere>(x.size(1) - 1))
                                                     : std::shared_ptr<Manifold>(std::make_shared<FlatTorus>(x.size(1)));
      m->check_points(x, kTolerance, "'" + file + "'");
      d["kind"] = "file";
      d["file"] = file;
      d["rows"] = x.size(0);
      d["manifold"] = m->spec();
    }
    const bool source_given = std::find(given.begin(), given.end(), "source") != given.end();
    const std::string source = source_given ? settings["source"].get<std::string>() : "uniform";
    const bool mixture = source.rfind("vmf-mixture:", 0) == 0;
    if (source != "uniform" && source != "wrapped-normal" && !mixture) {
      throw std::invalid_argument("--source '" + source + "': data on a manifold starts from uniform, wrapped-normal or vmf-mixture:K");
    }
    d["source"] = source;
    if (settings.contains("data-noise") && !settings["data-noise"].is_null()) {
      const double noise = settings["data-noise"].get<double>();
      if (!(noise >= 0 && noise < 1)) throw std::invalid_argument("--data-noise " + std::to_string(noise) + ": expected a standard deviation in [0, 1) radians");
      if (noise > 0 && d.value("kind", std::string()) == "checkerboard") {
        throw std::invalid_argument("--data-noise applies to data sets of points, not to " + data + " (drawn afresh each batch)");
      }
      if (noise > 0) d["training_noise"] = noise;
    }
    if (d.contains("rows") && d["rows"].get<int64_t>() < 10) {
      throw std::invalid_argument("'" + d["file"].get<std::string>() + "' has " + std::to_string(d["rows"].get<int64_t>()) +
                                  " points; an 80/10/10 split needs at least 10");
    }
    if (mixture) fit_source_mixture(d, source);
    return d;
  }

  std::vector<int64_t> sample_shape(const json& data) const override { return {manifold_of(data)->coordinates()}; }
  std::shared_ptr<const Manifold> manifold(const json& data) const override { return manifold_of(data); }
  std::string sample_unit() const override { return ""; }

  data::PointSampler source(const json& data) const override {
    auto m = manifold_of(data);
    if (auto v = source_mixture_of(data)) {
      return [v](int64_t n, at::Generator& gen) { return v->sample(n, gen, at::TensorOptions().dtype(at::kFloat)); };
    }
    if (data.value("source", std::string("uniform")) == "wrapped-normal") {
      auto w = std::make_shared<WrappedNormal>(m, WrappedNormal::notebook_scale(*m));
      return [w](int64_t n, at::Generator& gen) { return w->sample(n, gen, at::TensorOptions().dtype(at::kFloat)); };
    }
    return [m](int64_t n, at::Generator& gen) { return m->sample_uniform(n, gen, at::TensorOptions().dtype(at::kFloat)); };
  }
  std::function<at::Tensor(const at::Tensor&)> source_log_density(const json& data) const override {
    auto m = manifold_of(data);
    if (auto v = source_mixture_of(data)) {
      return [v](const at::Tensor& x) { return v->log_density(x).to(x.scalar_type()); };
    }
    if (data.value("source", std::string("uniform")) == "wrapped-normal") {
      auto w = std::make_shared<WrappedNormal>(m, WrappedNormal::notebook_scale(*m));
      return [w](const at::Tensor& x) { return w->log_density(x); };
    }
    const double log_volume = m->log_volume();
    return [log_volume](const at::Tensor& x) { return at::full({x.size(0)}, -log_volume, x.options()); };
  }

  void add_training_data(const json& data, const std::string&, FlowMatchingProblem& problem) const override {
    const std::string kind = data.value("kind", std::string());
    if (kind == "checkerboard") {
      problem.target = data["name"] == "sphere-checkerboard" ? data::PointSampler(sphere_checkerboard) : data::PointSampler(torus_checkerboard);
      return;
    }
    data::PointSampler points = data::point_cloud_sampler(split(data, 0).to(at::kFloat));
    const double noise = data.value("training_noise", 0.0);
    if (noise > 0) {  // each draw moved along a tangent Gaussian step: the data smoothed by a heat-like kernel
      auto m = manifold_of(data);
      points = [points, m, noise](int64_t n, at::Generator& gen) {
        at::Tensor x = points(n, gen);
        return m->project(m->expmap(x, m->project_tangent(x, at::randn(x.sizes(), gen, x.options()) * noise)));
      };
    }
    problem.target = points;
  }

  at::Tensor held_out(const json& data, int64_t n, at::Generator& generator) const override {
    if (data.value("kind", std::string()) == "checkerboard") {
      return data["name"] == "sphere-checkerboard" ? sphere_checkerboard(n, generator) : torus_checkerboard(n, generator);
    }
    at::Tensor test = split(data, 2);
    return test.slice(0, 0, std::min(n, test.size(0))).to(at::kFloat);
  }
  at::Tensor validation_split(const json& data) const override {
    if (data.value("kind", std::string()) == "checkerboard") return Domain::validation_split(data);
    return split(data, 1).to(at::kFloat);
  }
  std::string held_out_label(const json& data, int64_t n, const std::string& split) const override {
    if (data.value("kind", std::string()) == "checkerboard") return Domain::held_out_label(data, n, split);
    return data.value("name", std::string()) + " " + split + " split (" + std::to_string(n) + " points)";
  }

  std::vector<std::string> picture_samples(const Run& run, const SampleResult& samples, const SampleOptions&,
                                           const std::string& stem) const override {
    const json& data = run.config()["data"];
    auto m = manifold_of(data);
    io::PlotStyle style;
    style.title = "samples: " + samples.description + ", NFE " + std::to_string(samples.nfe);
    if (m->name() == "sphere" && m->coordinates() == 3) {
      style.x_lo = -180, style.x_hi = 180, style.y_lo = -90, style.y_hi = 90, style.width = 720, style.height = 400;
      at::Tensor ll = unit_vectors_to_lat_lon(samples.x);
      io::write_scatter_png(stem + ".png", {{at::stack({ll.select(1, 1), ll.select(1, 0)}, 1), {214, 39, 40}, "generated (lon, lat)", 0.3f}},
                            style);
      return {stem + ".png"};
    }
    if (m->name() == "torus" && m->coordinates() == 2) {
      style.x_lo = -M_PI, style.x_hi = M_PI, style.y_lo = -M_PI, style.y_hi = M_PI;
      const bool proteins = data.value("kind", std::string()) == "proteins";
      io::write_scatter_png(stem + ".png",
                            {{samples.x.to(at::kDouble), {214, 39, 40}, proteins ? "generated (phi, psi)" : "generated (angle 1, angle 2)", 0.3f}},
                            style);
      return {stem + ".png"};
    }
    return {};
  }

  json evaluate(const Run& run, const EvaluationOptions& o, const ReportFunction& report) const override {
    const json& data = run.config()["data"];
    auto m = manifold_of(data);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 0x5eed0000ULL);
    at::Tensor test = held_out(data, o.n, gen);
    LikelihoodRequest q;
    q.points = test;
    q.data_label = data.value("kind", std::string()) == "checkerboard" ? data["name"].get<std::string>() + " (fresh samples)"
                                                                      : data["name"].get<std::string>() + " test split";
    q.grid = 0;
    q.checkpoint = o.checkpoint;
    q.device = o.device;
    q.seed = o.seed;
    if (report) report("test NLL on " + std::to_string(test.size(0)) + " points (dopri5, exact divergence) ...");
    const LikelihoodSummary nll = run.likelihood(q);
    json metrics = {{"nll", nll.result["nll"]},
                    {"nll_stderr", nll.result["nll_stderr"]},
                    {"nll_uniform", m->log_volume()},
                    {"n", test.size(0)},
                    {"nfe", nll.result["nfe"]},
                    {"data", q.data_label},
                    {"manifold", m->spec()}};
    // The classical baseline on the torus: a mixture of 16 von Mises products fitted (EM, 200 rounds)
    // to the training split, scored on the same test points.
    if (m->name() == "torus" && data.value("kind", std::string()) != "checkerboard") {
      at::Generator fit_gen = at::make_generator<at::CPUGeneratorImpl>(data.value("split_seed", uint64_t{0}));
      const VonMisesMixture vm = fit_von_mises_mixture(split(data, 0), 16, 200, fit_gen);
      metrics["nll_von_mises_mixture"] = -vm.log_density(test).mean().item<double>();
    }
    // A fitted source's own NLL on the same points: what the flow adds to it.
    if (auto v = source_mixture_of(data)) metrics["nll_source_mixture"] = -v->log_density(test).mean().item<double>();
    // Samples stay on the manifold (Euler, 100 steps, projected).
    SampleOptions so;
    so.n = std::min<int64_t>(2000, std::max<int64_t>(o.n, 100));
    so.solver = "euler";
    so.steps = 100;
    so.seed = o.seed;
    so.checkpoint = o.checkpoint;
    so.device = o.device;
    const SampleResult samples = run.sample(so);
    metrics["samples_max_off_manifold"] = m->distance_from_manifold(samples.x.to(at::kDouble)).max().item<double>();
    // Density map: log p on a grid (equirectangular for the sphere, the angle square for the torus)
    // beside a histogram of the data.
    if ((m->name() == "sphere" && m->coordinates() == 3) || (m->name() == "torus" && m->coordinates() == 2)) {
      const bool sphere = m->name() == "sphere";
      const int64_t cols = sphere ? 90 : 60, rows = sphere ? 45 : 60;
      const double x_lo = sphere ? -180 : -M_PI, x_hi = sphere ? 180 : M_PI, y_lo = sphere ? -90 : -M_PI, y_hi = sphere ? 90 : M_PI;
      at::Tensor cx = at::linspace(x_lo, x_hi, cols + 1, at::kDouble).slice(0, 0, cols) + (x_hi - x_lo) / (2.0 * cols);
      at::Tensor cy = at::linspace(y_lo, y_hi, rows + 1, at::kDouble).slice(0, 0, rows) + (y_hi - y_lo) / (2.0 * rows);
      at::Tensor gx = cx.unsqueeze(0).expand({rows, cols}).reshape(-1), gy = cy.unsqueeze(1).expand({rows, cols}).reshape(-1);
      at::Tensor grid_points;
      if (sphere) {
        grid_points = lat_lon_to_unit_vectors(at::stack({gy, gx}, 1));
      } else {
        grid_points = at::stack({gx, gy}, 1);
      }
      LikelihoodRequest g = q;
      g.points = grid_points.to(at::kFloat);
      g.atol = g.rtol = 1e-3;
      g.data_label = "grid";
      at::Tensor log_p = run.likelihood(g).log_prob.reshape({rows, cols});
      at::Tensor reference = data.value("kind", std::string()) == "checkerboard" ? held_out(data, 20000, gen) : all_points(data);
      at::Tensor coords = sphere ? unit_vectors_to_lat_lon(reference).flip({1}) : reference.to(at::kDouble);
      at::Tensor ix = ((coords.select(1, 0) - x_lo) / (x_hi - x_lo) * cols).floor().clamp(0, cols - 1).to(at::kLong);
      at::Tensor iy = ((coords.select(1, 1) - y_lo) / (y_hi - y_lo) * rows).floor().clamp(0, rows - 1).to(at::kLong);
      at::Tensor counts = at::bincount(iy * cols + ix, {}, rows * cols).to(at::kDouble).reshape({rows, cols});
      io::PlotStyle style;
      style.width = sphere ? 720 : 480;
      style.height = sphere ? 380 : 480;
      const std::string axes = sphere ? " (longitude, latitude)" : data.value("kind", std::string()) == "proteins" ? " (phi, psi)" : " (angle 1, angle 2)";
      io::write_heatmaps_png(run.dir() + "/density.png",
                             {{log_p, x_lo, x_hi, y_lo, y_hi, 0, 0, "model log p" + axes},
                              {at::log1p(counts), x_lo, x_hi, y_lo, y_hi, 0, 0, "data: log(1 + count)" + axes}},
                             style);
      metrics["density_map"] = run.dir() + "/density.png";
    }
    return metrics;
  }

 private:
  static constexpr double kTolerance = 1e-4;

  // --source vmf-mixture:K: a mixture of K von Mises-Fisher distributions fitted by EM (200 rounds,
  // seeded by the split seed) to the training split only, kept in the run's data description so that
  // sampling and likelihoods rebuild the same source; its own NLL on the validation split is kept
  // beside it (the figure for choosing K without the test split).
  static void fit_source_mixture(json& d, const std::string& source) {
    const std::string count = source.substr(std::string("vmf-mixture:").size());
    int64_t k = 0;
    if (!count.empty() && count.size() <= 4 && std::all_of(count.begin(), count.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      k = std::stoll(count);
    }
    if (k < 1 || k > 4096) throw std::invalid_argument("--source '" + source + "': expected vmf-mixture:K with K a whole number in [1, 4096]");
    if (!d.contains("file")) throw std::invalid_argument("--source " + source + " is fitted to a data set's training split; --data " + d["name"].get<std::string>() + " has none");
    const json& spec = d["manifold"];
    if (spec.value("type", std::string()) != "sphere" || spec.value("dim", int64_t{0}) != 2) {
      throw std::invalid_argument("--source " + source + ": the von Mises-Fisher mixture is a source on the sphere S^2, not on " + spec.dump());
    }
    at::Tensor train = split(d, 0);
    if (train.size(0) < k) {
      throw std::invalid_argument("--source " + source + ": the training split has " + std::to_string(train.size(0)) + " points, fewer than K");
    }
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(d.value("split_seed", uint64_t{0}));
    const VonMisesFisherMixture fit = fit_von_mises_fisher_mixture(train, k, 200, gen);
    d["source_mixture"] = fit.to_json();
    d["source_mixture"]["train_nll"] = -fit.log_density(train).mean().item<double>();
    d["source_mixture"]["validation_nll"] = -fit.log_density(split(d, 1)).mean().item<double>();
  }

  // The fitted source of a run started with --source vmf-mixture:K (null for the other sources).
  static std::shared_ptr<const VonMisesFisherMixture> source_mixture_of(const json& data) {
    if (data.contains("source_mixture")) return std::make_shared<VonMisesFisherMixture>(VonMisesFisherMixture::from_json(data["source_mixture"]));
    const std::string source = data.value("source", std::string("uniform"));
    if (source.rfind("vmf-mixture:", 0) == 0) {
      throw std::invalid_argument("the run's data description names --source " + source + " but holds no fitted 'source_mixture'");
    }
    return nullptr;
  }

  static std::shared_ptr<const Manifold> manifold_of(const json& data) {
    if (!data.contains("manifold")) throw std::invalid_argument("the run's data description names no manifold: " + data.dump());
    return make_manifold(data["manifold"]);
  }

  // Every point of a finite data set, as read (float64). Reading 427 PDB files takes a second or
  // two: the points are kept per (file, class, modification time) for the process's life.
  static at::Tensor all_points(const json& data) {
    const std::string file = data.at("file").get<std::string>();
    const std::string kind = data.value("kind", std::string());
    std::error_code ec;
    const auto stamp = fs::last_write_time(file, ec).time_since_epoch().count();
    const std::string key = kind + "|" + data.value("class", std::string()) + "|" + file + "|" + std::to_string(stamp);
    static std::mutex mutex;
    static std::map<std::string, at::Tensor> cache;
    at::Tensor x;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (auto it = cache.find(key); it != cache.end()) x = it->second;
    }
    if (!x.defined()) {
      x = kind == "earth"      ? read_earth_csv(file)
          : kind == "proteins" ? protein_angles(file, data.at("class").get<std::string>())
                               : data::load_point_cloud(file).to(at::kDouble);
      std::lock_guard<std::mutex> lock(mutex);
      cache[key] = x;
    }
    if (x.size(0) != data.at("rows").get<int64_t>()) {
      throw std::runtime_error("'" + file + "' now has " + std::to_string(x.size(0)) + " rows; the run was made with " +
                               std::to_string(data.at("rows").get<int64_t>()) + " (the data changed: splits would differ)");
    }
    return x;
  }

  // Split k (0 train, 1 validation, 2 test) of a seeded 80/10/10 permutation.
  static at::Tensor split(const json& data, int k) {
    return data::split_rows(all_points(data), data.value("split_seed", uint64_t{0}), k);
  }
};

}  // namespace

std::shared_ptr<Domain> make_manifold_domain() { return std::make_shared<ManifoldDomain>(); }
bool manifold_domain_accepts(const std::string& data) {
  return data.rfind("earth:", 0) == 0 || data == "sphere-checkerboard" || data == "torus-checkerboard" || data == "proteins" ||
         data.rfind("proteins:", 0) == 0;
}

}  // namespace flowmatch
