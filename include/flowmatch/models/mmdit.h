#pragma once
/// \file
/// MMDiT (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis",
/// Stable Diffusion 3) as a velocity network for images conditioned on a caption.
///
/// Two token streams with separate weights, image patches (DiT's patches and 2-D sin-cos positions)
/// and caption tokens, meet in joint attention: each block computes q, k, v per stream, attends over
/// the concatenation [caption; image] (padded caption tokens masked out as keys), and splits the result
/// back; each stream has its own adaLN-Zero modulation (shift, scale, gate) from
/// y = SiLU(time embedding + pooled caption), its own output projection and MLP. The caption is read
/// by a small text encoder inside the network (token embeddings, learned positions, `text_depth`
/// pre-norm blocks with the caption's padding masked), so it trains jointly with the flow; its masked
/// mean, projected, is SD3's pooled vector. The read-out of the image stream is zero-initialised: the
/// untrained network outputs exactly zero.
///
/// The caption arrives as `Conditioning::context` (B, L) token ids (floats holding them or int64) with
/// `context_mask` (B, L) true where a token is present; the empty caption (mask all false, or no
/// context) is the unconditional velocity of classifier-free guidance. Data with classes and no
/// captions use the class as a one-token caption (the "no class" label: the empty caption), so
/// `--model mmdit` trains on any class-conditional image data.

#include <memory>
#include <vector>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "flowmatch/models/dit.h"
#include "flowmatch/models/transformer.h"
#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

struct MMDiTOptions {
  MMDiTOptions(int64_t channels, int64_t height, int64_t width) : channels_(channels), height_(height), image_width_(width) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, height);
  TORCH_ARG(int64_t, image_width);
  /// p: patch side, dividing height and width.
  TORCH_ARG(int64_t, patch) = 2;
  /// Model width d of both streams (divisible by 4 and by heads).
  TORCH_ARG(int64_t, width) = 256;
  /// Joint blocks.
  TORCH_ARG(int64_t, depth) = 4;
  TORCH_ARG(int64_t, heads) = 4;
  TORCH_ARG(int64_t, mlp_ratio) = 4;
  /// Caption token ids 0 .. caption_vocabulary − 1; 0 with num_classes > 0: the class is the caption.
  TORCH_ARG(int64_t, caption_vocabulary) = 0;
  /// The most caption tokens (1 when the class is the caption).
  TORCH_ARG(int64_t, caption_length) = 1;
  /// Text-encoder blocks before the joint blocks.
  TORCH_ARG(int64_t, text_depth) = 2;
  /// > 0: classes, read as one-token captions when caption_vocabulary is 0.
  TORCH_ARG(int64_t, num_classes) = 0;
  /// With captions and classes: label k's caption, token ids (num_classes lists of at most
  /// caption_length ids), so that labels (and guidance's "no class") are read as their captions.
  TORCH_ARG(std::vector<std::vector<int64_t>>, caption_table) = {};
};

class MMDiTImpl : public VelocityModel {
 public:
  explicit MMDiTImpl(MMDiTOptions options);
  /// The unconditional velocity (the empty caption).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  /// Labels read as captions: the caption table's rows, or classes as one-token captions (kNullLabel:
  /// the empty caption).
  at::Tensor forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) override;
  /// A caption in c.context / c.context_mask, or labels.
  at::Tensor forward_with(const at::Tensor& x, const at::Tensor& t, const Conditioning& c) override;
  int64_t num_classes() const override { return options_.num_classes(); }
  std::vector<int64_t> sample_shape() const override { return {options_.channels(), options_.height(), options_.image_width()}; }
  nlohmann::json spec() const override;
  const MMDiTOptions& options() const { return options_; }

  /// The caption's tokens after the text encoder (B, L, d) and its pooled vector (B, d) (zero for the
  /// empty caption); ids (B, L), mask (B, L) bool.
  std::pair<at::Tensor, at::Tensor> encode_caption(const at::Tensor& ids, const at::Tensor& mask, const at::TensorOptions& options);

 private:
  /// One stream's layers in a joint block.
  at::Tensor run(const at::Tensor& x, const at::Tensor& t, const at::Tensor& ids, const at::Tensor& mask);

  MMDiTOptions options_;
  at::Tensor table_ids_, table_mask_;  // the caption table as (classes, L) ids and mask; undefined without
  ImagePatches image_;
  torch::nn::Embedding caption_embedding_{nullptr};
  at::Tensor caption_positions_;  // learned (L, d)
  std::vector<AdaLNBlock> text_blocks_;
  torch::nn::Linear pooled_{nullptr};
  std::vector<std::pair<AdaLNBlock, AdaLNBlock>> blocks_;  // (image, caption): one stream's layers each
};

/// The joint attention of one MMDiT block, written for the tests: q, k, v of the caption (B, H, Lc, d_h)
/// and of the image (B, H, Li, d_h), the caption's mask (B, Lc); returns the attention output of the
/// caption and of the image, each over the keys of both (masked caption keys left out).
std::pair<at::Tensor, at::Tensor> joint_attention(const at::Tensor& q_caption, const at::Tensor& k_caption, const at::Tensor& v_caption,
                                                  const at::Tensor& q_image, const at::Tensor& k_image, const at::Tensor& v_image,
                                                  const at::Tensor& caption_mask);

/// The registration of "mmdit": user options width, depth, heads, mlp_ratio, patch, text_depth; the data
/// give the image shape and the classes (captions come with the caption vocabulary and length).
ModelRegistration mmdit_registration();

}  // namespace flowmatch::models
