#include "flowmatch/models/transformer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/init.h>
#include <torch/version.h>

namespace flowmatch::models {

namespace {
constexpr int64_t kTransformerTimeFeatures = 256;
}  // namespace

at::Tensor dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal, const at::Tensor& key_mask) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(-1) == k.size(-1) && k.sizes() == v.sizes(),
              "dot_product_attention: q, k, v must be (B, H, L, d) with matching keys and values, got ", q.sizes(), " ", k.sizes(), " ",
              v.sizes());
  TORCH_CHECK(!causal || q.size(2) == k.size(2), "dot_product_attention: a causal mask needs as many queries as keys");
  TORCH_CHECK(!key_mask.defined() || (key_mask.scalar_type() == at::kBool && key_mask.dim() == 2 && key_mask.size(0) == k.size(0) &&
                                      key_mask.size(1) == k.size(2)),
              "dot_product_attention: key_mask must be bool (B, Lk) = (", k.size(0), ", ", k.size(2), "), got ",
              key_mask.defined() ? key_mask.sizes() : at::IntArrayRef{});
  // Which (query, key) pairs take part, (B or 1, 1, Lq, Lk); undefined: all.
  at::Tensor allowed;
  if (key_mask.defined()) allowed = key_mask.view({k.size(0), 1, 1, k.size(2)});
  if (causal && key_mask.defined()) {
    at::Tensor past = at::ones({q.size(2), k.size(2)}, q.options().dtype(at::kBool)).tril();
    allowed = allowed.logical_and(past.view({1, 1, q.size(2), k.size(2)}));
  }
#if TORCH_VERSION_MAJOR >= 2
  if (allowed.defined()) {  // a materialised mask: some 2.x kernels refuse stride-0 (expanded) masks
    return at::scaled_dot_product_attention(q, k, v, allowed.expand({q.size(0), 1, q.size(2), k.size(2)}).contiguous(), 0.0, false);
  }
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);
#else
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (allowed.defined()) {
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  } else if (causal) {
    at::Tensor future = at::ones({q.size(2), k.size(2)}, q.options().dtype(at::kBool)).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  }
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

at::Tensor apply_rotary(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2 && x.size(-1) % 2 == 0, "apply_rotary: x must be (..., L, d) with d even, got ", x.sizes());
  const int64_t length = x.size(-2), half = x.size(-1) / 2;
  const auto f64 = x.options().dtype(at::kDouble);
  at::Tensor inverse = at::pow(10000.0, -at::arange(half, f64) / static_cast<double>(half));
  at::Tensor angles = at::arange(length, f64).unsqueeze(1) * inverse.unsqueeze(0);  // (L, d/2)
  at::Tensor cos = at::cos(angles).to(x.scalar_type()), sin = at::sin(angles).to(x.scalar_type());
  at::Tensor a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
  return at::cat({a * cos - b * sin, b * cos + a * sin}, -1);
}

AdaLNBlock AdaLNBlock::create(torch::nn::Module& owner, const std::string& prefix, int64_t d, int64_t mlp_ratio, bool pre_only) {
  auto layer_norm = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).elementwise_affine(false).eps(1e-6)); };
  AdaLNBlock b;
  b.pre_only = pre_only;
  b.norm1 = owner.register_module(prefix + "norm1", layer_norm());
  if (!pre_only) b.norm2 = owner.register_module(prefix + "norm2", layer_norm());
  b.qkv = owner.register_module(prefix + "qkv", torch::nn::Linear(d, 3 * d));
  if (!pre_only) {
    b.proj = owner.register_module(prefix + "proj", torch::nn::Linear(d, d));
    b.fc1 = owner.register_module(prefix + "fc1", torch::nn::Linear(d, mlp_ratio * d));
    b.fc2 = owner.register_module(prefix + "fc2", torch::nn::Linear(mlp_ratio * d, d));
  }
  b.modulation = owner.register_module(prefix + "modulation", torch::nn::Linear(d, (pre_only ? 2 : 6) * d));
  torch::NoGradGuard no_grad;
  b.modulation->weight.zero_();
  b.modulation->bias.zero_();
  return b;
}

std::vector<at::Tensor> AdaLNBlock::modulate(const at::Tensor& c) { return modulation->forward(c).unsqueeze(1).chunk(pre_only ? 2 : 6, -1); }

at::Tensor AdaLNBlock::attention_input(const at::Tensor& h, const std::vector<at::Tensor>& m, int64_t heads) {
  const int64_t batch = h.size(0), length = h.size(1), d = h.size(2);
  at::Tensor a = norm1->forward(h) * (1 + m[1]) + m[0];
  return qkv->forward(a).view({batch, length, 3, heads, d / heads}).permute({2, 0, 3, 1, 4});
}

