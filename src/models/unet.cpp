#include "flowmatch/models/unet.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>

namespace flowmatch::models {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("UNet " + what);
}

void validate(const UNetOptions& o) {
  require(o.in_channels() >= 1 && o.in_channels() <= 64, "in_channels must be in [1, 64], got " + std::to_string(o.in_channels()));
  require(o.image_size() >= 1 && o.image_size() <= 4096, "image_size must be in [1, 4096], got " + std::to_string(o.image_size()));
  require(o.base_channels() >= 1 && o.base_channels() <= 4096,
          "base_channels must be in [1, 4096], got " + std::to_string(o.base_channels()));
  const auto& m = o.channel_multipliers();
  require(!m.empty() && m.size() <= 8, "channel_multipliers must have 1 to 8 entries, got " + std::to_string(m.size()));
  const int64_t divisor = int64_t{1} << (m.size() - 1);
  require(o.image_size() % divisor == 0, "image_size " + std::to_string(o.image_size()) + " must be divisible by 2^(levels - 1) = " +
                                             std::to_string(divisor) + " for " + std::to_string(m.size()) + " levels");
  require(o.groups() >= 1, "groups must be >= 1, got " + std::to_string(o.groups()));
  for (int64_t k : m) {
    require(k >= 1 && k <= 64, "channel multiplier must be in [1, 64], got " + std::to_string(k));
    require((o.base_channels() * k) % o.groups() == 0, "groups (" + std::to_string(o.groups()) + ") must divide every level's channels, not " +
                                                         std::to_string(o.base_channels() * k));
  }
  require(o.blocks_per_level() >= 1 && o.blocks_per_level() <= 16,
          "blocks_per_level must be in [1, 16], got " + std::to_string(o.blocks_per_level()));
  require(o.attention_heads() >= 1 && (o.base_channels() * m.back()) % o.attention_heads() == 0,
          "attention_heads (" + std::to_string(o.attention_heads()) + ") must divide the lowest level's channels (" +
              std::to_string(o.base_channels() * m.back()) + ")");
  require(o.dropout() >= 0 && o.dropout() < 1, "dropout must be in [0, 1), got " + std::to_string(o.dropout()));
  require(o.num_classes() >= 0 && o.num_classes() <= 100000, "num_classes must be in [0, 100000], got " + std::to_string(o.num_classes()));
  // Each limit alone still allows terabytes together: bound the convolution weights (3x3 convolutions,
  // two per residual block, down and up paths) before anything is allocated.
  double weights = 0;
  for (int64_t k : m) {
    const double c = static_cast<double>(o.base_channels() * k);
    weights += 2 * 9 * c * c * 2 * static_cast<double>(o.blocks_per_level() + 1);
  }
  require(weights <= double(1 << 28), "a U-Net of base_channels " + std::to_string(o.base_channels()) + ", " + std::to_string(m.size()) +
                                          " levels and " + std::to_string(o.blocks_per_level()) + " blocks per level would have about " +
                                          std::to_string(static_cast<int64_t>(weights)) + " weights, more than the 2^28 allowed");
}


torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

void zero_(torch::nn::Conv2d& conv) {
  torch::NoGradGuard no_grad;
  conv->weight.zero_();
  if (conv->bias.defined()) conv->bias.zero_();
}

}  // namespace

nlohmann::json to_json(const UNetOptions& o) {
  return {{"in_channels", o.in_channels()},
          {"image_size", o.image_size()},
          {"base_channels", o.base_channels()},
          {"channel_multipliers", o.channel_multipliers()},
          {"blocks_per_level", o.blocks_per_level()},
          {"attention", o.attention()},
          {"attention_heads", o.attention_heads()},
          {"dropout", o.dropout()},
          {"num_classes", o.num_classes()},
          {"groups", o.groups()}};
}

UNetOptions unet_options_from_json(const nlohmann::json& j) {
  try {
    UNetOptions o(j.value("in_channels", int64_t{1}), j.value("image_size", int64_t{28}));
    o.base_channels(j.value("base_channels", o.base_channels()))
        .channel_multipliers(j.value("channel_multipliers", o.channel_multipliers()))
        .blocks_per_level(j.value("blocks_per_level", o.blocks_per_level()))
        .attention(j.value("attention", o.attention()))
        .attention_heads(j.value("attention_heads", o.attention_heads()))
        .dropout(j.value("dropout", o.dropout()))
        .num_classes(j.value("num_classes", o.num_classes()))
        .groups(j.value("groups", o.groups()));
    validate(o);
    return o;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("UNet options ") + j.dump() + ": " + e.what());
  }
}

