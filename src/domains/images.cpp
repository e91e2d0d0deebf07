// The images domain: Fashion-MNIST (Debian's IDX files) and image folders DIR/CLASS/*.png|jpg, flattened
// to (B, C·H·W) in [−1, 1], class-conditional. Evaluation: the evaluation classifier's accuracy on
// class-conditional samples per guidance scale, the Fréchet distance of classifier features (against
// test images, beside the train-vs-test floor and the untrained network) and bits per dimension.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "flowmatch/autoencoder.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/classifier.h"
#include "flowmatch/data/images.h"
#include "flowmatch/data/point_cloud.h"
#include "flowmatch/domain.h"
#include "flowmatch/data/captions.h"
#include "flowmatch/guidance.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/metrics.h"
#include "flowmatch/run.h"
#include "../timing.h"

namespace flowmatch {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

using detail::seconds_since;

data::ImageDataset load_images(const json& data, const std::string& split) {
  const std::string target = data.value("target", std::string());
  data::ImageDataset images;
  try {
    if (target == "fashion-mnist") {
      images = data::fashion_mnist_dataset(split, data.at("data_dir").get<std::string>());
    } else if (target == "fashion-mnist-captions") {  // each image's caption (class, darkness, size) is its label
      images = data::fashion_mnist_dataset(split, data.at("data_dir").get<std::string>());
      const auto captions = data::CaptionSet::from_json(data.at("captions"));
      images.labels = captions.labels(images.images, images.labels);
      images.class_names = captions.captions;
    } else if (target == "image-folder") {
      images = data::load_image_folder(data.at("folder").get<std::string>(), data.at("image_shape")[0].get<int64_t>());
    } else {
      throw std::runtime_error("unknown image data '" + target + "' (expected fashion-mnist, fashion-mnist-captions or image-folder)");
    }
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("the run's image data description: ") + e.what());
  }
  if (images.pixels_per_image() != data.value("dim", int64_t{0})) {
    throw std::runtime_error("the run's images had " + data.value("dim", json()).dump() + " values each, these have " +
                             std::to_string(images.pixels_per_image()));
  }
  return images;
}

// A latent run (--autoencoder): the flow's state is the autoencoder's normalised latent, decoded for
// pictures and evaluation.
bool is_latent(const json& data) { return data.contains("autoencoder"); }
int64_t state_dim(const json& data) {
  if (!is_latent(data)) return data.at("dim").get<int64_t>();
  int64_t d = 1;
  for (int64_t k : data.at("latent_shape").get<std::vector<int64_t>>()) d *= k;
  return d;
}

// The training images' latents, z = mean + std·ε drawn afresh each batch, normalised; from the latents
// `flowmatch autoencoder train` stored when they are of these very images, else encoded now.
data::LabeledSampler latent_sampler(const json& data) {
  const data::ImageDataset images = load_images(data, "train");
  const json& ae = data.at("autoencoder");
  const json& trained_on = ae.at("data");
  const std::string target = data.value("target", std::string());
  const bool same_images =
      trained_on.value("target", std::string()) == "fashion-mnist" ? (target == "fashion-mnist" || target == "fashion-mnist-captions") &&
                                                                          trained_on.value("data_dir", std::string()) == data.value("data_dir", std::string("?"))
                                                                    : trained_on.value("folder", std::string()) == data.value("folder", std::string("?"));
  const int64_t n = images.images.size(0);
  LatentPosterior q;
  if (same_images) q = stored_training_latents(ae.at("dir").get<std::string>(), n);
  if (!q.mean.defined()) q = encode_images(*load_latent_autoencoder(ae).network, images.images);
  const at::Tensor mean = q.mean.reshape({n, -1}).contiguous(), std = q.std.reshape({n, -1}).contiguous(), labels = images.labels;
  const bool noisy = std.abs().max().item<double>() > 0;
  const double shift = ae.at("shift").get<double>(), scale = ae.at("scale").get<double>();
  return [=](int64_t count, at::Generator& gen) {
    at::Tensor index = at::randint(n, {count}, gen, at::TensorOptions().dtype(at::kLong));
    at::Tensor z = mean.index_select(0, index);
    if (noisy) z = z + std.index_select(0, index) * at::randn(z.sizes(), gen);
    return data::LabeledBatch{(z - shift) * scale, labels.index_select(0, index)};
  };
}

