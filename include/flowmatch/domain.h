#pragma once
/// \file
/// A data domain: what a run's data are and everything that depends on it. A domain turns the user's
/// data setting into the description kept in config.json (reading and checking the data then), knows
/// the source (and its log-density where it has one), the training data and its splits, the shape of
/// one sample and its conditioning, what a run samples by default, how samples are pictured, and its
/// evaluation protocol. The built-in domains: `points` (2-D toy sets, point clouds from .npy/.pt)
/// and `images` (Fashion-MNIST, image folders). A new domain is one file with a `register_domain`
/// call; `Run` and the command line find it by the data setting it accepts.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "flowmatch/data/toy2d.h"
#include "flowmatch/manifold.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/solvers.h"

namespace flowmatch {

class Run;
struct FlowMatchingProblem;
struct SampleOptions;
struct SampleResult;
struct EvaluationOptions;

/// A line of progress for the caller to show (the library never prints).
using ReportFunction = std::function<void(const std::string& line)>;

class Domain {
 public:
  virtual ~Domain() = default;
  virtual std::string name() const = 0;
  /// The data description for config.json ("domain" is added by the caller) from the run settings
  /// (every setting, defaults filled in; keys as the train flags: "data", "source", "data-dir", ...);
  /// `given` names those the user gave. Reads the data now, so that a bad file is named before
  /// anything is written; std::invalid_argument for bad settings.
  virtual nlohmann::json describe_data(const nlohmann::json& settings, const std::vector<std::string>& given) const = 0;
  /// Settings this domain defaults differently from the points defaults (e.g. images train 4500 steps).
  virtual nlohmann::json default_settings() const { return nlohmann::json::object(); }
  /// Settings that only make sense here (given elsewhere they are an error naming this domain).
  virtual std::vector<std::string> own_settings() const { return {}; }
  /// True when the settings the user gave (keys as the train flags) make the data this domain's
  /// whatever the data setting says (e.g. --manifold for a .npy of points on a sphere).
  virtual bool claims(const nlohmann::json& /*given*/) const { return false; }
  /// The manifold the data live on (null: Euclidean). A run on a manifold trains on its geodesic path
  /// (the --path scheduler as κ_t), its network is told the manifold (option "manifold"), its
  /// couplings use the squared geodesic cost, and its solvers project onto it.
  virtual std::shared_ptr<const Manifold> manifold(const nlohmann::json& /*data*/) const { return nullptr; }
  /// The path description (config.json "path") when this domain's data need a path of their own
  /// (tokens: the mixture path); null: the affine path of --path (the geodesic one on a manifold).
  virtual nlohmann::json path_spec(const nlohmann::json& /*settings*/, const nlohmann::json& /*data*/) const { return nullptr; }
  /// Options the data give the network of type `model` (e.g. the vocabulary of token data), merged
  /// into the user's model options.
  virtual nlohmann::json model_options(const nlohmann::json& /*data*/, const std::string& /*model*/) const {
    return nlohmann::json::object();
  }
  /// The network type a run on `data` (describe_data's description) gets unless one is named.
  virtual std::string default_model(const nlohmann::json& /*data*/) const { return "mlp"; }
  /// The shape of one sample as the model's description is made from (points: {D}; images: {C, H, W});
  /// samples are stored flattened to (B, prod(shape)).
  virtual std::vector<int64_t> sample_shape(const nlohmann::json& data) const = 0;
  /// What one sample is called in throughput figures ("images" gives images/s in progress lines and
  /// images_per_s in metrics.jsonl); empty: no such figure.
  virtual std::string sample_unit() const { return ""; }
  /// Classes of class-conditional data (0: unconditional).
  virtual int64_t num_classes(const nlohmann::json&) const { return 0; }
  /// The source sampler, and its log-density (null when it has none in closed form).
  virtual data::PointSampler source(const nlohmann::json& data) const = 0;
  virtual std::function<at::Tensor(const at::Tensor&)> source_log_density(const nlohmann::json&) const { return {}; }
  /// Fills in the training data of `problem` (target samplers; source is set by the caller).
  /// `run_dir` resolves paths stored relative to the run.
  virtual void add_training_data(const nlohmann::json& data, const std::string& run_dir, FlowMatchingProblem& problem) const = 0;
  /// Held-out data for likelihoods and evaluations (n rows; for finite data sets the first n of the
  /// test split, else fresh samples from `generator`).
  virtual at::Tensor held_out(const nlohmann::json& data, int64_t n, at::Generator& generator) const = 0;
  /// The validation split of a finite data set (the middle 10 % of its seeded 80/10/10 split), so that
  /// settings are chosen without looking at the test split (`likelihood --split validation`). The
  /// default throws std::invalid_argument: this domain's data have no validation split.
  virtual at::Tensor validation_split(const nlohmann::json& data) const;
  /// How results name n rows of a split ("test" from held_out, "validation" from validation_split;
  /// default: "TARGET (n fresh samples)").
  virtual std::string held_out_label(const nlohmann::json& data, int64_t n, const std::string& /*split*/ = "test") const {
    return data.value("target", std::string("held-out data")) + " (" + std::to_string(n) + " fresh samples)";
  }
  /// Sampling defaults for options left unset (n, solver, steps).
  virtual void complete_sample_options(const nlohmann::json& data, SampleOptions& options) const;
  /// Samples of the flow's state as data, on the CPU: a latent image run decodes them with its
  /// autoencoder; the identity where the flow draws the data themselves. `Run::sample` applies it.
  virtual at::Tensor decode(const nlohmann::json& /*data*/, const at::Tensor& state, const c10::Device& /*device*/) const { return state; }
  /// Extra facts written with samples (e.g. the pixel range of images).
  virtual nlohmann::json sample_info(const nlohmann::json&) const { return nlohmann::json::object(); }
  /// What n samples are conditioned on (classes, ...) for these options.
  virtual models::Conditioning conditioning(const nlohmann::json& data, const SampleOptions& options, int64_t n) const;
  /// Pictures of samples beside `stem` (e.g. STEM.png); returns the files written.
  virtual std::vector<std::string> picture_samples(const Run& run, const SampleResult& samples, const SampleOptions& options,
                                                   const std::string& stem) const = 0;
  /// The domain's evaluation of a run: metrics (also written by the caller to metrics.json) and
  /// pictures in the run folder. `Run::evaluate` resolves options.checkpoint (the latest, or "best")
  /// to a file before the call, and adds "checkpoint" and "step" to the metrics after it.
  virtual nlohmann::json evaluate(const Run& run, const EvaluationOptions& options, const ReportFunction& report) const = 0;
  /// A measure of sample quality for comparing samplers and trainings on the same footing
  /// (`compare_flow_and_diffusion`): the returned function scores samples of `run` against reference
  /// data drawn once (so every call is measured against the same draws), giving {"primary": KEY,
  /// KEY: value, ...} where a lower primary value is better. `n` is the number of samples it expects;
  /// `classifier` is the image domain's evaluation classifier. The default throws
  /// std::invalid_argument: the domain has no such measure.
  virtual std::function<nlohmann::json(const SampleResult&)> sample_quality(const Run& run, int64_t n, uint64_t seed,
                                                                             const std::string& classifier,
                                                                             const c10::Device& device) const;
};

using DomainFactory = std::function<std::shared_ptr<Domain>()>;
/// `accepts(data)` says whether a data setting (train --data; "" for the default toy data) is this
/// domain's. Later registrations are asked first, so a new domain may take over a setting.
void register_domain(const std::string& name, std::function<bool(const std::string& data)> accepts, DomainFactory factory);
std::vector<std::string> domain_names();
/// The domain registered as `name`; std::invalid_argument listing the names when unknown.
std::shared_ptr<Domain> domain_named(const std::string& name);
/// The domain that accepts a data setting; std::invalid_argument naming the setting when none does.
std::shared_ptr<Domain> domain_for_data(const std::string& data);
/// The seed of a finite data set's 80/10/10 split, from resolved run settings: --split-seed when given,
/// else --seed. Domains that split store it as the data description's "split_seed".
nlohmann::json split_seed_setting(const nlohmann::json& settings);
/// The domain of a stored data description (its "domain" key; runs written before domains existed:
/// "images" when it has an image shape, else "points").
std::shared_ptr<Domain> domain_of(const nlohmann::json& data);
/// The folder that data sets are read from unless a run names one (--data-dir): $FLOWMATCH_DATA_DIR when
/// set, else ../shared/data.
std::string default_data_dir();

}  // namespace flowmatch
