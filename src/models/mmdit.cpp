#include "flowmatch/models/mmdit.h"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "flowmatch/models/dit.h"

namespace flowmatch::models {

std::pair<at::Tensor, at::Tensor> joint_attention(const at::Tensor& q_caption, const at::Tensor& k_caption, const at::Tensor& v_caption,
                                                  const at::Tensor& q_image, const at::Tensor& k_image, const at::Tensor& v_image,
                                                  const at::Tensor& caption_mask) {
  const int64_t lc = q_caption.size(2), li = q_image.size(2);
  at::Tensor key_mask = at::cat({caption_mask, at::ones({caption_mask.size(0), li}, caption_mask.options())}, 1);
  at::Tensor out = dot_product_attention(at::cat({q_caption, q_image}, 2), at::cat({k_caption, k_image}, 2),
                                         at::cat({v_caption, v_image}, 2), /*causal=*/false, key_mask);
  return {out.narrow(2, 0, lc), out.narrow(2, lc, li)};
}

MMDiTImpl::MMDiTImpl(MMDiTOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  const int64_t p = o.patch();
  check_image_transformer("mmdit", o.channels(), o.height(), o.image_width(), p, o.width(), o.heads(), o.depth(), o.mlp_ratio());
  if (o.text_depth() < 0 || o.text_depth() > 64) {
    throw std::invalid_argument("mmdit: text depth " + std::to_string(o.text_depth()) + " (expected 0..64)");
  }
  if (o.num_classes() < 0 || o.num_classes() > 100000 || o.caption_vocabulary() < 0 || o.caption_vocabulary() > (int64_t{1} << 20) ||
      o.caption_length() < 1 || o.caption_length() > 4096 || (o.caption_vocabulary() == 0 && o.num_classes() == 0) ||
      (o.caption_vocabulary() == 0 && o.caption_length() != 1)) {
    throw std::invalid_argument("mmdit: caption vocabulary " + std::to_string(o.caption_vocabulary()) + ", caption length " +
                                std::to_string(o.caption_length()) + ", classes " + std::to_string(o.num_classes()) +
                                " (expected captions (vocabulary 1..2^20, length 1..4096), or classes 1..100000 read as one-token captions)");
  }
  if (o.caption_vocabulary() > 0 && o.num_classes() > 0 && o.caption_table().empty()) {
    throw std::invalid_argument("mmdit: with captions and " + std::to_string(o.num_classes()) +
                                " classes the network needs each class's caption (caption_table, given by caption data)");
  }
  if (!o.caption_table().empty()) {
    if (o.caption_vocabulary() == 0 || static_cast<int64_t>(o.caption_table().size()) != o.num_classes()) {
      throw std::invalid_argument("mmdit: a caption table needs captions and one row per class, got " +
                                  std::to_string(o.caption_table().size()) + " rows for " + std::to_string(o.num_classes()) + " classes");
    }
    table_ids_ = at::zeros({o.num_classes(), o.caption_length()}, at::kLong);
    table_mask_ = at::zeros({o.num_classes(), o.caption_length()}, at::kBool);
    for (int64_t k = 0; k < o.num_classes(); ++k) {
      const auto& row = o.caption_table()[static_cast<size_t>(k)];
      if (row.empty() || static_cast<int64_t>(row.size()) > o.caption_length()) {
        throw std::invalid_argument("mmdit: caption " + std::to_string(k) + " has " + std::to_string(row.size()) + " tokens (expected 1 to " +
                                    std::to_string(o.caption_length()) + ")");
      }
      for (size_t j = 0; j < row.size(); ++j) {
        if (row[j] < 0 || row[j] >= o.caption_vocabulary()) {
          throw std::invalid_argument("mmdit: caption " + std::to_string(k) + " has token id " + std::to_string(row[j]) + " outside [0, " +
                                      std::to_string(o.caption_vocabulary()) + ")");
        }
        table_ids_[k][static_cast<int64_t>(j)] = row[j];
        table_mask_[k][static_cast<int64_t>(j)] = true;
      }
    }
    // Plain tensors, not buffers: Module::to(dtype) would turn the ids into floats. Moved to x's device at use.
  }
  const int64_t d = o.width();
  image_.create_input(*this, o.channels(), o.height(), o.image_width(), p, d);
  const int64_t vocabulary = o.caption_vocabulary() > 0 ? o.caption_vocabulary() : o.num_classes();
  caption_embedding_ = register_module("caption_embedding", torch::nn::Embedding(vocabulary, d));
  {
    torch::NoGradGuard no_grad;
    caption_embedding_->weight.normal_(0.0, 0.02);
  }
  caption_positions_ = register_parameter("caption_positions", at::randn({o.caption_length(), d}) * 0.02);
  for (int64_t i = 0; i < o.text_depth(); ++i) {
    text_blocks_.push_back(AdaLNBlock::create(*this, "text" + std::to_string(i) + "_", d, o.mlp_ratio()));
  }
  pooled_ = register_module("pooled", torch::nn::Linear(d, d));
  for (int64_t i = 0; i < o.depth(); ++i) {
    const std::string prefix = "block" + std::to_string(i) + "_";
    AdaLNBlock image = AdaLNBlock::create(*this, prefix + "image_", o.width(), o.mlp_ratio());
    // The last block's caption stream only gives keys and values (SD3's "pre-only" context block):
    // nothing reads its output.
    AdaLNBlock caption = AdaLNBlock::create(*this, prefix + "caption_", o.width(), o.mlp_ratio(), /*pre_only=*/i + 1 == o.depth());
    blocks_.emplace_back(image, caption);
  }
  image_.create_output(*this, d);
}

std::pair<at::Tensor, at::Tensor> MMDiTImpl::encode_caption(const at::Tensor& ids, const at::Tensor& mask, const at::TensorOptions& options) {
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor h = caption_embedding_->forward(ids) + caption_positions_.narrow(0, 0, length).unsqueeze(0);
  h = h.to(options.dtype());
  // A caption with no token gets every key in the text encoder (its outputs are left out below), so no
  // attention row is empty.
  at::Tensor any = mask.any(1, /*keepdim=*/true);
  at::Tensor encoder_mask = mask.logical_or(any.logical_not());
  at::Tensor zero_condition = at::zeros({batch, options_.width()}, h.options());  // the text blocks' modulation is learned constants
  for (auto& b : text_blocks_) h = b.forward(h, zero_condition, options_.heads(), /*causal=*/false, /*rotary=*/false, encoder_mask);
  at::Tensor weights = mask.to(h.scalar_type()).unsqueeze(2);  // the masked mean: zero for the empty caption
  return {h, (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)};
}

at::Tensor MMDiTImpl::forward(const at::Tensor& x, const at::Tensor& t) { return run(x, t, at::Tensor(), at::Tensor()); }

at::Tensor MMDiTImpl::forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
  if (options_.num_classes() == 0 || (options_.caption_vocabulary() > 0 && !table_ids_.defined())) {
    return VelocityModel::forward_conditional(x, t, labels);  // throws: labels mean nothing here
  }
  check_labels(labels, x.size(0), options_.num_classes());
  at::Tensor present = labels.ne(kNullLabel);
  at::Tensor index = at::where(present, labels, at::zeros_like(labels)).to(x.device());
  if (table_ids_.defined()) {  // each label's caption; "no class": the empty caption
    at::Tensor mask = table_mask_.to(x.device()).index_select(0, index).logical_and(present.to(x.device()).unsqueeze(1));
    return run(x, t, table_ids_.to(x.device()).index_select(0, index), mask);
  }
  return run(x, t, index.unsqueeze(1), present.to(x.device()).unsqueeze(1));
}

