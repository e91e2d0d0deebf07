#include "flowmatch/compare.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>

#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/solvers.h"
#include "timing.h"

namespace flowmatch {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

using detail::seconds_since;

std::string format(double value, const char* spec = "%.4g") {
  if (!std::isfinite(value)) return "—";
  char text[64];
  std::snprintf(text, sizeof text, spec, value);
  return text;
}

// The cells of one sampler: (steps or tolerance, label) per NFE budget it can spend.
struct Cell {
  int64_t steps = 0;
  double tolerance = 0;
};

std::vector<Cell> cells_of(const SolverInfo& info, const ComparisonOptions& o) {
  std::vector<Cell> cells;
  if (info.adaptive) {
    for (double tol : o.tolerances) cells.push_back({0, tol});
    return cells;
  }
  for (int64_t nfe : o.nfe) {
    if (nfe % info.evaluations_per_step == 0) cells.push_back({nfe / info.evaluations_per_step, 0});
  }
  return cells;
}

void check_options(const json& settings, const ComparisonOptions& o) {
  if (o.variants.empty()) throw std::invalid_argument("compare: no variants given");
  for (const auto& v : o.variants) comparison_variant(v);
  if (o.samplers.empty()) throw std::invalid_argument("compare: no samplers given");
  for (const auto& s : o.samplers) {
    const SolverInfo info = solver_info(s);
    if (info.discrete) throw std::invalid_argument("compare: sampler " + s + " samples tokens; the comparison is for continuous data");
  }
  if (o.nfe.empty()) throw std::invalid_argument("compare: no NFE budgets given");
  for (int64_t nfe : o.nfe) {
    if (nfe < 1 || nfe > 100000) throw std::invalid_argument("compare: NFE budgets must be in [1, 100000], got " + std::to_string(nfe));
  }
  for (double tol : o.tolerances) {
    if (!(tol > 0 && tol < 1)) throw std::invalid_argument("compare: tolerances must be in (0, 1), got " + std::to_string(tol));
  }
  if (o.n < 2) throw std::invalid_argument("compare: n must be >= 2, got " + std::to_string(o.n));
  for (const auto& key : comparison_fixed_settings()) {
    for (const std::string& form : {key, [&] {
                                      std::string k = key;
                                      std::replace(k.begin(), k.end(), '-', '_');
                                      return k;
                                    }()}) {
      if (settings.contains(form)) {
        std::string fixed;
        for (const auto& v : comparison_variants()) {
          if (v.settings.contains(key)) fixed += (fixed.empty() ? "" : ", ") + v.name + ": " + v.settings[key].dump();
        }
        throw std::invalid_argument("compare: --" + key + " is fixed by the variants (" + fixed + ")");
      }
    }
  }
}

json merged(json base, const json& over) {
  for (auto it = over.begin(); it != over.end(); ++it) base[it.key()] = it.value();
  return base;
}

const std::vector<io::Color>& palette() {
  static const std::vector<io::Color> colors = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},
                                                {214, 39, 40},  {148, 103, 189}, {140, 86, 75}, {227, 119, 194}};
  return colors;
}

// compare.md: per variant a table of samplers × NFE budgets (the primary measure), then the best of
// each variant per budget.
std::string markdown(const json& result, const ComparisonOptions& o) {
  const json& rows = result["rows"];
  const std::string primary = result.value("primary", std::string("quality"));
  std::ostringstream md;
  md << "# Flow matching vs diffusion: " << primary << " (lower is better) against NFE\n\n";
  md << "Settings: `" << result["settings"].dump() << "`; " << o.n << " samples per cell, seed " << o.seed << ".";
  if (result.contains("floor")) md << " Floor (two reference draws): " << format(result["floor"].get<double>()) << ".";
  md << "\n\n";
  std::vector<int64_t> budgets = o.nfe;
  for (const auto& variant : o.variants) {
    md << "## " << variant << "\n\n" << comparison_variant(variant).description << "; trained in "
       << format(result["variants"][variant].value("train_seconds", 0.0), "%.1f") << " s.\n\n| sampler |";
    for (int64_t nfe : budgets) md << " " << nfe << " |";
    md << " adaptive (tolerance: NFE → " << primary << ") |\n|---|";
    for (size_t i = 0; i <= budgets.size(); ++i) md << "---|";
    md << "\n";
    for (const auto& sampler : o.samplers) {
      md << "| " << sampler << " |";
      std::string adaptive;
      std::map<int64_t, double> by_nfe;
      for (const auto& row : rows) {
        if (row["variant"] != variant || row["sampler"] != sampler) continue;
        const double q = row[primary].is_number() ? row[primary].get<double>() : std::numeric_limits<double>::quiet_NaN();
        if (row.contains("tolerance")) {
          adaptive += (adaptive.empty() ? "" : ", ") + format(row["tolerance"].get<double>(), "%.0e") + ": " +
                      std::to_string(row["nfe"].get<int64_t>()) + " → " + format(q);
        } else {
          by_nfe[row["budget"].get<int64_t>()] = q;
        }
      }
      for (int64_t nfe : budgets) md << " " << (by_nfe.count(nfe) ? format(by_nfe[nfe]) : std::string("")) << " |";
      md << " " << adaptive << " |\n";
    }
    md << "\n";
  }
  md << "## Best sampler per budget\n\n| variant |";
  for (int64_t nfe : budgets) md << " " << nfe << " |";
  md << "\n|---|";
  for (size_t i = 0; i < budgets.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& variant : o.variants) {
    md << "| " << variant << " |";
    for (int64_t nfe : budgets) {
      double best = std::numeric_limits<double>::infinity();
      std::string who;
      for (const auto& row : rows) {
        if (row["variant"] != variant || row.contains("tolerance") || row["budget"] != nfe || !row[primary].is_number()) continue;
        if (row[primary].get<double>() < best) best = row[primary].get<double>(), who = row["sampler"].get<std::string>();
      }
      md << " " << (who.empty() ? std::string("") : format(best) + " (" + who + ")") << " |";
    }
    md << "\n";
  }
  return md.str();
}

