#include "flowmatch/domain.h"

#include <mutex>
#include <stdexcept>

#include "flowmatch/run.h"

namespace flowmatch {

// The built-in domains (src/domains/).
std::shared_ptr<Domain> make_points_domain();
bool points_domain_accepts(const std::string& data);
std::shared_ptr<Domain> make_images_domain();
bool images_domain_accepts(const std::string& data);

namespace {

struct DomainEntry {
  std::string name;
  std::function<bool(const std::string&)> accepts;
  DomainFactory factory;
};

struct DomainRegistry {
  std::mutex mutex;
  std::vector<DomainEntry> entries;
};

DomainRegistry& storage() {
  static DomainRegistry* registry = new DomainRegistry;
  return *registry;
}

void add_entry(DomainEntry entry) {
  DomainRegistry& r = storage();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (auto& e : r.entries) {
    if (e.name == entry.name) {
      e = std::move(entry);
      return;
    }
  }
  r.entries.push_back(std::move(entry));
}

DomainRegistry& registry() {
  static std::once_flag builtins;
  std::call_once(builtins, [] {
    add_entry({"points", points_domain_accepts, make_points_domain});
    add_entry({"images", images_domain_accepts, make_images_domain});
  });
  return storage();
}

}  // namespace

void register_domain(const std::string& name, std::function<bool(const std::string& data)> accepts, DomainFactory factory) {
  if (name.empty() || !accepts || !factory) throw std::invalid_argument("register_domain: a name, accepts and a factory are required");
  registry();  // the built-ins first
  add_entry({name, std::move(accepts), std::move(factory)});
}

std::vector<std::string> domain_names() {
  DomainRegistry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& e : r.entries) names.push_back(e.name);
  return names;
}

std::shared_ptr<Domain> domain_named(const std::string& name) {
  DomainFactory factory;
  std::string known;
  {
    DomainRegistry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    for (const auto& e : r.entries) {
      if (e.name == name) factory = e.factory;
      known += (known.empty() ? "" : ", ") + e.name;
    }
  }
  if (!factory) throw std::invalid_argument("unknown data domain '" + name + "' (expected one of: " + known + ")");
  return factory();
}

std::shared_ptr<Domain> domain_for_data(const std::string& data) {
  DomainFactory factory;
  {
    DomainRegistry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    for (auto it = r.entries.rbegin(); it != r.entries.rend(); ++it) {
      if (it->accepts(data)) {
        factory = it->factory;
        break;
      }
    }
  }
  if (!factory) throw std::invalid_argument("--data '" + data + "': no data domain takes it");
  return factory();
}

std::shared_ptr<Domain> domain_of(const nlohmann::json& data) {
  if (!data.is_object()) throw std::invalid_argument("the run's data description is not an object: " + data.dump());
  if (data.contains("domain")) {
    if (!data["domain"].is_string()) throw std::invalid_argument("the run's data.domain is not a string: " + data["domain"].dump());
    return domain_named(data["domain"].get<std::string>());
  }
  return domain_named(data.contains("image_shape") ? "images" : "points");
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

}  // namespace flowmatch