at::Tensor MMDiTImpl::forward_with(const at::Tensor& x, const at::Tensor& t, const Conditioning& c) {
  if (c.mask.defined()) throw std::invalid_argument("mmdit takes no element mask");
  if (c.context.defined() || c.context_mask.defined()) {
    if (c.labels.defined()) throw std::invalid_argument("mmdit: give a caption or labels, not both");
    if (options_.caption_vocabulary() == 0) {
      throw std::invalid_argument("mmdit: this network reads classes, not captions (caption vocabulary 0)");
    }
    TORCH_CHECK(c.context.defined() && c.context_mask.defined() && c.context.dim() == 2 && c.context.size(0) == x.size(0) &&
                    c.context_mask.sizes() == c.context.sizes() && c.context_mask.scalar_type() == at::kBool &&
                    c.context.size(1) <= options_.caption_length(),
                "mmdit: a caption is context (B, L) token ids with context_mask (B, L) bool, L <= ", options_.caption_length(),
                ", B = ", x.size(0), "; got ", c.context.defined() ? c.context.sizes() : at::IntArrayRef{}, " and ",
                c.context_mask.defined() ? c.context_mask.sizes() : at::IntArrayRef{});
    at::Tensor ids = c.context.to(at::kLong);
    at::Tensor used = ids.masked_select(c.context_mask);
    TORCH_CHECK(used.numel() == 0 || (used.min().item<int64_t>() >= 0 && used.max().item<int64_t>() < options_.caption_vocabulary()),
                "mmdit: caption token ids must be in [0, ", options_.caption_vocabulary(), ")");
    return run(x, t, at::where(c.context_mask, ids, at::zeros_like(ids)), c.context_mask);
  }
  if (c.labels.defined()) return forward_conditional(x, t, c.labels);
  return forward(x, t);
}

