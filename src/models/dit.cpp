#include "flowmatch/models/dit.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace flowmatch::models {

namespace {
constexpr int64_t kDiTTimeFeatures = 256;
}  // namespace

at::Tensor patchify(const at::Tensor& images, int64_t p) {
  TORCH_CHECK(images.dim() == 4 && p >= 1 && images.size(2) % p == 0 && images.size(3) % p == 0, "patchify: images (B, C, H, W) with ",
              "H and W divisible by the patch ", p, ", got ", images.sizes());
  const int64_t b = images.size(0), c = images.size(1), h = images.size(2) / p, w = images.size(3) / p;
  // (B, C, h, p, w, p) → (B, h, w, C, p, p)
  return images.reshape({b, c, h, p, w, p}).permute({0, 2, 4, 1, 3, 5}).reshape({b, h * w, c * p * p});
}

at::Tensor unpatchify(const at::Tensor& patches, int64_t c, int64_t height, int64_t width, int64_t p) {
  TORCH_CHECK(p >= 1 && height % p == 0 && width % p == 0 && patches.dim() == 3 && patches.size(1) == (height / p) * (width / p) &&
                  patches.size(2) == c * p * p,
              "unpatchify: patches ", patches.sizes(), " do not make ", c, "x", height, "x", width, " images of patch ", p);
  const int64_t b = patches.size(0), h = height / p, w = width / p;
  return patches.reshape({b, h, w, c, p, p}).permute({0, 3, 1, 4, 2, 5}).reshape({b, c, height, width});
}

at::Tensor sincos_positions_2d(int64_t rows, int64_t columns, int64_t width) {
  TORCH_CHECK(width % 4 == 0 && width >= 4 && rows >= 1 && columns >= 1, "sincos_positions_2d: width divisible by 4, got ", width);
  const int64_t quarter = width / 4;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor omega = at::pow(10000.0, -at::arange(quarter, f64) / static_cast<double>(quarter));
  auto axis = [&](const at::Tensor& position) {  // (N) → (N, width/2)
    at::Tensor angles = position.unsqueeze(1) * omega.unsqueeze(0);
    return at::cat({at::sin(angles), at::cos(angles)}, 1);
  };
  at::Tensor row = at::arange(rows, f64).repeat_interleave(columns), column = at::arange(columns, f64).repeat({rows});
  return at::cat({axis(row), axis(column)}, 1).to(at::kFloat);
}

void check_image_transformer(const std::string& type, int64_t channels, int64_t height, int64_t image_width, int64_t p, int64_t width,
                             int64_t heads, int64_t depth, int64_t mlp_ratio) {
  if (channels < 1 || channels > 64 || height < 1 || image_width < 1 || height > 4096 || image_width > 4096) {
    throw std::invalid_argument(type + ": images of " + std::to_string(channels) + "x" + std::to_string(height) + "x" +
                                std::to_string(image_width) + " (expected 1 to 64 channels, sides 1 to 4096)");
  }
  if (p < 1 || height % p != 0 || image_width % p != 0) {
    throw std::invalid_argument(type + ": patch size " + std::to_string(p) + " does not divide " + std::to_string(height) + "x" +
                                std::to_string(image_width) + " images");
  }
  if (width < 4 || width > 16384 || width % 4 != 0 || heads < 1 || width % heads != 0 || depth < 1 || depth > 256 || mlp_ratio < 1 ||
      mlp_ratio > 64) {
    throw std::invalid_argument(type + ": width " + std::to_string(width) + ", heads " + std::to_string(heads) + ", depth " +
                                std::to_string(depth) + ", mlp ratio " + std::to_string(mlp_ratio) +
                                " (expected width 4..16384 divisible by 4 and by heads, depth 1..256, mlp ratio 1..64)");
  }
}

nlohmann::json image_transformer_options(const std::string& type, const nlohmann::json& spec) {
  nlohmann::json options = spec.value("options", nlohmann::json::object());
  for (const char* key : {"channels", "height", "image_width"}) {
    if (!options.contains(key) || !options[key].is_number_integer()) {
      throw std::invalid_argument(type + " description needs an integer \"" + key + "\", got " + spec.dump());
    }
  }
  return options;
}

void describe_image_transformer(const std::string& type, const std::vector<int64_t>& shape, int64_t classes, nlohmann::json& options) {
  if (shape.size() != 3) {
    throw std::invalid_argument("model " + type + " needs images (channels, height, width), got samples of " + std::to_string(shape.size()) +
                                " dimension(s)");
  }
  options["channels"] = shape[0];
  options["height"] = shape[1];
  options["image_width"] = shape[2];
  options["num_classes"] = classes;
  if (!options.contains("patch")) options["patch"] = shape[1] % 2 == 0 && shape[2] % 2 == 0 ? 2 : 1;
}

void ImagePatches::create_input(torch::nn::Module& owner, int64_t c, int64_t h, int64_t w, int64_t p, int64_t d) {
  channels = c, height = h, image_width = w, patch = p;
  patch_embedding = owner.register_module("patch_embedding", torch::nn::Linear(c * p * p, d));
  positions = owner.register_buffer("positions", sincos_positions_2d(h / p, w / p, d));
  time_in = owner.register_module("time_in", torch::nn::Linear(kDiTTimeFeatures, d));
  time_out = owner.register_module("time_out", torch::nn::Linear(d, d));
}