namespace {
// Group norm in its weights' precision: under autocast the input may be bf16 (a convolution's output).
// CUDA's autocast runs group norm in float32 itself; LibTorch 1.13's CPU group norm refuses a bf16
// input with float32 weights, so the cast is made here (a no-op without autocast).
at::Tensor group_norm(torch::nn::GroupNorm& norm, const at::Tensor& x) {
  const auto dtype = norm->weight.scalar_type();
  return norm->forward(x.scalar_type() == dtype ? x : x.to(dtype));
}
}  // namespace

ResidualBlockImpl::ResidualBlockImpl(int64_t in, int64_t out, int64_t embedding_dim, int64_t groups, double dropout)
    : dropout_(dropout) {
  norm1_ = register_module("norm1", torch::nn::GroupNorm(groups, in));
  conv1_ = register_module("conv1", conv3x3(in, out));
  embedding_projection_ = register_module("embedding_projection", torch::nn::Linear(embedding_dim, out));
  norm2_ = register_module("norm2", torch::nn::GroupNorm(groups, out));
  conv2_ = register_module("conv2", conv3x3(out, out));
  zero_(conv2_);  // each block starts as the identity
  if (in != out) skip_ = register_module("skip", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1)));
}

at::Tensor ResidualBlockImpl::forward(const at::Tensor& x, const at::Tensor& embedding) {
  at::Tensor h = conv1_->forward(at::silu(group_norm(norm1_, x)));
  h = h + embedding_projection_->forward(at::silu(embedding)).unsqueeze(-1).unsqueeze(-1);
  h = at::silu(group_norm(norm2_, h));
  if (dropout_ > 0 && is_training()) h = at::dropout(h, dropout_, true);
  h = conv2_->forward(h);
  return (skip_ ? skip_->forward(x) : x) + h;
}

SelfAttentionImpl::SelfAttentionImpl(int64_t channels, int64_t heads, int64_t groups) : heads_(heads) {
  norm_ = register_module("norm", torch::nn::GroupNorm(groups, channels));
  qkv_ = register_module("qkv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 3 * channels, 1)));
  projection_ = register_module("projection", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 1)));
  zero_(projection_);
}

at::Tensor SelfAttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), d = c / heads_;
  // (B, 3, heads, d, HW) → q, k, v of shape (B·heads, HW, d).
  at::Tensor qkv = qkv_->forward(group_norm(norm_, x)).reshape({b, 3, heads_, d, h * w});
  auto split = [&](int64_t k) { return qkv.select(1, k).reshape({b * heads_, d, h * w}).transpose(1, 2); };
  at::Tensor q = split(0), k = split(1), v = split(2);
  at::Tensor attention = at::softmax(at::bmm(q, k.transpose(1, 2)) * (1.0 / std::sqrt(static_cast<double>(d))), -1);
  at::Tensor out = at::bmm(attention, v).transpose(1, 2).reshape({b, c, h, w});
  return x + projection_->forward(out);
}

UNetImpl::UNetImpl(UNetOptions options_) : options(std::move(options_)) {
  validate(options);
  const int64_t base = options.base_channels(), groups = options.groups(), emb = 4 * base;
  const auto& mult = options.channel_multipliers();
  const int64_t levels = static_cast<int64_t>(mult.size());
  const double dropout = options.dropout();
  const int64_t half = std::max<int64_t>(1, base / 2);
  frequencies_ = register_buffer(
      "frequencies", at::exp(at::arange(half, at::kFloat) * (-std::log(10000.0) / static_cast<double>(std::max<int64_t>(1, half - 1)))));
  time_hidden_ = register_module("time_hidden", torch::nn::Linear(2 * half, emb));
  time_output_ = register_module("time_output", torch::nn::Linear(emb, emb));
  if (options.num_classes() > 0) {
    class_embedding_ = register_module("class_embedding", torch::nn::Embedding(options.num_classes() + 1, emb));
  }
  input_ = register_module("input", conv3x3(options.in_channels(), base));

  down_blocks_ = register_module("down_blocks", torch::nn::ModuleList());
  down_attention_ = register_module("down_attention", torch::nn::ModuleList());
  downsamples_ = register_module("downsamples", torch::nn::ModuleList());
  std::vector<int64_t> skip_channels{base};
  int64_t channels = base;
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t out = base * mult[level];
    for (int64_t k = 0; k < options.blocks_per_level(); ++k) {
      down_blocks_->push_back(ResidualBlock(channels, out, emb, groups, dropout));
      channels = out;
      if (options.attention() && level == levels - 1) down_attention_->push_back(SelfAttention(channels, options.attention_heads(), groups));
      skip_channels.push_back(channels);
    }
    if (level != levels - 1) {
      downsamples_->push_back(conv3x3(channels, channels, 2));
      skip_channels.push_back(channels);
    }
  }
  middle_ = register_module("middle", torch::nn::ModuleList());
  middle_->push_back(ResidualBlock(channels, channels, emb, groups, dropout));
  if (options.attention()) middle_->push_back(SelfAttention(channels, options.attention_heads(), groups));
  middle_->push_back(ResidualBlock(channels, channels, emb, groups, dropout));

  up_blocks_ = register_module("up_blocks", torch::nn::ModuleList());
  up_attention_ = register_module("up_attention", torch::nn::ModuleList());
  upsamples_ = register_module("upsamples", torch::nn::ModuleList());
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t out = base * mult[level];
    for (int64_t k = 0; k <= options.blocks_per_level(); ++k) {
      const int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      up_blocks_->push_back(ResidualBlock(channels + skip, out, emb, groups, dropout));
      channels = out;
      if (options.attention() && level == levels - 1) up_attention_->push_back(SelfAttention(channels, options.attention_heads(), groups));
    }
    if (level != 0) upsamples_->push_back(conv3x3(channels, channels));
  }
  output_norm_ = register_module("output_norm", torch::nn::GroupNorm(groups, channels));
  output_ = register_module("output", conv3x3(channels, options.in_channels()));
  zero_(output_);
}

