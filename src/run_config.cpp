// Run settings (the `train` flags) and their resolution into a run's config.json.

#include <cerrno>
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "flowmatch/coupling.h"
#include "flowmatch/domain.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/objective.h"
#include "flowmatch/particles.h"
#include "flowmatch/paths.h"
#include "flowmatch/prediction.h"
#include "flowmatch/run.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/time_sampling.h"
#include "flowmatch/train.h"

#ifndef FLOWMATCH_VERSION
#define FLOWMATCH_VERSION "0"
#endif

namespace flowmatch {

using json = nlohmann::json;

namespace {

const char* kFashionMnistDefault = "/usr/share/datasets/fashion-mnist";

std::vector<RunSetting> make_settings() {
  using S = RunSetting;
  std::vector<S> s = {
      {"data", "string", "",
       "train on this instead of --target: a point cloud (N, D), .npy or .pt (source: N(0, I) in D dimensions); "
       "'fashion-mnist' (Debian's files, see --data-dir), 'fashion-mnist-captions' (the same with a caption per image: 'a dark small ankle boot'); or an image folder DIR/CLASS/*.png|jpg (labels from the "
       "sub-folders); checkerboard-discrete, kjv or text:FILE (tokens, docs/DISCRETE.md); or any data a registered domain accepts. Images train a class-conditional U-Net with image "
       "defaults (docs/IMAGES.md)", {}},
      {"source", "string", "8gaussians",
       "source distribution (t = 0): a 2-D toy set (as --target) or gaussian; manifold data: uniform (default) or "
       "wrapped-normal (flow_matching notebooks' source), or on a data set on S^2 vmf-mixture:K (K in 1..4096 von Mises-Fisher components fitted by EM to the training split; docs/MANIFOLDS.md)", {}},
      {"target", "string", "moons", "target distribution (t = 1)", data::toy2d_names()},
      {"data-dir", "string", kFashionMnistDefault,
       "images: where the Fashion-MNIST IDX files are; manifold and molecular data: the data folder holding earth/ and molecules/ (default "
       "$FLOWMATCH_DATA_DIR, else ../shared/data)", {}},
      {"system", "string", nullptr,
       "particle data: --data FILE.npy holds configurations of this system, one per row (dw4: 4 particles in 2-D; lj13: 13 in 3-D)",
       {"dw4", "lj13"}},
      {"manifold", "string", nullptr, "data on a manifold: --data FILE.npy holds unit vectors (sphere) or angles in radians (torus)",
       {"sphere", "torus"}},
      {"data-noise", "float", nullptr,
       "manifold data: move each training point by a tangent Gaussian step of this standard deviation (radians) before the "
       "path sees it, a regularizer for small data sets (default 0: none)", {}},
      {"discrete-source", "string", "uniform", "token data: source tokens uniform over the vocabulary, or a mask token",
       {"uniform", "mask"}},
      {"kappa", "string", "poly:2", "token data: the mixture path's kappa_t, linear (t) or poly:n (t^n)", {}},
      {"sequence-length", "int", 32, "text data (kjv, text:FILE): characters per training sequence", {}},
      {"unknown-characters", "string", "space",
       "text data: characters other than letters and spaces become spaces (space; letters are lower-cased), or are named with "
       "their counts and refused (refuse)", {"space", "refuse"}},
      {"image-channels", "int", 0, "image folder: convert to 1 (grey) or 3 (RGB) channels (0: as the first image)", {}},
      {"label-dropout", "float", 0.1, "images: probability of training on the 'no class' label (classifier-free guidance)", {}},
      {"autoencoder", "string", "", "images: train the flow in the latent space of this autoencoder folder ('flowmatch autoencoder train'); "
       "samples are decoded into images", {}},
      {"model", "string", nullptr, "network type (default: the data's: mlp for points, unet for images, manifold-mlp on manifolds, discrete-mlp on the discrete checkerboard, transformer for text, egnn for molecules; also dit and mmdit for images)", {}},
      {"model-option", "strings", json::array(), "a network option KEY=VALUE (repeatable; also a [model] section in --config)", {}},
      {"width", "int", nullptr, "mlp: hidden width (default 64); transformer, dit: model width (default 256)", {}},
      {"depth", "int", nullptr, "mlp: hidden layers (default 3); transformer: blocks (default 4); dit: blocks (default 6)", {}},
      {"activation", "string", nullptr, "mlp: selu, silu, relu or gelu (default selu)", {}},
      {"time-encoding", "string", nullptr, "mlp: plain (t as a feature) or sinusoidal (default plain)", {}},
      {"time-features", "int", nullptr, "mlp: sinusoidal time features, even (default 16)", {}},
      {"fourier-features", "int", nullptr,
       "manifold-mlp: random Fourier features of the network's input, sin and cos of n frequencies (default 0: none; docs/MANIFOLDS.md)", {}},
      {"fourier-scale", "float", nullptr, "manifold-mlp: standard deviation of those frequencies (default 4)", {}},
      {"channels", "int", nullptr, "unet: channels at the first level (default 32)", {}},
      {"channel-mult", "ints", nullptr, "unet: channel multiplier per level, the resolution halves between levels (default 1,2,2, cut to the levels the image size allows)", {}},
      {"blocks", "int", nullptr, "unet: residual blocks per level (default 1)", {}},
      {"heads", "int", nullptr, "unet, transformer, dit: attention heads (default 4)", {}},
      {"dropout", "float", nullptr,
       "unet: dropout in the residual blocks; mlp, manifold-mlp: dropout after each hidden activation, in training only (default 0)", {}},
      {"no-attention", "bool", nullptr, "unet: no self-attention at the lowest resolution", {}},
      {"steps", "int", 20000, "optimisation steps in total", {}, false},
      {"batch", "int", 256, "batch size (per process when data-parallel)", {}},
      {"lr", "float", 1e-3, "learning rate", {}},
      {"path", "string", "condot",
       "probability path (scheduler): condot, polynomial, cosine, vp, linear-vp, ve, or DDPM's discrete chain ddpm-linear "
       "(beta 1e-4..0.02) or ddpm-cosine", path_names()},
      {"path-noise", "string", "constant", "interpolant noise: none, constant (I-CFM) or brownian-bridge (SB-CFM)",
       {"none", "constant", "brownian-bridge"}},
      {"sigma", "float", nullptr,
       "scale of the interpolant noise (default 0.1 on condot, 0 on other paths or when --predict is not velocity, 1 with "
       "--coupling schrodinger-bridge)", {}},
      {"sigma-min", "float", 0.0, "condot: sigma_min of Lipman et al.'s path", {}},
      {"exponent", "float", 2.0, "polynomial: alpha = t^n", {}},
      {"beta-min", "float", 0.1, "vp: beta_min", {}},
      {"beta-max", "float", 20.0, "vp: beta_max", {}},
      {"ve-sigma-min", "float", 0.01, "ve: sigma at t = 1", {}},
      {"ve-sigma-max", "float", 30.0, "ve: sigma at t = 0", {}},
      {"ddpm-steps", "int", 1000, "ddpm-linear, ddpm-cosine: steps N of the chain (step n is t = 1 - n/N); also N of --time-sampling discrete", {}},
      {"predict", "string", "velocity", "what the network predicts: velocity, data, noise or score", prediction_target_names()},
      {"objective", "string", "regression",
       "training objective (registered objectives; token data: generalized-kl, cross-entropy, or autoregressive for the causal-transformer baseline)", {}},
      {"time-sampling", "string", "uniform",
       "how t is drawn: uniform, logit-normal or mode (SD3), discrete (t = 1 - n/N, n uniform in 1..N = --ddpm-steps: DDPM's training)",
       time_distribution_names()},
      {"logit-location", "float", 0.0, "logit-normal: mean of logit(t)", {}},
      {"logit-scale", "float", 1.0, "logit-normal: standard deviation of logit(t)", {}},
      {"mode-scale", "float", 1.29, "mode: scale s in [-1, 1.75]", {}},
      {"time-max", "float", 1.0, "t is drawn in [0, time-max] (token data: 0.999, where the generalized KL is finite)", {}},
      {"loss-weighting", "string", "none", "per-sample loss weight w(t): none, logit-normal (its density) or sigma-squared",
       {"none", "logit-normal", "sigma-squared"}},
      {"coupling", "string", "exact-ot",
       "pairing of noise and data: independent (I-CFM), exact-ot (OT-CFM), sinkhorn (entropic OT), schrodinger-bridge "
       "(SB-CFM: entropic OT with reg 2 sigma^2 and Brownian-bridge path noise, sigma 1 by default), equivariant-ot (particle data: "
       "each pair aligned by permutation and rotation, then exact OT; Klein et al. 2023)", coupling_names()},
      {"ot-reg", "float", nullptr, "sinkhorn: entropic regularization in squared data units (default 0.5)", {}},
      {"ot-iterations", "int", 2000, "sinkhorn, schrodinger-bridge: most Sinkhorn iterations per batch", {}},
      {"optimizer", "string", "adam", "adam or adamw", {"adam", "adamw"}},
      {"weight-decay", "float", 0.0, "weight decay", {}},
      {"grad-clip", "float", 0.0, "clip the gradient norm to this (0: off)", {}},
      {"autocast", "string", "off",
       "mixed precision: off, or bf16 (the forward pass and loss under autocast to bfloat16: matrix products and convolutions "
       "in bf16, reductions in float32; weights, gradients and optimizer state stay float32)", {"off", "bf16"}},
      {"ema", "float", 0.0, "EMA decay of the weights used for sampling (0: off)", {}},
      {"lr-schedule", "string", "constant", "constant or cosine", {"constant", "cosine"}},
      {"warmup", "int", 0, "linear warm-up steps", {}},
      {"min-lr-ratio", "float", 0.0, "final lr / lr for the cosine schedule", {}},
      {"seed", "int", 0, "random seed (weights, data, times, noise)", {}},
      {"split-seed", "int", nullptr,
       "finite data sets split 80/10/10 (Earth, proteins, files on a manifold, molecules): the split's seed (default: --seed); "
       "runs that share it and differ in --seed have the same test points, so their densities can be averaged (an ensemble)", {}},
      {"log-every", "int", 100, "write a metrics.jsonl line every N steps", {}, false},
      {"checkpoint-every", "int", 1000, "checkpoint every N steps (0: only at the end)", {}, false},
      {"keep", "int", 3, "newest checkpoints to keep", {}, false},
      {"validate", "string", "off",
       "nll: at every checkpoint, the NLL of the validation split (the likelihood of the sampling weights, Dopri5, exact "
       "divergence) goes into metrics.jsonl, and the best checkpoint so far is kept as checkpoints/best.ckpt (use it with "
       "--checkpoint best); data sets with a validation split (Earth, proteins, point files on a manifold, ...)",
       {"off", "nll"}, false},
      {"validate-tol", "float", 1e-4, "--validate nll: Dopri5's atol and rtol (the RMS error over the batch)", {}, false},
  };
  return s;
}

const std::vector<std::string> kModelOptionSettings = {"width",         "depth",           "activation",    "time-encoding",
                                                       "time-features", "fourier-features", "fourier-scale", "channels",
                                                       "channel-mult",  "blocks",          "heads",         "dropout",
                                                       "no-attention"};

std::string canonical(std::string key) {
  for (char& c : key)
    if (c == '_') c = '-';
  return key;
}

const RunSetting* find_setting(const std::string& name) {
  for (const auto& s : run_settings())
    if (s.name == name) return &s;
  return nullptr;
}

// Checks a value's kind (and choices, and the ranges every setting shares) and returns it normalized.
json check_value(const RunSetting& s, const json& value) {
  auto bad = [&](const std::string& expected) {
    throw std::invalid_argument("--" + s.name + " " + value.dump() + ": expected " + expected);
  };
  if (s.kind == "string") {
    if (!value.is_string()) bad("a string");
    if (!s.choices.empty() && std::find(s.choices.begin(), s.choices.end(), value.get<std::string>()) == s.choices.end()) {
      std::string list;
      for (const auto& c : s.choices) list += (list.empty() ? "" : ", ") + c;
      bad("one of " + list);
    }
  } else if (s.kind == "int") {
    if (!value.is_number_integer()) bad("an integer");
  } else if (s.kind == "float") {
    if (!value.is_number()) bad("a number");
    if (!std::isfinite(value.get<double>())) bad("a finite number");
    return value.get<double>();
  } else if (s.kind == "bool") {
    if (!value.is_boolean()) bad("true or false");
  } else if (s.kind == "ints") {
    if (!value.is_array()) bad("a list of integers");
    for (const auto& v : value)
      if (!v.is_number_integer()) bad("a list of integers");
  } else if (s.kind == "strings") {
    if (!value.is_array()) bad("a list of strings");
    for (const auto& v : value)
      if (!v.is_string()) bad("a list of strings");
  }
  return value;
}

void require(bool ok, const std::string& setting, const json& value, const std::string& expected) {
  if (!ok) throw std::invalid_argument("--" + setting + " " + value.dump() + ": expected " + expected);
}

// Value ranges of the settings whose kind alone does not say enough.
void check_ranges(const json& s) {
  for (const char* key : {"steps", "batch", "log-every", "keep", "ot-iterations"}) {
    require(s[key].get<int64_t>() >= 1, key, s[key], ">= 1");
  }
  for (const char* key : {"checkpoint-every", "warmup"}) require(s[key].get<int64_t>() >= 0, key, s[key], ">= 0");
  require(s["lr"].get<double>() > 0, "lr", s["lr"], "> 0");
  for (const char* key : {"weight-decay", "grad-clip"}) require(s[key].get<double>() >= 0, key, s[key], ">= 0");
  require(s["ema"].get<double>() >= 0 && s["ema"].get<double>() < 1, "ema", s["ema"], "in [0, 1)");
  require(s["min-lr-ratio"].get<double>() >= 0 && s["min-lr-ratio"].get<double>() <= 1, "min-lr-ratio", s["min-lr-ratio"], "in [0, 1]");
  require(s["label-dropout"].get<double>() >= 0 && s["label-dropout"].get<double>() <= 1, "label-dropout", s["label-dropout"], "in [0, 1]");
  require(s["seed"].get<int64_t>() >= 0, "seed", s["seed"], "an integer >= 0");
  require(s["validate-tol"].get<double>() > 0 && s["validate-tol"].get<double>() < 1, "validate-tol", s["validate-tol"], "in (0, 1)");
  if (!s["sigma"].is_null()) require(s["sigma"].get<double>() >= 0, "sigma", s["sigma"], ">= 0");
  if (!s["ot-reg"].is_null()) require(s["ot-reg"].get<double>() > 0, "ot-reg", s["ot-reg"], "> 0");
  const int64_t channels = s["image-channels"].get<int64_t>();
  require(channels == 0 || channels == 1 || channels == 3, "image-channels", s["image-channels"], "0, 1 or 3");
}

// σ of the interpolant noise: as given, else TorchCFM's defaults (1 for the Schrödinger bridge, 0.1 on
// condot, 0 on the other paths) when the network predicts the velocity, and 0 for the other targets
// (which need a path without interpolant noise).
double default_sigma(const json& s) {
  if (!s["sigma"].is_null()) return s["sigma"].get<double>();
  if (s["coupling"] == "schrodinger-bridge") return 1.0;
  if (s["predict"] != "velocity") return 0.0;
  return s["path"] == "condot" ? 0.1 : 0.0;
}

// The affine path of the settings, or on a manifold the geodesic path with the same scheduler as κ_t.
json path_spec(const json& s, const std::shared_ptr<const Manifold>& space) {
  const std::string path = s["path"];
  json scheduler = {{"type", path}};
  if (path == "condot") scheduler["sigma_min"] = s["sigma-min"];
  if (path == "polynomial") scheduler["exponent"] = s["exponent"];
  if (path == "vp") scheduler["beta_min"] = s["beta-min"], scheduler["beta_max"] = s["beta-max"];
  if (path == "ve") scheduler["sigma_min"] = s["ve-sigma-min"], scheduler["sigma_max"] = s["ve-sigma-max"];
  if (path.rfind("ddpm-", 0) == 0) scheduler["steps"] = s["ddpm-steps"];
  try {
    auto scheduler_object = make_scheduler(scheduler);  // checks the parameters
    if (space) return GeodesicPath(space, scheduler_object).spec();
    return AffinePath(scheduler_object, AffinePathOptions()
                                            .noise(interpolant_noise_from_string(s["path-noise"].get<std::string>()))
                                            .noise_scale(default_sigma(s)))
        .spec();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--path " + path + ": " + e.what());
  }
}

json coupling_spec(const json& s, const json& data) {
  const std::string coupling = s["coupling"];
  if (coupling == "equivariant-ot") {
    if (!data.contains("particles") || !data.contains("particle_dim")) {
      throw std::invalid_argument("--coupling equivariant-ot needs particle data (molecules:dw4, molecules:lj13, or --system)");
    }
    return EquivariantOTCoupling(data["particles"].get<int64_t>(), data["particle_dim"].get<int64_t>()).spec();
  }
  SinkhornOptions sinkhorn = SinkhornOptions().max_iterations(s["ot-iterations"].get<int64_t>());
  if (coupling == "sinkhorn") return SinkhornCoupling(sinkhorn.reg(s["ot-reg"].is_null() ? 0.5 : s["ot-reg"].get<double>())).spec();
  if (coupling == "schrodinger-bridge") return SchrodingerBridgeCoupling(default_sigma(s), sinkhorn).spec();
  return make_coupling(coupling)->spec();
}

json time_sampling_spec(const json& s) {
  const auto options = TimeSamplingOptions()
                           .distribution(time_distribution_from_string(s["time-sampling"].get<std::string>()))
                           .weighting(loss_weighting_from_string(s["loss-weighting"].get<std::string>()))
                           .location(s["logit-location"].get<double>())
                           .scale(s["logit-scale"].get<double>())
                           .mode_scale(s["mode-scale"].get<double>())
                           .max_time(s["time-max"].get<double>())
                           .discrete_steps(s["ddpm-steps"].get<int64_t>());
  validate(options);
  return to_json(options);
}

json model_spec(const json& s, const Domain& domain, const json& data) {
  const std::string type = s["model"].is_null() ? domain.default_model(data) : s["model"].get<std::string>();
  const models::ModelRegistration registration = models::model_registration(type);
  json options = json::object();
  for (const auto& key : kModelOptionSettings)
    if (!s[key].is_null()) options[key] = s[key];
  for (const auto& item : s["model-option"]) {
    const std::string text = item.get<std::string>();
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::invalid_argument("--model-option '" + text + "': expected KEY=VALUE");
    }
    const std::string value = text.substr(eq + 1);
    json parsed = json::parse(value, nullptr, /*allow_exceptions=*/false);
    options[text.substr(0, eq)] = parsed.is_discarded() ? json(value) : parsed;
  }
  const json given_by_data = domain.model_options(data, type);
  for (const auto& [key, value] : given_by_data.items()) options[key] = value;
  return registration.describe(domain.sample_shape(data), domain.num_classes(data), options);
}

}  // namespace

