// flowmatch eval on an image run: the evaluation classifier's accuracy on class-conditional samples
// per guidance scale, the Fréchet distance of classifier features (generated vs test, beside the
// train-vs-test floor and the untrained network), and bits per dimension (Hutchinson).

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "eval_images.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/classifier.h"
#include "flowmatch/guidance.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/metrics.h"
#include "images.h"

namespace fmcli {

namespace fm = flowmatch;
namespace fs = std::filesystem;

namespace {

std::string classifier_file(const std::string& given) {
  std::string file = given;
  if (fs::is_directory(file)) file = (fs::path(file) / "classifier.ckpt").string();
  if (!fs::exists(file)) {
    throw UsageError("--classifier '" + given + "' not found: train one with 'flowmatch classifier train --out runs/classifier'");
  }
  return file;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

void add_image_eval_flags(CLI::App* app, ImageEvalFlags& f) {
  app->add_option("--classifier", f.classifier, "image runs: the classifier folder or file ('flowmatch classifier train')")
      ->capture_default_str();
  app->add_option("--guidance-scales", f.guidance_scales, "image runs: guidance scales for the accuracy")->delimiter(',')->capture_default_str();
  app->add_option("--accuracy-n", f.accuracy_n, "image runs: samples per guidance scale (a multiple of the classes)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--fd-n", f.fd_n, "image runs: samples (and test images) for the Frechet distance (0: skip)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--fd-guidance", f.fd_guidance, "image runs: guidance scale of the Frechet-distance samples")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--sample-solver", f.solver, "image runs: solver for the samples")
      ->check(CLI::IsMember({"euler", "midpoint", "heun", "rk4"}))->capture_default_str();
  app->add_option("--sample-steps", f.steps, "image runs: solver steps for the samples")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--bpd-n", f.bpd_n, "image runs: test images for bits per dimension (0: skip)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--bpd-steps", f.bpd_steps, "image runs: RK4 steps of the likelihood solve (Hutchinson, 1 Rademacher probe)")
      ->check(CLI::PositiveNumber)->capture_default_str();
}

int eval_image_run(const RunFolder& run, const std::string& checkpoint, const std::string& out, const ImageEvalFlags& f,
                   uint64_t seed, const c10::Device& device) {
  const json& data = run.config["data"];
  const int64_t classes = data.value("num_classes", int64_t{0});
  if (classes <= 0) throw UsageError("eval: this image run is not class-conditional");
  if (f.accuracy_n % classes != 0) {
    throw UsageError("--accuracy-n " + std::to_string(f.accuracy_n) + " must be a multiple of the " + std::to_string(classes) + " classes");
  }
  if (f.fd_n > 0 && (f.fd_n < 2 || f.fd_n % classes != 0)) {
    throw UsageError("--fd-n " + std::to_string(f.fd_n) + " must be 0 or a multiple of the " + std::to_string(classes) + " classes");
  }
  for (double w : f.guidance_scales) {
    if (!(w >= 0) || !std::isfinite(w)) throw UsageError("--guidance-scales: " + std::to_string(w) + " is not a finite scale >= 0");
  }
  json classifier_meta;
  auto classifier = fm::load_image_classifier(classifier_file(f.classifier), &classifier_meta);
  const auto shape = data.at("image_shape").get<std::vector<int64_t>>();
  if (classifier->options.in_channels() != shape[0] || classifier->options.image_size() != shape[1] ||
      classifier->options.num_classes() != classes) {
    throw UsageError("--classifier was trained on other images (" + fm::to_json(classifier->options).dump() + ")");
  }
  classifier->to(device);
  auto model = load_run_model(run, checkpoint, device);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 0x5eed0000ULL);
  const auto solver = fm::SolverOptions().method(fm::solver_method_from_string(f.solver)).steps(f.steps);
  const fm::data::ImageDataset test = load_run_images(run, "test");
  json metrics = {{"checkpoint", checkpoint},
                  {"step", fm::checkpoint_step(checkpoint)},
                  {"classifier", classifier_file(f.classifier)},
                  {"classifier_test_accuracy", classifier_meta.value("test_accuracy", json())},
                  {"sample_solver", f.solver},
                  {"sample_steps", f.steps}};
  auto say = [](const std::string& line) { std::cerr << line << std::endl; };

  // (a) Accuracy per guidance scale on class-balanced samples.
  json accuracy = json::object();
  at::Tensor labels = fm::grid_labels(f.accuracy_n, classes);
  at::Tensor grid_source;
  for (double w : f.guidance_scales) {
    const auto start = std::chrono::steady_clock::now();
    int64_t nfe = 0;
    at::Tensor x = sample_images(run, model, labels, w, solver, gen, device, nfe);
    const double acc = fm::classifier_accuracy(*classifier, x, labels);
    char key[32];
    std::snprintf(key, sizeof key, "%g", w);
    accuracy[key] = acc;
    metrics["nfe"] = nfe;
    metrics["sample_images_per_s"] = static_cast<double>(f.accuracy_n) / seconds_since(start);
    if (w == 2 || grid_source.numel() == 0) {
      // 10 per class for the picture
      std::vector<at::Tensor> rows;
      const int64_t per_class = f.accuracy_n / classes, shown = std::min<int64_t>(10, per_class);
      for (int64_t c = 0; c < classes; ++c) rows.push_back(x.narrow(0, c * per_class, shown));
      grid_source = at::cat(rows);
      char title[96];
      std::snprintf(title, sizeof title, "guidance w = %g, %s %lld steps (NFE %lld)", w, f.solver.c_str(),
                    static_cast<long long>(f.steps), static_cast<long long>(nfe));
      write_run_image_grid(run, run.dir + "/eval-grid.png", grid_source.contiguous(), shown == 10 ? "all" : "", title);
    }
    char line[160];
    std::snprintf(line, sizeof line, "guidance %g: classifier accuracy %.2f%% on %lld samples (NFE %lld, %.1f s)", w, 100 * acc,
                  static_cast<long long>(f.accuracy_n), static_cast<long long>(nfe), seconds_since(start));
    say(line);
  }
  metrics["classifier_accuracy_by_guidance"] = accuracy;
  if (accuracy.contains("2")) metrics["classifier_accuracy"] = accuracy["2"];

  // (b) Fréchet distance of classifier features: samples vs test, train vs test (floor), untrained vs test.
  if (f.fd_n > 0) {
    const auto start = std::chrono::steady_clock::now();
    const int64_t n_test = std::min<int64_t>(f.fd_n, test.images.size(0));
    at::Tensor test_index = at::randperm(test.images.size(0), gen, at::kLong).narrow(0, 0, n_test);
    at::Tensor test_features = fm::classifier_features(*classifier, fm::data::pixels_to_unit_range(test.images.index_select(0, test_index), gen));
    const auto test_stats = fm::metrics::gaussian_statistics(test_features);
    int64_t nfe = 0;
    at::Tensor x = sample_images(run, model, fm::grid_labels(f.fd_n, classes), f.fd_guidance, solver, gen, device, nfe);
    metrics["frechet_distance"] = fm::metrics::frechet_distance(fm::metrics::gaussian_statistics(fm::classifier_features(*classifier, x)), test_stats);
    metrics["frechet_guidance"] = f.fd_guidance;
    metrics["frechet_n"] = f.fd_n;
    metrics["frechet_test_n"] = n_test;
    {
      const fm::data::ImageDataset train = load_run_images(run, "train");
      at::Tensor index = at::randperm(train.images.size(0), gen, at::kLong).narrow(0, 0, std::min<int64_t>(f.fd_n, train.images.size(0)));
      at::Tensor features = fm::classifier_features(*classifier, fm::data::pixels_to_unit_range(train.images.index_select(0, index), gen));
      metrics["frechet_distance_floor"] = fm::metrics::frechet_distance(fm::metrics::gaussian_statistics(features), test_stats);
    }
    {
      // The untrained network, initialised as training initialises it (same seed).
      at::manual_seed(run.config["training"].value("seed", uint64_t{0}));
      auto untrained = fm::models::make_model(run.config["model"]);
      untrained->to(device);
      // The U-Net's output convolution starts at zero, so its velocity is exactly 0 and every solver
      // returns the noise it starts from: one Euler step then gives the same samples at 1/NFE the cost.
      bool zero_velocity = false;
      {
        c10::InferenceMode inference;
        at::Tensor probe = at::randn({4, data.at("dim").get<int64_t>()}, gen).to(device);
        zero_velocity = untrained->forward(probe, at::full({}, 0.5)).abs().max().item<double>() == 0.0;
      }
      const auto untrained_solver = zero_velocity ? fm::SolverOptions().method(fm::SolverMethod::Euler).steps(1) : solver;
      metrics["frechet_untrained_solver"] = zero_velocity ? "euler 1 step (untrained velocity is exactly 0)" : f.solver;
      int64_t untrained_nfe = 0;
      at::Tensor u = sample_images(run, untrained, fm::grid_labels(f.fd_n, classes), f.fd_guidance, untrained_solver, gen, device,
                                   untrained_nfe);
      metrics["frechet_distance_untrained"] =
          fm::metrics::frechet_distance(fm::metrics::gaussian_statistics(fm::classifier_features(*classifier, u)), test_stats);
    }
    char line[200];
    std::snprintf(line, sizeof line, "Frechet distance (classifier features, %lld samples, w = %g): %.3f; train vs test floor %.3f; untrained %.3f (%.0f s)",
                  static_cast<long long>(f.fd_n), f.fd_guidance, metrics["frechet_distance"].get<double>(),
                  metrics["frechet_distance_floor"].get<double>(), metrics["frechet_distance_untrained"].get<double>(), seconds_since(start));
    say(line);
  }

  // (c) Bits per dimension of dequantized test images under the unconditional ("no class") flow.
  if (f.bpd_n > 0) {
    const auto start = std::chrono::steady_clock::now();
    const int64_t n = std::min<int64_t>(f.bpd_n, test.images.size(0));
    at::Tensor x = fm::data::pixels_to_unit_range(test.images.narrow(0, 0, n), gen).reshape({n, -1}).to(device);
    RunFlow flow = run_flow(run, model, "", fm::guided_velocity_field(model, at::full({n}, fm::models::kNullLabel, at::kLong).to(device), 0));
    const auto options = fm::LikelihoodOptions()
                             .solver(fm::SolverOptions().method(fm::SolverMethod::RK4).steps(f.bpd_steps))
                             .divergence(fm::DivergenceMethod::Hutchinson)
                             .probes(1);
    fm::LikelihoodResult result = fm::log_likelihood(flow.field, x, options, gen);
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
  write_json_atomic(out, metrics);
  std::cout << "wrote " << out << " and " << run.dir << "/eval-grid.png\n";
  return kExitOk;
}

}  // namespace fmcli