at::Tensor AdaLNBlock::finish(const at::Tensor& h_in, const at::Tensor& attended, const std::vector<at::Tensor>& m) {
  TORCH_CHECK(!pre_only, "AdaLNBlock::finish: a pre-only block has no output");
  const int64_t batch = h_in.size(0), length = h_in.size(1), d = h_in.size(2);
  at::Tensor h = h_in + m[2] * proj->forward(attended.transpose(1, 2).reshape({batch, length, d}));
  at::Tensor a = norm2->forward(h) * (1 + m[4]) + m[3];
  return h + m[5] * fc2->forward(at::gelu(fc1->forward(a), "tanh"));
}

at::Tensor AdaLNBlock::forward(const at::Tensor& h_in, const at::Tensor& c, int64_t heads, bool causal, bool rotary,
                               const at::Tensor& key_mask) {
  std::vector<at::Tensor> m = modulate(c);
  at::Tensor qkv_out = attention_input(h_in, m, heads);
  at::Tensor q = qkv_out[0], k = qkv_out[1], v = qkv_out[2];
  if (rotary) q = apply_rotary(q), k = apply_rotary(k);
  return finish(h_in, dot_product_attention(q, k, v, causal, key_mask), m);
}

at::Tensor sinusoidal_time_features(const at::Tensor& t, int64_t batch, int64_t features, const at::TensorOptions& options) {
  TORCH_CHECK(features >= 2 && features % 2 == 0, "sinusoidal_time_features: features must be even and >= 2, got ", features);
  at::Tensor column = time_column(t, batch, options) * 1000.0;  // (B, 1)
  const int64_t half = features / 2;
  at::Tensor frequencies = at::exp(at::arange(half, options) * (-std::log(10000.0) / static_cast<double>(half)));
  at::Tensor angles = column * frequencies.unsqueeze(0);
  return at::cat({at::cos(angles), at::sin(angles)}, 1);
}

std::string to_string(PositionEncoding p) { return p == PositionEncoding::Rotary ? "rotary" : "learned"; }

PositionEncoding position_encoding_from_string(const std::string& name) {
  if (name == "rotary") return PositionEncoding::Rotary;
  if (name == "learned") return PositionEncoding::Learned;
  throw std::invalid_argument("transformer positions '" + name + "': expected rotary or learned");
}

TokenTransformerImpl::TokenTransformerImpl(TokenTransformerOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  if (o.vocabulary() < 2 || o.input_vocabulary() < o.vocabulary() || o.input_vocabulary() > (int64_t{1} << 24)) {
    throw std::invalid_argument("transformer: vocabulary " + std::to_string(o.vocabulary()) + " and input vocabulary " +
                                std::to_string(o.input_vocabulary()) + " (expected 2 <= V <= input vocabulary <= 2^24)");
  }
  if (o.length() < 1 || o.length() > 65536) throw std::invalid_argument("transformer: length " + std::to_string(o.length()) + " (expected 1 to 65536)");
  if (o.width() < 2 || o.width() > 16384 || o.depth() < 1 || o.depth() > 256 || o.heads() < 1 || o.width() % o.heads() != 0 ||
      o.mlp_ratio() < 1 || o.mlp_ratio() > 64) {
    throw std::invalid_argument("transformer: width " + std::to_string(o.width()) + ", depth " + std::to_string(o.depth()) + ", heads " +
                                std::to_string(o.heads()) + ", mlp ratio " + std::to_string(o.mlp_ratio()) +
                                " (expected width 2..16384 divisible by heads, depth 1..256, mlp ratio 1..64)");
  }
  if (o.positions() == PositionEncoding::Rotary && (o.width() / o.heads()) % 2 != 0) {
    throw std::invalid_argument("transformer: rotary positions need an even head width, got width " + std::to_string(o.width()) + " / " +
                                std::to_string(o.heads()) + " heads");
  }
  const int64_t d = o.width();
  // A causal network reads a begin-of-sequence token: one more id.
  embedding_ = register_module("embedding", torch::nn::Embedding(o.input_vocabulary() + (o.causal() ? 1 : 0), d));
  torch::NoGradGuard no_grad;
  embedding_->weight.normal_(0.0, 0.02);
  if (o.positions() == PositionEncoding::Learned) positions_ = register_parameter("positions", at::randn({o.length(), d}) * 0.02);
  time_in_ = register_module("time_in", torch::nn::Linear(kTransformerTimeFeatures, d));
  time_out_ = register_module("time_out", torch::nn::Linear(d, d));
  for (int64_t i = 0; i < o.depth(); ++i) blocks_.push_back(AdaLNBlock::create(*this, "block" + std::to_string(i) + "_", d, o.mlp_ratio()));
  final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).elementwise_affine(false).eps(1e-6)));
  final_modulation_ = register_module("final_modulation", torch::nn::Linear(d, 2 * d));
  head_ = register_module("head", torch::nn::Linear(d, o.vocabulary()));
  for (auto* zero : {&final_modulation_, &head_}) {
    (*zero)->weight.zero_();
    (*zero)->bias.zero_();
  }
}

at::Tensor TokenTransformerImpl::time_embedding(const at::Tensor& t, int64_t batch, const at::TensorOptions& options) {
  at::Tensor features = sinusoidal_time_features(t, batch, kTransformerTimeFeatures, options);
  return at::silu(time_out_->forward(at::silu(time_in_->forward(features))));
}