// Images (n, C·H·W) in [−1, 1] as a PNG grid: one row per class for "all", else ⌈√n⌉ columns.
void write_grid(const json& data, const std::string& path, const at::Tensor& x, const std::string& which, const std::string& title) {
  const auto shape = data.at("image_shape").get<std::vector<int64_t>>();
  at::Tensor pixels = data::unit_range_to_pixels(x).reshape({x.size(0), shape[0], shape[1], shape[2]});
  const int64_t classes = data.value("num_classes", int64_t{0});
  std::vector<std::string> rows;
  int64_t columns = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(x.size(0)))));
  if (which == "all" && classes > 0 && data.contains("captions")) {  // one row per class, its 9 captions (darkness × size) along it
    columns = x.size(0) / (classes / 9);
    for (const auto& name : data::fashion_mnist_class_names()) rows.push_back(name);
    if (static_cast<int64_t>(rows.size()) * 9 != classes) rows.clear(), columns = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(x.size(0)))));
  } else if (which == "all" && classes > 0) {
    columns = x.size(0) / classes;
    rows = data.value("class_names", std::vector<std::string>());
    if (static_cast<int64_t>(rows.size()) != classes) rows.clear();
  }
  io::write_image_grid_png(path, pixels, columns, 3, rows, title);
}

std::string classifier_file(const std::string& given) {
  std::string file = given;
  if (fs::is_directory(file)) file = (fs::path(file) / "classifier.ckpt").string();
  if (!fs::exists(file)) {
    throw std::invalid_argument("--classifier '" + given + "' not found: train one with 'flowmatch classifier train --out runs/classifier'");
  }
  return file;
}

// The classifier's classes of labels: a caption label (class · 9 + darkness · 3 + size) gives its class.
at::Tensor class_of(bool captions, const at::Tensor& labels) { return captions ? at::floor_divide(labels, 9) : labels; }
at::Tensor class_of(const json& data, const at::Tensor& labels) {
  return class_of(data.contains("captions"), labels);
}

// Labels for n samples: class-balanced rows (n a multiple of the classes), or for captions the 90
// captions in turn (any n).
at::Tensor evaluation_labels(const json& data, int64_t n, int64_t classes) {
  return data.contains("captions") ? at::arange(n, at::kLong).remainder(classes) : grid_labels(n, classes);
}

// The share of samples x (images in [-1, 1]) whose class (by the classifier), darkness and size (by their
// own pixels, with the run's thresholds) are those of their caption `labels`.
json caption_match(ImageClassifierImpl& classifier, const data::CaptionSet& captions, const std::vector<int64_t>& shape, const at::Tensor& x,
                   const at::Tensor& labels) {
  c10::InferenceMode inference;
  classifier.eval();
  const auto device = classifier.parameters().front().device();
  std::vector<at::Tensor> predicted;
  for (int64_t start = 0; start < x.size(0); start += 500) {
    predicted.push_back(classifier.forward(x.narrow(0, start, std::min<int64_t>(500, x.size(0) - start)).to(device)).argmax(1).to(at::kCPU));
  }
  at::Tensor cls = at::cat(predicted);
  at::Tensor pixels = data::unit_range_to_pixels(x.to(at::kCPU)).reshape({x.size(0), shape[0], shape[1], shape[2]});
  at::Tensor got = captions.labels(pixels, at::zeros({x.size(0)}, at::kLong));  // darkness · 3 + size
  at::Tensor want = labels.to(at::kCPU);
  at::Tensor class_ok = cls.eq(class_of(true, want));
  at::Tensor dark_ok = at::floor_divide(got, 3).eq(at::floor_divide(want.remainder(9), 3));
  at::Tensor size_ok = got.remainder(3).eq(want.remainder(3));
  auto share = [](const at::Tensor& ok) { return ok.to(at::kDouble).mean().item<double>(); };
  return {{"class", share(class_ok)},
          {"darkness", share(dark_ok)},
          {"size", share(size_ok)},
          {"all", share(class_ok.logical_and(dark_ok).logical_and(size_ok))}};
}

