#include "flowmatch/classifier.h"

#include <chrono>
#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>

#include "flowmatch/checkpoint.h"

namespace flowmatch {

nlohmann::json to_json(const ImageClassifierOptions& o) {
  return {{"in_channels", o.in_channels()}, {"image_size", o.image_size()}, {"num_classes", o.num_classes()},
          {"width", o.width()},             {"feature_dim", o.feature_dim()}, {"dropout", o.dropout()}};
}

ImageClassifierOptions image_classifier_options_from_json(const nlohmann::json& j) {
  try {
    ImageClassifierOptions o(j.at("in_channels").get<int64_t>(), j.at("image_size").get<int64_t>(), j.at("num_classes").get<int64_t>());
    o.width(j.value("width", o.width())).feature_dim(j.value("feature_dim", o.feature_dim())).dropout(j.value("dropout", o.dropout()));
    return o;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("classifier options " + j.dump() + ": " + e.what());
  }
}

ImageClassifierImpl::ImageClassifierImpl(ImageClassifierOptions options_) : options(std::move(options_)) {
  const auto& o = options;
  auto check = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("ImageClassifier " + what);
  };
  check(o.in_channels() >= 1 && o.in_channels() <= 64, "in_channels must be in [1, 64], got " + std::to_string(o.in_channels()));
  check(o.image_size() >= 4 && o.image_size() <= 1024 && o.image_size() % 4 == 0,
        "image_size must be a multiple of 4 in [4, 1024], got " + std::to_string(o.image_size()));
  check(o.num_classes() >= 2 && o.num_classes() <= 100000, "num_classes must be in [2, 100000], got " + std::to_string(o.num_classes()));
  check(o.width() >= 1 && o.width() <= 1024, "width must be in [1, 1024], got " + std::to_string(o.width()));
  check(o.feature_dim() >= 1 && o.feature_dim() <= 8192, "feature_dim must be in [1, 8192], got " + std::to_string(o.feature_dim()));
  check(o.dropout() >= 0 && o.dropout() < 1, "dropout must be in [0, 1), got " + std::to_string(o.dropout()));
  const int64_t w = o.width();
  auto conv = [](int64_t in, int64_t out) { return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)); };
  conv1_ = register_module("conv1", conv(o.in_channels(), w));
  conv2_ = register_module("conv2", conv(w, w));
  conv3_ = register_module("conv3", conv(w, 2 * w));
  conv4_ = register_module("conv4", conv(2 * w, 2 * w));
  const int64_t side = o.image_size() / 4;
  hidden_ = register_module("hidden", torch::nn::Linear(2 * w * side * side, o.feature_dim()));
  output_ = register_module("output", torch::nn::Linear(o.feature_dim(), o.num_classes()));
}

at::Tensor ImageClassifierImpl::features(const at::Tensor& x) {
  const int64_t c = options.in_channels(), s = options.image_size();
  TORCH_CHECK(x.dim() >= 2 && x.numel() == x.size(0) * c * s * s, "ImageClassifier expects images (B, ", c, ", ", s, ", ", s,
              ") or (B, ", c * s * s, "), got ", x.sizes());
  at::Tensor h = x.reshape({x.size(0), c, s, s});
  h = at::relu(conv2_->forward(at::relu(conv1_->forward(h))));
  h = at::max_pool2d(h, {2, 2});
  h = at::relu(conv4_->forward(at::relu(conv3_->forward(h))));
  h = at::max_pool2d(h, {2, 2});
  return at::relu(hidden_->forward(h.flatten(1)));
}

at::Tensor ImageClassifierImpl::forward(const at::Tensor& x) {
  at::Tensor h = features(x);
  if (options.dropout() > 0 && is_training()) h = at::dropout(h, options.dropout(), true);
  return output_->forward(h);
}

namespace {

// Random horizontal flips and shifts of up to 2 pixels (zero-padded with the background value −1).
at::Tensor augment(const at::Tensor& x, at::Generator& gen) {
  const int64_t b = x.size(0);
  at::Tensor flip = at::rand({b}, gen) < 0.5;
  at::Tensor out = at::where(flip.view({b, 1, 1, 1}), x.flip({3}), x);
  const int64_t s = x.size(2);
  at::Tensor padded = at::constant_pad_nd(out, {2, 2, 2, 2}, -1.0);
  at::Tensor dx = at::randint(0, 5, {b}, gen, at::TensorOptions().dtype(at::kLong)), dy = at::randint(0, 5, {b}, gen, at::TensorOptions().dtype(at::kLong));
  std::vector<at::Tensor> rows;
  rows.reserve(static_cast<size_t>(b));
  auto* px = dx.data_ptr<int64_t>();
  auto* py = dy.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) rows.push_back(padded[i].narrow(1, py[i], s).narrow(2, px[i], s));
  return at::stack(rows);
}

}  // namespace