nlohmann::json UNetImpl::spec() const { return {{"type", "unet"}, {"options", to_json(options)}}; }

at::Tensor UNetImpl::forward(const at::Tensor& x, const at::Tensor& t) { return run(x, t, at::Tensor()); }

at::Tensor UNetImpl::forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
  check_labels(labels, x.size(0), options.num_classes());
  return run(x, t, labels);
}

at::Tensor UNetImpl::run(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
  const int64_t c = options.in_channels(), s = options.image_size();
  TORCH_CHECK(x.dim() >= 2 && x.numel() == x.size(0) * c * s * s, "UNet expects images of shape (B, ", c, ", ", s, ", ", s,
              ") or (B, ", c * s * s, "), got ", x.sizes());
  const int64_t batch = x.size(0);
  at::Tensor h = x.reshape({batch, c, s, s});
  // Time embedding: sinusoidal features of 1000·t, then a two-layer MLP; plus the class embedding.
  at::Tensor args = time_column(t, batch, h.options()) * 1000.0 * frequencies_.unsqueeze(0);
  at::Tensor embedding = time_output_->forward(at::silu(time_hidden_->forward(at::cat({at::sin(args), at::cos(args)}, 1))));
  if (class_embedding_) {
    at::Tensor index = labels.defined() ? at::where(labels.eq(kNullLabel), at::full_like(labels, options.num_classes()), labels).to(h.device())
                                        : at::full({batch}, options.num_classes(), at::TensorOptions().dtype(at::kLong).device(h.device()));
    embedding = embedding + class_embedding_->forward(index);
  }

  const int64_t levels = static_cast<int64_t>(options.channel_multipliers().size());
  std::vector<at::Tensor> skips;
  h = input_->forward(h);
  skips.push_back(h);
  size_t block = 0, attention = 0;
  for (int64_t level = 0; level < levels; ++level) {
    for (int64_t k = 0; k < options.blocks_per_level(); ++k) {
      h = down_blocks_[block++]->as<ResidualBlockImpl>()->forward(h, embedding);
      if (options.attention() && level == levels - 1) h = down_attention_[attention++]->as<SelfAttentionImpl>()->forward(h);
      skips.push_back(h);
    }
    if (level != levels - 1) {
      h = downsamples_[level]->as<torch::nn::Conv2dImpl>()->forward(h);
      skips.push_back(h);
    }
  }
  h = middle_[0]->as<ResidualBlockImpl>()->forward(h, embedding);
  if (options.attention()) h = middle_[1]->as<SelfAttentionImpl>()->forward(h);
  h = middle_[middle_->size() - 1]->as<ResidualBlockImpl>()->forward(h, embedding);
  block = 0;
  attention = 0;
  size_t upsample = 0;
  for (int64_t level = levels - 1; level >= 0; --level) {
    for (int64_t k = 0; k <= options.blocks_per_level(); ++k) {
      h = up_blocks_[block++]->as<ResidualBlockImpl>()->forward(at::cat({h, skips.back()}, 1), embedding);
      skips.pop_back();
      if (options.attention() && level == levels - 1) h = up_attention_[attention++]->as<SelfAttentionImpl>()->forward(h);
    }
    if (level != 0) {
      h = at::upsample_nearest2d(h, {h.size(2) * 2, h.size(3) * 2});
      h = upsamples_[upsample++]->as<torch::nn::Conv2dImpl>()->forward(h);
    }
  }
  h = output_->forward(at::silu(group_norm(output_norm_, h)));
  return h.reshape(x.sizes());
}

}  // namespace flowmatch::models