void write_plots(const json& result, const ComparisonOptions& o, const std::string& out) {
  const json& rows = result["rows"];
  const std::string primary = result.value("primary", std::string("quality"));
  std::vector<io::LineSeries> best_lines;
  size_t vi = 0;
  for (const auto& variant : o.variants) {
    std::vector<io::LineSeries> lines;
    size_t si = 0;
    std::map<int64_t, double> best;
    for (const auto& sampler : o.samplers) {
      io::LineSeries line{{}, {}, palette()[si++ % palette().size()], sampler};
      std::vector<std::pair<double, double>> points;
      for (const auto& row : rows) {
        if (row["variant"] != variant || row["sampler"] != sampler || !row[primary].is_number()) continue;
        const double q = row[primary].get<double>();
        points.emplace_back(static_cast<double>(row["nfe"].get<int64_t>()), q);
        if (!row.contains("tolerance")) {
          const int64_t nfe = row["nfe"].get<int64_t>();
          if (!best.count(nfe) || q < best[nfe]) best[nfe] = q;
        }
      }
      std::sort(points.begin(), points.end());
      for (const auto& [x, y] : points) line.x.push_back(x), line.y.push_back(y);
      if (!line.x.empty()) lines.push_back(line);
    }
    io::PlotStyle style;
    style.width = 720;
    style.height = 480;
    style.title = variant + ": " + primary + " vs NFE per sampler";
    if (!lines.empty()) io::write_line_png(out + "/compare-" + variant + ".png", lines, style, /*log_y=*/true, /*log_x=*/true);
    io::LineSeries line{{}, {}, palette()[vi++ % palette().size()], variant};
    for (const auto& [nfe, q] : best) line.x.push_back(static_cast<double>(nfe)), line.y.push_back(q);
    if (!line.x.empty()) best_lines.push_back(line);
  }
  if (result.contains("floor") && result["floor"].is_number() && !o.nfe.empty()) {
    // The same measure between two draws of the reference: what no sampler can beat at this n.
    const auto [lo, hi] = std::minmax_element(o.nfe.begin(), o.nfe.end());
    const double floor = result["floor"].get<double>();
    best_lines.push_back({{static_cast<double>(*lo), static_cast<double>(*hi)}, {floor, floor}, {127, 127, 127}, "floor (reference vs reference)"});
  }
  io::PlotStyle style;
  style.width = 720;
  style.height = 480;
  style.title = primary + " vs NFE: best sampler per training";
  if (!best_lines.empty()) io::write_line_png(out + "/compare.png", best_lines, style, /*log_y=*/true, /*log_x=*/true);
}

}  // namespace

const std::vector<ComparisonVariant>& comparison_variants() {
  static const std::vector<ComparisonVariant> variants = {
      {"ddpm-linear",
       {{"path", "ddpm-linear"}, {"predict", "noise"}, {"time-sampling", "discrete"}, {"coupling", "independent"}},
       "DDPM: epsilon-prediction on the 1000-step chain, linear beta 1e-4..0.02, n uniform in 1..1000"},
      {"ddpm-cosine",
       {{"path", "ddpm-cosine"}, {"predict", "noise"}, {"time-sampling", "discrete"}, {"coupling", "independent"}},
       "DDPM: epsilon-prediction on the 1000-step chain, cosine alpha-bar (Nichol & Dhariwal), n uniform in 1..1000"},
      {"fm-uniform",
       {{"path", "condot"}, {"predict", "velocity"}, {"time-sampling", "uniform"}, {"coupling", "independent"}, {"sigma", 0.0}},
       "flow matching: velocity on the straight path (CondOT, sigma 0), t uniform"},
      {"fm-logit-normal",
       {{"path", "condot"}, {"predict", "velocity"}, {"time-sampling", "logit-normal"}, {"coupling", "independent"}, {"sigma", 0.0}},
       "flow matching: velocity on the straight path (CondOT, sigma 0), logit(t) ~ N(0, 1) (SD3)"},
  };
  return variants;
}

