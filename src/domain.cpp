#include "flowmatch/domain.h"

#include <cstdlib>
#include <stdexcept>

#include "flowmatch/run.h"
#include "registry.h"

namespace flowmatch {

// The built-in domains (src/domains/).
std::shared_ptr<Domain> make_points_domain();
bool points_domain_accepts(const std::string& data);
std::shared_ptr<Domain> make_images_domain();
bool images_domain_accepts(const std::string& data);
std::shared_ptr<Domain> make_manifold_domain();
bool manifold_domain_accepts(const std::string& data);
std::shared_ptr<Domain> make_discrete_domain();
bool discrete_domain_accepts(const std::string& data);
std::shared_ptr<Domain> make_molecules_domain();
bool molecules_domain_accepts(const std::string& data);

namespace {

struct DomainEntry {
  std::function<bool(const std::string&)> accepts;
  DomainFactory factory;
};

detail::Registry<DomainEntry>& registry() {
  static auto* registry = [] {
    auto* r = new detail::Registry<DomainEntry>;
    r->add("points", {points_domain_accepts, make_points_domain});
    r->add("images", {images_domain_accepts, make_images_domain});
    r->add("manifold", {manifold_domain_accepts, make_manifold_domain});
    r->add("discrete", {discrete_domain_accepts, make_discrete_domain});
    r->add("molecules", {molecules_domain_accepts, make_molecules_domain});
    return r;
  }();
  return *registry;
}

}  // namespace

void register_domain(const std::string& name, std::function<bool(const std::string& data)> accepts, DomainFactory factory) {
  if (name.empty() || !accepts || !factory) throw std::invalid_argument("register_domain: a name, accepts and a factory are required");
  registry().add(name, {std::move(accepts), std::move(factory)});
}

std::vector<std::string> domain_names() { return registry().names(); }

nlohmann::json split_seed_setting(const nlohmann::json& settings) {
  const nlohmann::json given = settings.value("split-seed", nlohmann::json());
  return given.is_null() ? settings.at("seed") : given;
}

std::shared_ptr<Domain> domain_named(const std::string& name) {
  const auto entry = registry().find(name);
  if (!entry) throw std::invalid_argument("unknown data domain '" + name + "' (expected one of: " + registry().known() + ")");
  return entry->factory();
}

std::shared_ptr<Domain> domain_for_data(const std::string& data) {
  const auto entries = registry().entries();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->second.accepts(data)) return it->second.factory();
  }
  throw std::invalid_argument("--data '" + data + "': no data domain takes it");
}

std::shared_ptr<Domain> domain_of(const nlohmann::json& data) {
  if (!data.is_object()) throw std::invalid_argument("the run's data description is not an object: " + data.dump());
  if (data.contains("domain")) {
    if (!data["domain"].is_string()) throw std::invalid_argument("the run's data.domain is not a string: " + data["domain"].dump());
    return domain_named(data["domain"].get<std::string>());
  }
  return domain_named(data.contains("image_shape") ? "images" : "points");
}

std::function<nlohmann::json(const SampleResult&)> Domain::sample_quality(const Run&, int64_t, uint64_t, const std::string&,
                                                                         const c10::Device&) const {
  throw std::invalid_argument("the " + name() + " domain has no sample-quality measure for comparisons (points and images have)");
}

at::Tensor Domain::validation_split(const nlohmann::json& data) const {
  throw std::invalid_argument("the " + name() + " data '" + data.value("name", data.value("target", std::string("?"))) +
                              "' have no validation split (finite data sets split 80/10/10 have one: Earth data, proteins, molecules)");
}

void Domain::complete_sample_options(const nlohmann::json&, SampleOptions& options) const {
  if (options.n <= 0 && !options.initial.defined()) options.n = 10000;
  if (options.solver.empty()) options.solver = "euler";
  if (options.steps <= 0) options.steps = 100;
}

models::Conditioning Domain::conditioning(const nlohmann::json&, const SampleOptions& options, int64_t) const {
  if (options.which_class != "all" || options.guidance != 0) {
    throw std::invalid_argument("--class and --guidance apply to class-conditional runs; this " + name() + " run is not one");
  }
  return {};
}

std::string default_data_dir() {
  if (const char* env = std::getenv("FLOWMATCH_DATA_DIR"); env && *env) return env;
  return "../shared/data";
}

}  // namespace flowmatch