class ImagesDomain : public Domain {
 public:
  std::string name() const override { return "images"; }

  json default_settings() const override {
    // docs/IMAGES.md: each still loses to a given flag.
    return {{"steps", 4500},   {"batch", 64},         {"lr", 5e-4},          {"coupling", "independent"},
            {"path-noise", "none"}, {"sigma", 0.0},   {"ema", 0.999},        {"lr-schedule", "cosine"},
            {"warmup", 200},   {"grad-clip", 1.0},    {"log-every", 50},     {"checkpoint-every", 250}};
  }
  std::vector<std::string> own_settings() const override { return {"label-dropout", "image-channels", "autoencoder"}; }
  std::string default_model(const json&) const override { return "unet"; }
  // A network that reads text gets the captions' vocabulary and each label's tokens.
  json model_options(const json& data, const std::string& model) const override {
    if (model != "mmdit" || !data.contains("captions")) return json::object();
    const auto captions = data::CaptionSet::from_json(data.at("captions"));
    return {{"caption_vocabulary", static_cast<int64_t>(captions.vocabulary.size())},
            {"caption_length", captions.max_length()},
            {"caption_table", captions.tokens}};
  }
  std::string sample_unit() const override { return "images"; }

  json describe_data(const json& s, const std::vector<std::string>& given) const override {
    if (std::find(given.begin(), given.end(), "source") != given.end()) {
      throw std::invalid_argument("--source does not apply to image data (the source is N(0, I))");
    }
    const std::string which = s["data"];
    json spec;
    data::ImageDataset data;
    try {
      if (which == "fashion-mnist" || which == "fashion-mnist-captions") {
        data = data::fashion_mnist_dataset("train", s["data-dir"].get<std::string>());
        spec = {{"target", which}, {"data_dir", fs::absolute(s["data-dir"].get<std::string>()).string()}};
        if (which == "fashion-mnist-captions") {  // thresholds: the training set's terciles
          auto [size, brightness] = data::ink_size_and_brightness(data.images);
          const auto captions = data::CaptionSet::build(data.class_names, data::terciles(size), data::terciles(brightness));
          data.class_names = captions.captions;
          spec["captions"] = captions.to_json();
        }
      } else {
        data = data::load_image_folder(which, s["image-channels"].get<int64_t>());
        spec = {{"target", "image-folder"}, {"folder", fs::absolute(which).string()}};
      }
    } catch (const std::exception& e) {
      throw std::runtime_error("--data " + which + ": " + e.what());
    }
    spec["source"] = "gaussian";
    spec["dim"] = data.pixels_per_image();
    spec["image_shape"] = {data.channels(), data.height(), data.width()};
    spec["num_classes"] = static_cast<int64_t>(data.class_names.size());
    spec["class_names"] = data.class_names;
    spec["label_dropout"] = s["label-dropout"];
    spec["train_images"] = data.images.size(0);
    const std::string autoencoder = s.value("autoencoder", std::string());
    if (!autoencoder.empty()) {  // a latent run
      json ae = describe_autoencoder(autoencoder);
      if (ae["image_shape"] != spec["image_shape"]) {
        throw std::invalid_argument("--autoencoder '" + autoencoder + "' was trained on images of " + ae["image_shape"].dump() + ", --data " + which +
                                    " has " + spec["image_shape"].dump());
      }
      spec["latent_shape"] = ae["latent_shape"];
      spec["autoencoder"] = std::move(ae);
    }
    return spec;
  }

  std::vector<int64_t> sample_shape(const json& data) const override {
    return data.at(is_latent(data) ? "latent_shape" : "image_shape").get<std::vector<int64_t>>();
  }
  int64_t num_classes(const json& data) const override { return data.value("num_classes", int64_t{0}); }
  data::PointSampler source(const json& data) const override { return data::gaussian_sampler(state_dim(data)); }
  std::function<at::Tensor(const at::Tensor&)> source_log_density(const json&) const override {
    return [](const at::Tensor& x) {
      const double d = static_cast<double>(x[0].numel());
      return -0.5 * x.reshape({x.size(0), -1}).square().sum(1) - 0.5 * d * std::log(2 * M_PI);
    };
  }