at::Tensor TokenTransformerImpl::forward(const at::Tensor& x, const at::Tensor& t) {
  const auto& o = options_;
  TORCH_CHECK(x.dim() == 2 && x.size(1) == o.length(), "transformer: tokens must be (B, ", o.length(), "), got ", x.sizes());
  at::Tensor ids = x.scalar_type() == at::kLong ? x : x.round().to(at::kLong);
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < o.input_vocabulary(), "transformer: token ids must be in [0, ", o.input_vocabulary(), "), got [", lo, ", ",
                hi, "]");
  }
  const int64_t batch = x.size(0), length = o.length(), heads = o.heads();
  if (o.causal()) {
    // Shift right: position i reads x_{i−1} (the begin token at 0), so its logits are p(x_i | x_<i).
    at::Tensor begin = at::full({batch, 1}, o.input_vocabulary(), ids.options());
    ids = at::cat({begin, ids.narrow(1, 0, length - 1)}, 1);
  }
  at::Tensor h = embedding_->forward(ids);  // (B, L, d)
  if (positions_.defined()) h = h + positions_.unsqueeze(0);
  at::Tensor c = time_embedding(t, batch, h.options());  // (B, d), after SiLU
  for (auto& b : blocks_) h = b.forward(h, c, heads, o.causal(), o.positions() == PositionEncoding::Rotary);
  std::vector<at::Tensor> m = final_modulation_->forward(c).unsqueeze(1).chunk(2, -1);
  return head_->forward(final_norm_->forward(h) * (1 + m[1]) + m[0]);
}

nlohmann::json TokenTransformerImpl::spec() const {
  const auto& o = options_;
  return {{"type", "transformer"},
          {"options",
           {{"vocabulary", o.vocabulary()},
            {"input_vocabulary", o.input_vocabulary()},
            {"length", o.length()},
            {"width", o.width()},
            {"depth", o.depth()},
            {"heads", o.heads()},
            {"mlp_ratio", o.mlp_ratio()},
            {"positions", to_string(o.positions())},
            {"causal", o.causal()}}}};
}

namespace {

const std::vector<std::string> kTransformerUserOptions = {"width", "depth", "heads", "mlp_ratio", "positions"};

std::shared_ptr<VelocityModel> build_transformer(const nlohmann::json& spec) {
  const nlohmann::json options = spec.value("options", nlohmann::json::object());
  for (const char* key : {"vocabulary", "input_vocabulary", "length"}) {
    if (!options.contains(key) || !options[key].is_number_integer()) {
      throw std::invalid_argument(std::string("transformer description needs an integer \"") + key + "\", got " + spec.dump());
    }
  }
  TokenTransformerOptions o(options["vocabulary"].get<int64_t>(), options["length"].get<int64_t>());
  try {
    o.input_vocabulary(options["input_vocabulary"].get<int64_t>())
        .width(options.value("width", o.width()))
        .depth(options.value("depth", o.depth()))
        .heads(options.value("heads", o.heads()))
        .mlp_ratio(options.value("mlp_ratio", o.mlp_ratio()))
        .positions(position_encoding_from_string(options.value("positions", to_string(o.positions()))))
        .causal(options.value("causal", o.causal()));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("transformer options " + options.dump() + ": " + e.what());
  }
  return std::make_shared<TokenTransformerImpl>(o);
}

}  // namespace

ModelRegistration token_transformer_registration() {
  ModelRegistration r;
  r.describe = [](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
    if (classes > 0) throw std::invalid_argument("model transformer is not class-conditional");
    // What the data give (vocabulary, input_vocabulary, causal) beside the user's options.
    nlohmann::json user = given, from_data = nlohmann::json::object();
    if (user.is_object()) {
      for (const char* key : {"vocabulary", "input_vocabulary", "causal"}) {
        if (user.contains(key)) from_data[key] = user[key], user.erase(key);
      }
    }
    nlohmann::json options = normalized_options("transformer", user, kTransformerUserOptions);
    options.update(from_data);
    if (!options.contains("vocabulary")) throw std::invalid_argument("model transformer needs token data (e.g. --data kjv)");
    if (shape.size() != 1) throw std::invalid_argument("model transformer takes sequences of tokens (one dimension)");
    if (!options.contains("input_vocabulary")) options["input_vocabulary"] = options["vocabulary"];
    options["length"] = shape[0];
    nlohmann::json spec = {{"type", "transformer"}, {"options", options}};
    try {
      spec = build_transformer(spec)->spec();  // checks the options and fills the defaults
    } catch (const c10::Error& e) {
      throw std::invalid_argument(std::string("model transformer: ") + e.what_without_backtrace());
    }
    return spec;
  };
  r.build = build_transformer;
  r.help = "transformer over token sequences (pre-norm, adaLN time, rotary or learned positions; width, depth, heads, mlp-ratio, positions)";
  r.options = kTransformerUserOptions;
  return r;
}

}  // namespace flowmatch::models