const ComparisonVariant& comparison_variant(const std::string& name) {
  std::string names;
  for (const auto& v : comparison_variants()) {
    if (v.name == name) return v;
    names += (names.empty() ? "" : ", ") + v.name;
  }
  throw std::invalid_argument("unknown comparison variant '" + name + "' (expected: " + names + ")");
}

std::vector<std::string> comparison_fixed_settings() { return {"path", "predict", "time-sampling", "coupling", "sigma"}; }

json compare_flow_and_diffusion(const json& given, const std::string& out, const ComparisonOptions& o) {
  check_options(given, o);
  // DDPM's chain (and every sampler that adds noise) starts from N(0, I): 2-D toy runs, whose source is
  // 8gaussians by default, start from the Gaussian here.
  json settings = given;
  if (settings.contains("source") && settings["source"] != "gaussian") {
    throw std::invalid_argument("compare: --source " + settings["source"].get<std::string>() +
                                ": diffusion starts from noise, so every variant starts from --source gaussian");
  }
  if (!settings.contains("data")) settings["source"] = "gaussian";
  auto say = [&](const std::string& line) {
    if (o.report) o.report(line);
  };
  json result = {{"settings", settings}, {"n", o.n}, {"seed", o.seed}, {"variants", json::object()}, {"rows", json::array()}};
  for (const auto& name : o.variants) {
    const ComparisonVariant& variant = comparison_variant(name);
    const std::string dir = (fs::path(out) / name).string();
    const bool exists = fs::exists(fs::path(dir) / "config.json");
    Run run = Run::prepare(dir, merged(settings, variant.settings), /*resume=*/exists);
    // The measure first: a missing classifier or a domain without one is said before any training.
    auto quality = run.domain()->sample_quality(run, o.n, o.seed, o.classifier, o.device);
    say(name + ": " + (exists ? "resuming " : "training ") + dir);
    const auto start = std::chrono::steady_clock::now();
    const TrainOutcome outcome = run.train(o.training ? o.training(run) : TrainRunOptions{});
    if (outcome.interrupted()) return {{"interrupted", name}, {"run", dir}};
    auto model = run.model();
    result["variants"][name] = {{"run", dir},
                                {"description", variant.description},
                                {"settings", variant.settings},
                                {"train_seconds", outcome.first_step == outcome.step ? 0.0 : seconds_since(start)},
                                {"parameters", models::parameter_count(*model)}};
    for (const auto& sampler : o.samplers) {
      const SolverInfo info = solver_info(sampler);
      for (const Cell& cell : cells_of(info, o)) {
        SampleOptions so;
        so.n = o.n;
        so.solver = sampler;
        so.steps = cell.steps > 0 ? cell.steps : 100;
        if (cell.tolerance > 0) so.atol = so.rtol = cell.tolerance;
        so.seed = o.seed;
        so.device = o.device;
        so.noise_scale = 1.0;  // ancestral: η = 1, DDPM's sampler
        const auto t0 = std::chrono::steady_clock::now();
        SampleResult samples = run.sample(so);
        const double seconds = seconds_since(t0);
        json row = quality(samples);
        const std::string primary = row["primary"].get<std::string>();
        result["primary"] = primary;
        if (row.contains(primary + "_floor")) result["floor"] = row[primary + "_floor"];
        row["variant"] = name;
        row["sampler"] = sampler;
        row["nfe"] = samples.nfe;
        row["seconds"] = seconds;
        if (cell.tolerance > 0) {
          row["tolerance"] = cell.tolerance;
        } else {
          row["steps"] = cell.steps;
          row["budget"] = cell.steps * info.evaluations_per_step;
        }
        say(name + " " + sampler + (cell.tolerance > 0 ? " tol " + format(cell.tolerance, "%.0e") : " " + std::to_string(cell.steps) + " steps") +
            ": NFE " + std::to_string(samples.nfe) + ", " + primary + " " +
            (row[primary].is_number() ? format(row[primary].get<double>()) : std::string("not finite")));
        result["rows"].push_back(row);
      }
    }
  }
  fs::create_directories(out);  // here, so that a comparison refused before any training leaves nothing
  write_json_file(out + "/compare.json", result);
  io::write_file_atomic(out + "/compare.md", markdown(result, o));
  write_plots(result, o, out);
  return result;
}

}  // namespace flowmatch