  void add_training_data(const json& data, const std::string&, FlowMatchingProblem& problem) const override {
    problem.labeled_target = is_latent(data) ? latent_sampler(data) : data::image_sampler(load_images(data, "train"));
    problem.label_dropout = data.value("label_dropout", 0.0);
  }

  at::Tensor held_out(const json& data, int64_t n, at::Generator& generator) const override {
    const data::ImageDataset test = load_images(data, "test");
    const int64_t k = std::min<int64_t>(n, test.images.size(0));
    at::Tensor x = data::pixels_to_unit_range(test.images.narrow(0, 0, k), generator).reshape({k, -1});
    return is_latent(data) ? load_latent_autoencoder(data.at("autoencoder")).encode(x) : x;  // a latent run: the images' latents
  }

  at::Tensor decode(const json& data, const at::Tensor& state, const c10::Device& device) const override {
    return is_latent(data) ? load_latent_autoencoder(data.at("autoencoder"), device).decode(state) : state;
  }

  void complete_sample_options(const json& data, SampleOptions& o) const override {
    if (o.n <= 0 && !o.initial.defined()) o.n = (data.contains("captions") ? 1 : 10) * std::max<int64_t>(1, num_classes(data));
    if (o.solver.empty()) o.solver = "midpoint";
    if (o.steps <= 0) o.steps = 20;
  }

  json sample_info(const json& data) const override {
    json info = {{"range", "[-1, 1]; pixel = floor((x + 1) * 128) clamped to [0, 255]"}};
    if (is_latent(data)) info["decoded_by"] = data["autoencoder"]["dir"];
    return info;
  }

  // Labels for n samples from the class choice: "all" (n / classes per class in class order; n must be
  // a multiple), "none" (the "no class" entry), a label number or a class name.
  models::Conditioning conditioning(const json& data, const SampleOptions& o, int64_t n) const override {
    const int64_t classes = num_classes(data);
    if (classes <= 0) return Domain::conditioning(data, o, n);
    if (!(o.guidance >= 0) || !std::isfinite(o.guidance)) {
      throw std::invalid_argument("--guidance must be a finite scale >= 0, got " + std::to_string(o.guidance));
    }
    const std::string& which = o.which_class;
    models::Conditioning c;
    if (which == "all") {
      if (n % classes != 0) {
        throw std::invalid_argument("--n " + std::to_string(n) + " must be a multiple of the " + std::to_string(classes) +
                                    " classes for --class all (one row per class)");
      }
      c.labels = grid_labels(n, classes);
      return c;
    }
    if (which == "none") {
      c.labels = at::full({n}, models::kNullLabel, at::kLong);
      return c;
    }
    const auto names = data.value("class_names", std::vector<std::string>());
    for (size_t k = 0; k < names.size(); ++k) {
      if (names[k] == which) {
        c.labels = at::full({n}, static_cast<int64_t>(k), at::kLong);
        return c;
      }
    }
    try {
      size_t used = 0;
      const int64_t k = std::stoll(which, &used);
      if (used == which.size() && k >= 0 && k < classes) {
        c.labels = at::full({n}, k, at::kLong);
        return c;
      }
    } catch (const std::exception&) {
    }
    if (data.contains("captions")) {  // a prompt: its words, each in the captions' vocabulary
      c.labels = at::full({n}, data::CaptionSet::from_json(data.at("captions")).label_of(which), at::kLong);
      return c;
    }
    std::string known;
    for (const auto& name : names) known += (known.empty() ? "" : ", ") + name;
    throw std::invalid_argument("--class '" + which + "' is not all, none, a label in [0, " + std::to_string(classes) +
                                ") or a class name (" + known + ")");
  }