json setting_value_from_text(const RunSetting& s, const std::vector<std::string>& texts) {
  auto number = [&](const std::string& text, bool integer) -> json {
    errno = 0;
    char* end = nullptr;
    if (integer) {
      const long long v = std::strtoll(text.c_str(), &end, 10);
      if (end == text.c_str() || *end != '\0') throw std::invalid_argument("--" + s.name + " '" + text + "': expected an integer");
      if (errno == ERANGE) throw std::invalid_argument("--" + s.name + " '" + text + "': out of range for a 64-bit integer");
      return static_cast<int64_t>(v);
    }
    const double v = std::strtod(text.c_str(), &end);
    if (end == text.c_str() || *end != '\0') throw std::invalid_argument("--" + s.name + " '" + text + "': expected a number");
    if (errno == ERANGE || !std::isfinite(v)) throw std::invalid_argument("--" + s.name + " '" + text + "': expected a finite number");
    return v;
  };
  if (s.kind == "int") return number(texts.at(0), true);
  if (s.kind == "float") return number(texts.at(0), false);
  if (s.kind == "bool") return true;
  if (s.kind == "ints") {
    json list = json::array();
    for (const auto& t : texts) list.push_back(number(t, true));
    return list;
  }
  if (s.kind == "strings") return texts;
  return texts.at(0);
}