bool train_image_classifier(ImageClassifierImpl& classifier, const data::ImageDataset& data, const ClassifierTrainingOptions& o,
                            const std::function<void(const ClassifierProgress&)>& progress, const std::function<bool()>& should_stop) {
  if (o.epochs() < 1 || o.batch_size() < 1 || !(o.lr() > 0)) {
    throw std::invalid_argument("classifier training needs epochs >= 1, batch size >= 1 and lr > 0");
  }
  if (data.channels() != classifier.options.in_channels() || data.height() != classifier.options.image_size() ||
      data.width() != classifier.options.image_size()) {
    throw std::invalid_argument("the classifier expects " + std::to_string(classifier.options.in_channels()) + "x" +
                                std::to_string(classifier.options.image_size()) + "x" + std::to_string(classifier.options.image_size()) +
                                " images, the data are " + c10::str(data.images.sizes().slice(1)));
  }
  if (!data.labels.defined() || data.labels.dim() != 1 || data.labels.size(0) != data.images.size(0) ||
      at::isFloatingType(data.labels.scalar_type())) {
    throw std::invalid_argument("classifier training needs one integer label per image");
  }
  const at::Tensor labels = data.labels.to(at::kLong);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
  torch::optim::AdamW optimizer(classifier.parameters(), torch::optim::AdamWOptions(o.lr()).weight_decay(1e-4));
  const int64_t n = data.images.size(0), per_epoch = (n + o.batch_size() - 1) / o.batch_size();
  const int64_t total = per_epoch * o.epochs();
  const auto device = classifier.parameters().front().device();
  classifier.train();
  int64_t step = 0;
  double loss_sum = 0;
  int64_t loss_count = 0, images = 0;
  auto last = std::chrono::steady_clock::now();
  for (int64_t epoch = 0; epoch < o.epochs(); ++epoch) {
    at::Tensor order = at::randperm(n, gen, at::kLong);
    for (int64_t k = 0; k < per_epoch; ++k, ++step) {
      const double lr = o.lr() * 0.5 * (1 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total)));
      for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
      at::Tensor index = order.narrow(0, k * o.batch_size(), std::min(o.batch_size(), n - k * o.batch_size()));
      at::Tensor x = data::pixels_to_unit_range(data.images.index_select(0, index), gen);
      if (o.augment()) x = augment(x, gen);
      at::Tensor y = labels.index_select(0, index);
      optimizer.zero_grad();
      at::Tensor loss = at::cross_entropy_loss(classifier.forward(x.to(device)), y.to(device));
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>();
      ++loss_count;
      images += index.size(0);
      const bool end = k + 1 == per_epoch;
      if (progress && ((step + 1) % 50 == 0 || end)) {
        const auto now = std::chrono::steady_clock::now();
        const double dt = std::chrono::duration<double>(now - last).count();
        progress({epoch + 1, o.epochs(), k + 1, per_epoch, loss_sum / static_cast<double>(loss_count),
                  dt > 0 ? static_cast<double>(images) / dt : 0});
        last = now;
        loss_sum = 0;
        loss_count = 0;
        images = 0;
      }
      if (should_stop && should_stop()) {
        classifier.eval();
        return false;
      }
    }
  }
  classifier.eval();
  return true;
}

double classifier_accuracy(ImageClassifierImpl& classifier, const at::Tensor& x, const at::Tensor& labels, int64_t batch_size) {
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == x.size(0), "classifier_accuracy: ", x.size(0), " images but labels of shape ",
              labels.sizes());
  if (x.size(0) == 0) throw std::invalid_argument("classifier_accuracy: no images");
  c10::InferenceMode guard;
  classifier.eval();
  const auto device = classifier.parameters().front().device();
  int64_t correct = 0;
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    const int64_t b = std::min(batch_size, x.size(0) - start);
    at::Tensor predicted = classifier.forward(x.narrow(0, start, b).to(device)).argmax(1).to(at::kCPU);
    correct += predicted.eq(labels.narrow(0, start, b).to(at::kLong)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(x.size(0));
}

at::Tensor classifier_features(ImageClassifierImpl& classifier, const at::Tensor& x, int64_t batch_size) {
  c10::InferenceMode guard;
  classifier.eval();
  const auto device = classifier.parameters().front().device();
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    const int64_t b = std::min(batch_size, x.size(0) - start);
    parts.push_back(classifier.features(x.narrow(0, start, b).to(device)).to(at::kCPU, at::kDouble));
  }
  return at::cat(parts);
}