  std::vector<std::string> picture_samples(const Run& run, const SampleResult& samples, const SampleOptions& o,
                                           const std::string& stem) const override {
    char title[160];
    std::snprintf(title, sizeof title, "%s, guidance w = %g, NFE %lld", samples.description.c_str(), o.guidance,
                  static_cast<long long>(samples.nfe));
    write_grid(run.config()["data"], stem + ".png", samples.x, o.which_class, title);
    return {stem + ".png"};
  }

  // The Fréchet distance of classifier features against n test images (and the floor: n training
  // images against them), and the classifier's accuracy on class-conditional samples.
  std::function<json(const SampleResult&)> sample_quality(const Run& run, int64_t n, uint64_t seed, const std::string& classifier_path,
                                                          const c10::Device& device) const override {
    const json& data = run.config()["data"];
    const int64_t classes = num_classes(data);
    if (classes > 0 && n % classes != 0) {
      throw std::invalid_argument("sample quality: n " + std::to_string(n) + " must be a multiple of the " + std::to_string(classes) + " classes");
    }
    json meta;
    auto classifier = load_image_classifier(classifier_file(classifier_path), &meta);
    classifier->to(device);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 0x5eed0000ULL);
    const data::ImageDataset test = load_images(data, "test"), train = load_images(data, "train");
    auto features_of = [&](const data::ImageDataset& set) {
      at::Tensor index = at::randperm(set.images.size(0), gen, at::kLong).narrow(0, 0, std::min<int64_t>(n, set.images.size(0)));
      return classifier_features(*classifier, data::pixels_to_unit_range(set.images.index_select(0, index), gen));
    };
    const auto test_stats = metrics::gaussian_statistics(features_of(test));
    const double floor = metrics::frechet_distance(metrics::gaussian_statistics(features_of(train)), test_stats);
    return [classifier, test_stats, floor, classes, captions = data.contains("captions")](const SampleResult& samples) -> json {
      json q = {{"primary", "frechet_distance"}, {"frechet_distance_floor", floor}};
      if (!at::isfinite(samples.x).all().item<bool>()) {
        q["frechet_distance"] = nullptr;
        q["finite"] = false;
        return q;
      }
      c10::InferenceMode guard;
      at::Tensor x = samples.x.clamp(-1, 1);
      q["frechet_distance"] = metrics::frechet_distance(metrics::gaussian_statistics(classifier_features(*classifier, x)), test_stats);
      if (classes > 0 && samples.labels.defined()) q["classifier_accuracy"] = classifier_accuracy(*classifier, x, class_of(captions, samples.labels));
      return q;
    };
  }

  json evaluate(const Run& run, const EvaluationOptions& f, const ReportFunction& report) const override {
    const json& data = run.config()["data"];
    const int64_t classes = num_classes(data);
    if (classes <= 0) throw std::invalid_argument("eval: this image run is not class-conditional");
    const bool captions = data.contains("captions");  // labels are captions: any number of samples goes
    if (!captions && f.accuracy_n % classes != 0) {
      throw std::invalid_argument("--accuracy-n " + std::to_string(f.accuracy_n) + " must be a multiple of the " +
                                  std::to_string(classes) + " classes");
    }
    if (f.fd_n > 0 && (f.fd_n < 2 || (!captions && f.fd_n % classes != 0))) {
      throw std::invalid_argument("--fd-n " + std::to_string(f.fd_n) + " must be 0 or a multiple of the " + std::to_string(classes) + " classes");
    }
    for (double w : f.guidance_scales) {
      if (!(w >= 0) || !std::isfinite(w)) throw std::invalid_argument("--guidance-scales: " + std::to_string(w) + " is not a finite scale >= 0");
    }
    json classifier_meta;
    auto classifier = load_image_classifier(classifier_file(f.classifier), &classifier_meta);
    const auto shape = data.at("image_shape").get<std::vector<int64_t>>();
    if (classifier->options.in_channels() != shape[0] || classifier->options.image_size() != shape[1] ||
        classifier->options.num_classes() != (captions ? classes / 9 : classes)) {
      throw std::invalid_argument("--classifier was trained on other images (" + to_json(classifier->options).dump() + ")");
    }
    classifier->to(f.device);
    auto model = run.model(f.checkpoint, f.device);
    std::optional<LatentAutoencoder> autoencoder;  // a latent run decodes its samples
    if (is_latent(data)) autoencoder = load_latent_autoencoder(data.at("autoencoder"), f.device);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(f.seed + 0x5eed0000ULL);
    if (solver_info(f.sample_solver).adaptive || solver_info(f.sample_solver).stochastic) {
      throw std::invalid_argument("--sample-solver must be a fixed-step ODE solver, got " + f.sample_solver);
    }
    const data::ImageDataset test = load_images(data, "test");
    json metrics = {{"classifier", classifier_file(f.classifier)},
                    {"classifier_test_accuracy", classifier_meta.value("test_accuracy", json())},
                    {"sample_solver", f.sample_solver},
                    {"sample_steps", f.sample_steps}};
    auto say = [&](const std::string& line) {
      if (report) report(line);
    };
    // Class-balanced samples by the run's own sampling (chunks of 500, noise from `gen`).
    auto sample = [&](std::shared_ptr<models::VelocityModel> net, const at::Tensor& labels, double w, const std::string& solver,
                      int64_t steps, int64_t& nfe) {
      c10::InferenceMode inference;
      std::vector<at::Tensor> parts;
      const int64_t n = labels.size(0), d = state_dim(data);
      for (int64_t start = 0; start < n; start += 500) {
        const int64_t b = std::min<int64_t>(500, n - start);
        SamplingFlow flow = run.guided_flow(net, labels.narrow(0, start, b).to(f.device), w);
        at::Tensor x0 = flow.path->start(at::randn({b, d}, gen)).to(f.device);
        SolveResult result = solve(solver, flow.field, x0, SolverOptions().steps(steps));
        nfe = result.nfe;
        parts.push_back(autoencoder ? autoencoder->decode(result.x) : result.x.to(at::kCPU));
      }
      return at::cat(parts);
    };

    // (a) Accuracy per guidance scale on class-balanced samples.
    json accuracy = json::object(), match = json::object();
    at::Tensor labels = evaluation_labels(data, f.accuracy_n, classes);
    at::Tensor grid_source;
    std::optional<data::CaptionSet> caption_set;
    if (captions) caption_set = data::CaptionSet::from_json(data.at("captions"));
    for (double w : f.guidance_scales) {
      const auto start = std::chrono::steady_clock::now();
      int64_t nfe = 0;
      at::Tensor x = sample(model, labels, w, f.sample_solver, f.sample_steps, nfe);
      const double acc = classifier_accuracy(*classifier, x, class_of(data, labels));
      char key[32];
      std::snprintf(key, sizeof key, "%g", w);
      accuracy[key] = acc;
      metrics["nfe"] = nfe;
      metrics["sample_images_per_s"] = static_cast<double>(f.accuracy_n) / seconds_since(start);
      if (captions) {
        match[key] = caption_match(*classifier, *caption_set, shape, x, labels);
        if ((w == 2 || grid_source.numel() == 0) && x.size(0) >= classes) {  // every caption once: a row per class
          grid_source = x.narrow(0, 0, classes);
          char title[120];
          std::snprintf(title, sizeof title, "guidance w = %g; columns dark, grey, light x small, medium, large", w);
          write_grid(data, run.dir() + "/eval-grid.png", grid_source.contiguous(), "all", title);
        }
      } else if (w == 2 || grid_source.numel() == 0) {  // 10 per class for the picture
        std::vector<at::Tensor> rows;
        const int64_t per_class = f.accuracy_n / classes, shown = std::min<int64_t>(10, per_class);
        for (int64_t c = 0; c < classes; ++c) rows.push_back(x.narrow(0, c * per_class, shown));
        grid_source = at::cat(rows);
        char title[96];
        std::snprintf(title, sizeof title, "guidance w = %g, %s %lld steps (NFE %lld)", w, f.sample_solver.c_str(),
                      static_cast<long long>(f.sample_steps), static_cast<long long>(nfe));
        write_grid(data, run.dir() + "/eval-grid.png", grid_source.contiguous(), shown == 10 ? "all" : "", title);
      }
      char line[160];
      std::snprintf(line, sizeof line, "guidance %g: classifier accuracy %.2f%% on %lld samples (NFE %lld, %.1f s)", w, 100 * acc,
                    static_cast<long long>(f.accuracy_n), static_cast<long long>(nfe), seconds_since(start));
      say(line);
    }
    metrics["classifier_accuracy_by_guidance"] = accuracy;
    if (accuracy.contains("2")) metrics["classifier_accuracy"] = accuracy["2"];
    metrics["pictures"] = {run.dir() + "/eval-grid.png"};
    if (captions) {
      // The prompt ignored: samples of the empty caption, scored against the same prompts (chance).
      int64_t nfe = 0;
      at::Tensor x = sample(model, at::full({f.accuracy_n}, models::kNullLabel, at::kLong), 0.0, f.sample_solver, f.sample_steps, nfe);
      metrics["caption_match_by_guidance"] = match;
      metrics["caption_match_prompt_ignored"] = caption_match(*classifier, *caption_set, shape, x, labels);
      for (const auto& [w, m] : match.items()) {
        say("guidance " + w + ": samples matching their caption: class " + json(m["class"]).dump() + ", darkness " + json(m["darkness"]).dump() +
            ", size " + json(m["size"]).dump() + ", all three " + json(m["all"]).dump());
      }
      const json& chance = metrics["caption_match_prompt_ignored"];
      say("prompt ignored (empty caption): class " + chance["class"].dump() + ", darkness " + chance["darkness"].dump() + ", size " +
          chance["size"].dump() + ", all three " + chance["all"].dump());
    }

    // (b) Fréchet distance of classifier features: samples vs test, train vs test (floor), untrained vs test.
    if (f.fd_n > 0) {
      const auto start = std::chrono::steady_clock::now();
      const int64_t n_test = std::min<int64_t>(f.fd_n, test.images.size(0));
      at::Tensor test_index = at::randperm(test.images.size(0), gen, at::kLong).narrow(0, 0, n_test);
      at::Tensor test_features = classifier_features(*classifier, data::pixels_to_unit_range(test.images.index_select(0, test_index), gen));
      const auto test_stats = metrics::gaussian_statistics(test_features);
      int64_t nfe = 0;
      at::Tensor x = sample(model, evaluation_labels(data, f.fd_n, classes), f.fd_guidance, f.sample_solver, f.sample_steps, nfe);
      metrics["frechet_distance"] = metrics::frechet_distance(metrics::gaussian_statistics(classifier_features(*classifier, x)), test_stats);
      metrics["frechet_guidance"] = f.fd_guidance;
      metrics["frechet_n"] = f.fd_n;
      metrics["frechet_test_n"] = n_test;
      {
        const data::ImageDataset train = load_images(data, "train");
        at::Tensor index = at::randperm(train.images.size(0), gen, at::kLong).narrow(0, 0, std::min<int64_t>(f.fd_n, train.images.size(0)));
        at::Tensor features = classifier_features(*classifier, data::pixels_to_unit_range(train.images.index_select(0, index), gen));
        metrics["frechet_distance_floor"] = metrics::frechet_distance(metrics::gaussian_statistics(features), test_stats);
        if (autoencoder) {  // a latent flow's floor: the same training images through the autoencoder and back
          at::Tensor images = data::pixels_to_unit_range(train.images.index_select(0, index), gen).reshape({index.size(0), -1});
          at::Tensor decoded = autoencoder->decode(autoencoder->encode(images)).clamp(-1, 1);
          metrics["frechet_distance_autoencoder_floor"] =
              metrics::frechet_distance(metrics::gaussian_statistics(classifier_features(*classifier, decoded)), test_stats);
          say("Frechet distance of the autoencoder's reconstructions of training images (the latent flow's floor): " +
              std::to_string(metrics["frechet_distance_autoencoder_floor"].get<double>()));
        }
      }
      {
        // The untrained network, initialised as training initialises it (same seed).
        at::manual_seed(run.config()["training"].value("seed", uint64_t{0}));
        auto untrained = models::make_model(run.config()["model"]);
        untrained->to(f.device);
        // The U-Net's output convolution starts at zero, so its velocity is exactly 0 and every solver
        // returns the noise it starts from: one Euler step then gives the same samples at 1/NFE the cost.
        bool zero_velocity = false;
        {
          c10::InferenceMode inference;
          at::Tensor probe = at::randn({4, state_dim(data)}, gen).to(f.device);
          zero_velocity = untrained->forward(probe, at::full({}, 0.5)).abs().max().item<double>() == 0.0;
        }
        metrics["frechet_untrained_solver"] = zero_velocity ? "euler 1 step (untrained velocity is exactly 0)" : f.sample_solver;
        int64_t untrained_nfe = 0;
        at::Tensor u = sample(untrained, evaluation_labels(data, f.fd_n, classes), f.fd_guidance, zero_velocity ? "euler" : f.sample_solver,
                              zero_velocity ? 1 : f.sample_steps, untrained_nfe);
        metrics["frechet_distance_untrained"] =
            metrics::frechet_distance(metrics::gaussian_statistics(classifier_features(*classifier, u)), test_stats);
      }
      char line[200];
      std::snprintf(line, sizeof line, "Frechet distance (classifier features, %lld samples, w = %g): %.3f; train vs test floor %.3f; untrained %.3f (%.0f s)",
                    static_cast<long long>(f.fd_n), f.fd_guidance, metrics["frechet_distance"].get<double>(),
                    metrics["frechet_distance_floor"].get<double>(), metrics["frechet_distance_untrained"].get<double>(), seconds_since(start));
      say(line);
    }

    // (c) Bits per dimension of dequantized test images under the unconditional ("no class") flow.
    if (f.bpd_n > 0 && autoencoder) {
      metrics["bpd"] = nullptr;
      metrics["bpd_note"] = "not measured: a latent run's density is over latents, and its decoder has no inverse to carry it to pixels";
      say("bits per dimension: not measured for a latent run (its density is over latents)");
    } else if (f.bpd_n > 0) {
      const auto start = std::chrono::steady_clock::now();
      const int64_t n = std::min<int64_t>(f.bpd_n, test.images.size(0));
      at::Tensor x = data::pixels_to_unit_range(test.images.narrow(0, 0, n), gen).reshape({n, -1}).to(f.device);
      SamplingFlow flow = run.guided_flow(model, at::full({n}, models::kNullLabel, at::kLong).to(f.device), 0);
      const auto options = LikelihoodOptions()
                               .solver(SolverOptions().method(SolverMethod::RK4).steps(f.bpd_steps))
                               .divergence(DivergenceMethod::Hutchinson)
                               .probes(1);
      LikelihoodResult result = log_likelihood(flow.field, x, options, gen);
      const int64_t d = x.size(1);
      at::Tensor bpd = (-result.log_prob.to(at::kCPU, at::kDouble)) / (static_cast<double>(d) * std::log(2.0)) + 7.0;
      metrics["bpd"] = bpd.mean().item<double>();
      metrics["bpd_stderr"] = n > 1 ? bpd.std().item<double>() / std::sqrt(static_cast<double>(n)) : 0.0;
      metrics["nll"] = (-result.log_prob.to(at::kDouble)).mean().item<double>();
      metrics["bpd_n"] = n;
      metrics["bpd_nfe"] = result.nfe;
      metrics["bpd_method"] = "hutchinson, 1 rademacher probe, rk4 " + std::to_string(f.bpd_steps) + " steps, unconditional";
      char line[200];
      std::snprintf(line, sizeof line, "bits per dimension %.3f +- %.3f (standard error, %lld test images, NFE %lld, %.0f s)",
                    metrics["bpd"].get<double>(), metrics["bpd_stderr"].get<double>(), static_cast<long long>(n),
                    static_cast<long long>(result.nfe), seconds_since(start));
      say(line);
    }
    return metrics;
  }
};

}  // namespace

std::shared_ptr<Domain> make_images_domain() { return std::make_shared<ImagesDomain>(); }
bool images_domain_accepts(const std::string& data) {
  std::error_code ec;
  return data == "fashion-mnist" || data == "fashion-mnist-captions" || (!data.empty() && fs::is_directory(data, ec));
}

}  // namespace flowmatch