const std::vector<RunSetting>& run_settings() {
  static const std::vector<RunSetting> settings = make_settings();
  return settings;
}

json make_run_config(const json& given_settings) {
  if (!given_settings.is_object()) throw std::invalid_argument("run settings must be an object, got " + given_settings.dump());
  json given = json::object();
  for (const auto& [key, value] : given_settings.items()) {
    const std::string name = canonical(key);
    const RunSetting* setting = find_setting(name);
    if (!setting) throw std::invalid_argument("unknown setting '" + key + "' (see 'flowmatch train --help')");
    given[name] = check_value(*setting, value);
  }
  auto is_given = [&](const std::string& name) { return given.contains(name); };
  const std::string data_setting = given.value("data", std::string());
  if (!data_setting.empty() && is_given("target")) throw std::invalid_argument("--target excludes --data: give one of them");
  std::shared_ptr<Domain> domain;
  for (const auto& name : domain_names()) {
    if (auto candidate = domain_named(name); candidate->claims(given)) domain = candidate;
  }
  if (!domain) domain = domain_for_data(data_setting);

  // Defaults: the table's, then the domain's, then what was given.
  json s = json::object();
  for (const auto& setting : run_settings()) s[setting.name] = setting.default_value;
  const json domain_defaults = domain->default_settings();
  for (const auto& [key, value] : domain_defaults.items()) s[canonical(key)] = value;
  for (const auto& [key, value] : given.items()) s[key] = value;
  check_ranges(s);

  // A setting given where it does not apply is a mistake worth naming.
  for (const auto& [flag, owner] : std::vector<std::pair<std::string, std::string>>{
           {"sigma-min", "condot"}, {"exponent", "polynomial"}, {"beta-min", "vp"}, {"beta-max", "vp"},
           {"ve-sigma-min", "ve"}, {"ve-sigma-max", "ve"}}) {
    if (is_given(flag) && s["path"] != owner) {
      throw std::invalid_argument("--" + flag + " applies to --path " + owner + ", not --path " + s["path"].get<std::string>());
    }
  }
  for (const auto& name : domain_names()) {
    if (name == domain->name()) continue;
    for (const auto& own : domain_named(name)->own_settings()) {
      if (is_given(own)) throw std::invalid_argument("--" + own + " applies to " + name + " data, not to " + domain->name() + " data");
    }
  }
  const std::string coupling = s["coupling"];
  const bool entropic = coupling == "sinkhorn" || coupling == "schrodinger-bridge";
  if (!entropic && (is_given("ot-reg") || is_given("ot-iterations"))) {
    throw std::invalid_argument(std::string(is_given("ot-reg") ? "--ot-reg" : "--ot-iterations") +
                                " applies to --coupling sinkhorn or schrodinger-bridge, not " + coupling);
  }
  if (coupling == "schrodinger-bridge") {
    if (is_given("ot-reg")) {
      throw std::invalid_argument("--ot-reg does not apply to --coupling schrodinger-bridge: its regularization is 2 sigma^2 (set --sigma)");
    }
    if (is_given("path-noise") && s["path-noise"] != "brownian-bridge") {
      throw std::invalid_argument("--coupling schrodinger-bridge uses --path-noise brownian-bridge, not " + s["path-noise"].get<std::string>());
    }
    if (!(default_sigma(s) > 0)) throw std::invalid_argument("--coupling schrodinger-bridge needs --sigma > 0");
    s["path-noise"] = "brownian-bridge";
  }

  if (!s["split-seed"].is_null()) require(s["split-seed"].get<int64_t>() >= 0, "split-seed", s["split-seed"], ">= 0");
  json data = domain->describe_data(s, [&] {
    std::vector<std::string> names;
    for (const auto& [key, value] : given.items()) names.push_back(key);
    return names;
  }());
  if (is_given("split-seed") && !data.contains("split_seed")) {
    const std::string what = s["data"].get<std::string>().empty() ? "--target " + s["target"].get<std::string>() : "--data " + s["data"].get<std::string>();
    throw std::invalid_argument("--split-seed applies to finite data sets split 80/10/10 (Earth, proteins, molecules), not to " + what);
  }
  data["domain"] = domain->name();
  const std::shared_ptr<const Manifold> space = domain->manifold(data);
  if (space) {
    // Geodesic paths carry no interpolant noise and regress the velocity only.
    for (const char* flag : {"sigma", "path-noise"}) {
      if (is_given(flag)) throw std::invalid_argument(std::string("--") + flag + " does not apply to data on a manifold (geodesic paths are noiseless)");
    }
    if (s["coupling"] == "schrodinger-bridge") {
      throw std::invalid_argument("--coupling schrodinger-bridge does not apply to data on a manifold (its path is noisy); use exact-ot or sinkhorn");
    }
    if (s["predict"] != "velocity") {
      throw std::invalid_argument("--predict " + s["predict"].get<std::string>() + ": data on a manifold train the velocity only");
    }
  }
  json path = domain->path_spec(s, data);
  if (path.is_null()) path = path_spec(s, space);
  json config = {{"flowmatch_version", FLOWMATCH_VERSION},
                 {"data", data},
                 {"model", model_spec(s, *domain, data)},
                 {"path", path},
                 {"prediction", s["predict"]},
                 {"objective", make_objective(json{{"type", s["objective"]}, {"path", path}})->spec()},
                 {"time_sampling", time_sampling_spec(s)},
                 {"coupling", coupling_spec(s, data)},
                 {"training",
                  {{"steps", s["steps"]},
                   {"batch", s["batch"]},
                   {"lr", s["lr"]},
                   {"optimizer", s["optimizer"]},
                   {"weight_decay", s["weight-decay"]},
                   {"grad_clip", s["grad-clip"]},
                   {"autocast", s["autocast"]},
                   {"ema", s["ema"]},
                   {"lr_schedule", s["lr-schedule"]},
                   {"warmup", s["warmup"]},
                   {"min_lr_ratio", s["min-lr-ratio"]},
                   {"seed", s["seed"]},
                   {"log_every", s["log-every"]},
                   {"checkpoint_every", s["checkpoint-every"]},
                   {"keep", s["keep"]}}},
                 {"settings", s}};
  if (s["validate"] == "nll") config["validation"] = make_validation_spec(config, s["validate-tol"].get<double>());
  try {
    check_prediction_target(*make_path(config["path"]), prediction_target_from_string(s["predict"].get<std::string>()));
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(e.what()) + ": pass --sigma 0 (or --path-noise none)");
  }
  return config;
}

json make_validation_spec(const json& config, double tol) {
  if (!(tol > 0 && tol < 1)) throw std::invalid_argument("--validate-tol " + std::to_string(tol) + ": expected in (0, 1)");
  const json& data = config.at("data");
  const auto domain = domain_of(data);
  try {
    (void)domain->validation_split(data);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--validate nll: " + std::string(e.what()));
  }
  if (config.at("path").value("type", std::string()) != "mixture-discrete" && !domain->source_log_density(data)) {
    throw std::invalid_argument("--validate nll needs a source with a known density; this run's is '" +
                                data.value("source", std::string("?")) + "'");
  }
  return {{"metric", "nll"}, {"split", "validation"}, {"solver", "dopri5"}, {"atol", tol}, {"rtol", tol}, {"error_norm", "batch"}};
}

}  // namespace flowmatch