void save_image_classifier(const std::string& path, ImageClassifierImpl& classifier, const nlohmann::json& meta) {
  CheckpointContents contents;
  contents.meta = {{"kind", "image_classifier"}, {"options", to_json(classifier.options)}, {"info", meta}};
  for (const auto& item : classifier.named_parameters(true)) contents.tensors["param/" + item.key()] = item.value().detach().to(at::kCPU);
  write_checkpoint(path, contents);
}

std::shared_ptr<ImageClassifierImpl> load_image_classifier(const std::string& path, nlohmann::json* meta) {
  CheckpointContents contents = read_checkpoint(path);
  if (contents.meta.value("kind", std::string()) != "image_classifier") {
    throw std::runtime_error("'" + path + "' is not an image classifier (flowmatch classifier train writes one)");
  }
  std::shared_ptr<ImageClassifierImpl> classifier;
  try {
    classifier = std::make_shared<ImageClassifierImpl>(image_classifier_options_from_json(contents.meta.at("options")));
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + path + "': " + e.what());
  }
  torch::NoGradGuard no_grad;
  for (auto& item : classifier->named_parameters(true)) {
    auto found = contents.tensors.find("param/" + item.key());
    if (found == contents.tensors.end() || !found->second.sizes().equals(item.value().sizes())) {
      throw std::runtime_error("'" + path + "': parameter " + item.key() + " is missing or has another shape");
    }
    item.value().copy_(found->second);
  }
  classifier->eval();
  if (meta) *meta = contents.meta.value("info", nlohmann::json::object());
  return classifier;
}

}  // namespace flowmatch

// ---------------------------------------------------------------- a classifier run folder

#include <chrono>
#include <filesystem>

#include <ATen/Parallel.h>

#include "flowmatch/models/velocity_model.h"
#include "flowmatch/run.h"

namespace flowmatch {

nlohmann::json train_classifier_run(const std::string& out, const ClassifierRunOptions& f,
                                    const std::function<void(const std::string&)>& started,
                                    const std::function<void(const ClassifierProgress&)>& progress,
                                    const std::function<bool()>& should_stop) {
  namespace fs = std::filesystem;
  using json = nlohmann::json;
  // An image folder has no held-out split: the accuracy below is then on the training images.
  const data::ImageSplits splits = data::image_splits(f.data, f.data_dir, f.image_channels);
  const data::ImageDataset &train = splits.train, &test = splits.test;
  json data_spec = {{"target", splits.target}, {splits.held_out ? "data_dir" : "folder", splits.location}};
  if (train.height() != train.width()) throw std::invalid_argument("--data: the classifier needs square images");
  data_spec["image_shape"] = {train.channels(), train.height(), train.width()};
  data_spec["num_classes"] = static_cast<int64_t>(train.class_names.size());
  data_spec["class_names"] = train.class_names;
  at::manual_seed(f.seed);
  ImageClassifier classifier(ImageClassifierOptions(train.channels(), train.height(), static_cast<int64_t>(train.class_names.size())).width(f.width));
  classifier->to(f.device);
  const auto options = ClassifierTrainingOptions().epochs(f.epochs).batch_size(f.batch).lr(f.lr).seed(f.seed);
  if (started) {
    started("training a classifier on " + std::to_string(train.images.size(0)) + " images (" + std::to_string(train.class_names.size()) +
            " classes), " + std::to_string(models::parameter_count(*classifier)) + " parameters, " + std::to_string(at::get_num_threads()) +
            " thread(s), " + std::to_string(f.epochs) + " epochs of batch " + std::to_string(f.batch));
  }
  const auto start = std::chrono::steady_clock::now();
  if (!train_image_classifier(*classifier, train, options, progress, should_stop)) return nullptr;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double accuracy = classifier_accuracy(*classifier, data::pixels_to_unit_range(test.images), test.labels);
  json metrics = {{"test_accuracy", accuracy},
                  {"test_images", test.images.size(0)},
                  {"held_out", splits.held_out},
                  {"train_seconds", seconds},
                  {"train_images_per_s", static_cast<double>(train.images.size(0) * f.epochs) / seconds},
                  {"parameters", models::parameter_count(*classifier)}};
  json config = {{"flowmatch_version", FLOWMATCH_VERSION},
                 {"kind", "image_classifier"},
                 {"data", data_spec},
                 {"model", to_json(classifier->options)},
                 {"training", {{"epochs", f.epochs}, {"batch", f.batch}, {"lr", f.lr}, {"seed", f.seed}}}};
  fs::create_directories(out);
  save_image_classifier(out + "/classifier.ckpt", *classifier, {{"test_accuracy", accuracy}, {"data", data_spec}});
  write_json_file(out + "/config.json", config);
  write_json_file(out + "/metrics.json", metrics);
  return metrics;
}

}  // namespace flowmatch