void ImagePatches::create_output(torch::nn::Module& owner, int64_t d) {
  final_norm = owner.register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).elementwise_affine(false).eps(1e-6)));
  final_modulation = owner.register_module("final_modulation", torch::nn::Linear(d, 2 * d));
  head = owner.register_module("head", torch::nn::Linear(d, channels * patch * patch));
  torch::NoGradGuard no_grad;
  for (auto* zero : {&final_modulation, &head}) {
    (*zero)->weight.zero_();
    (*zero)->bias.zero_();
  }
}

at::Tensor ImagePatches::tokens(const at::Tensor& x, const char* type) {
  TORCH_CHECK(x.dim() >= 2 && x.numel() == x.size(0) * channels * height * image_width, type, " expects images of shape (B, ", channels, ", ",
              height, ", ", image_width, ") or (B, ", channels * height * image_width, "), got ", x.sizes());
  return patch_embedding->forward(patchify(x.reshape({x.size(0), channels, height, image_width}), patch)) +
         positions.to(x.dtype()).unsqueeze(0);
}

at::Tensor ImagePatches::time_embedding(const at::Tensor& t, int64_t batch, const at::TensorOptions& options) {
  return time_out->forward(at::silu(time_in->forward(sinusoidal_time_features(t, batch, kDiTTimeFeatures, options))));
}

at::Tensor ImagePatches::read_out(const at::Tensor& h, const at::Tensor& c, const at::Tensor& x) {
  std::vector<at::Tensor> m = final_modulation->forward(c).unsqueeze(1).chunk(2, -1);
  at::Tensor out = head->forward(final_norm->forward(h) * (1 + m[1]) + m[0]);
  return unpatchify(out, channels, height, image_width, patch).reshape(x.sizes());
}

DiTImpl::DiTImpl(DiTOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  const int64_t p = o.patch();
  check_image_transformer("dit", o.channels(), o.height(), o.image_width(), p, o.width(), o.heads(), o.depth(), o.mlp_ratio());
  if (o.num_classes() < 0 || o.num_classes() > 100000) {
    throw std::invalid_argument("dit: classes " + std::to_string(o.num_classes()) + " (expected 0..100000)");
  }
  const int64_t d = o.width();
  image_.create_input(*this, o.channels(), o.height(), o.image_width(), p, d);
  if (o.num_classes() > 0) {
    class_embedding_ = register_module("class_embedding", torch::nn::Embedding(o.num_classes() + 1, d));  // row C: no class
    torch::NoGradGuard no_grad;
    class_embedding_->weight.normal_(0.0, 0.02);
  }
  for (int64_t i = 0; i < o.depth(); ++i) blocks_.push_back(AdaLNBlock::create(*this, "block" + std::to_string(i) + "_", d, o.mlp_ratio()));
  image_.create_output(*this, d);
}

at::Tensor DiTImpl::forward(const at::Tensor& x, const at::Tensor& t) { return run(x, t, at::Tensor()); }

at::Tensor DiTImpl::forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
  if (options_.num_classes() == 0) return VelocityModel::forward_conditional(x, t, labels);  // throws: not conditional
  check_labels(labels, x.size(0), options_.num_classes());
  return run(x, t, labels);
}

at::Tensor DiTImpl::run(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
  const auto& o = options_;
  at::Tensor h = image_.tokens(x, "dit");
  const int64_t batch = x.size(0);
  at::Tensor embedding = image_.time_embedding(t, batch, h.options());
  if (class_embedding_) {
    at::Tensor index = labels.defined() ? at::where(labels.eq(kNullLabel), at::full_like(labels, o.num_classes()), labels).to(h.device())
                                        : at::full({batch}, o.num_classes(), at::TensorOptions().dtype(at::kLong).device(h.device()));
    embedding = embedding + class_embedding_->forward(index);
  }
  const at::Tensor cond = at::silu(embedding);
  for (auto& b : blocks_) h = b.forward(h, cond, o.heads(), /*causal=*/false, /*rotary=*/false);
  return image_.read_out(h, cond, x);
}

nlohmann::json DiTImpl::spec() const { return {{"type", "dit"}, {"options", image_transformer_spec(options_)}}; }

namespace {

const std::vector<std::string> kDitUserOptions = {"width", "depth", "heads", "mlp_ratio", "patch"};

std::shared_ptr<VelocityModel> build_dit(const nlohmann::json& spec) {
  return std::make_shared<DiTImpl>(read_image_transformer_options<DiTOptions>("dit", spec));
}

}  // namespace

ModelRegistration dit_registration() {
  ModelRegistration r;
  r.describe = [](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
    nlohmann::json options = normalized_options("dit", given, kDitUserOptions);
    describe_image_transformer("dit", shape, classes, options);
    return build_dit({{"type", "dit"}, {"options", options}})->spec();  // checks the options and fills the defaults
  };
  r.build = build_dit;
  r.help = "DiT: patches, 2-D sin-cos positions, adaLN-Zero blocks from time + class (width, depth, heads, mlp-ratio, patch)";
  r.options = kDitUserOptions;
  return r;
}

}  // namespace flowmatch::models