at::Tensor MMDiTImpl::run(const at::Tensor& x, const at::Tensor& t, const at::Tensor& ids_in, const at::Tensor& mask_in) {
  at::Tensor hi = image_.tokens(x, "mmdit");
  const int64_t batch = x.size(0), heads = options_.heads();
  // No caption: the empty caption (one padded token).
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(x.device());
  at::Tensor ids = ids_in.defined() ? ids_in.to(x.device()) : at::zeros({batch, 1}, long_options);
  at::Tensor mask = mask_in.defined() ? mask_in.to(x.device()) : at::zeros({batch, 1}, long_options.dtype(at::kBool));
  auto [hc, pooled] = encode_caption(ids, mask, hi.options());
  const at::Tensor y = at::silu(image_.time_embedding(t, batch, hi.options()) + pooled_->forward(pooled));
  for (auto& [image, caption] : blocks_) {
    std::vector<at::Tensor> mi = image.modulate(y), mc = caption.modulate(y);
    at::Tensor qkv_i = image.attention_input(hi, mi, heads), qkv_c = caption.attention_input(hc, mc, heads);
    auto [attended_c, attended_i] = joint_attention(qkv_c[0], qkv_c[1], qkv_c[2], qkv_i[0], qkv_i[1], qkv_i[2], mask);
    hi = image.finish(hi, attended_i, mi);
    if (!caption.pre_only) hc = caption.finish(hc, attended_c, mc);
  }
  return image_.read_out(hi, y, x);
}

nlohmann::json MMDiTImpl::spec() const {
  const auto& o = options_;
  nlohmann::json options = image_transformer_spec(o);
  options["caption_vocabulary"] = o.caption_vocabulary();
  options["caption_length"] = o.caption_length();
  options["text_depth"] = o.text_depth();
  options["caption_table"] = o.caption_table();
  return {{"type", "mmdit"}, {"options", options}};
}

namespace {

const std::vector<std::string> kMmditUserOptions = {"width", "depth", "heads", "mlp_ratio", "patch", "text_depth"};

std::shared_ptr<VelocityModel> build_mmdit(const nlohmann::json& spec) {
  MMDiTOptions o = read_image_transformer_options<MMDiTOptions>("mmdit", spec);
  const nlohmann::json options = spec.value("options", nlohmann::json::object());
  try {
    o.caption_vocabulary(options.value("caption_vocabulary", o.caption_vocabulary()))
        .caption_length(options.value("caption_length", o.caption_length()))
        .text_depth(options.value("text_depth", o.text_depth()))
        .caption_table(options.value("caption_table", o.caption_table()));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("mmdit options " + options.dump() + ": " + e.what());
  }
  return std::make_shared<MMDiTImpl>(o);
}

}  // namespace

ModelRegistration mmdit_registration() {
  ModelRegistration r;
  r.describe = [](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
    // caption_vocabulary, caption_length and caption_table come from caption data (Domain::model_options), not users.
    nlohmann::json user = given;
    nlohmann::json from_data = nlohmann::json::object();
    for (const char* key : {"caption_vocabulary", "caption_length", "caption_table"}) {
      if (user.is_object() && user.contains(key)) {
        from_data[key] = user[key];
        user.erase(key);
      }
    }
    nlohmann::json options = normalized_options("mmdit", user, kMmditUserOptions);
    options.update(from_data);
    describe_image_transformer("mmdit", shape, classes, options);
    if (!options.contains("caption_vocabulary") && classes == 0) {
      throw std::invalid_argument("model mmdit reads a caption or a class: this data has neither (use --model dit or unet)");
    }
    return build_mmdit({{"type", "mmdit"}, {"options", options}})->spec();  // checks the options and fills the defaults
  };
  r.build = build_mmdit;
  r.help = "MMDiT (SD3): image and caption streams with joint attention, a text encoder, adaLN-Zero from time + pooled caption "
           "(width, depth, heads, mlp-ratio, patch, text-depth); classes are one-token captions";
  r.options = kMmditUserOptions;
  return r;
}

}  // namespace flowmatch::models
