#pragma once
/// \file
/// A transformer over token sequences, the posterior network of discrete flow matching on text
/// (discrete_path.h) and, with a causal mask, the autoregressive baseline (autoregressive.h).
///
/// Pre-norm blocks with adaLN modulation from the time (DiT's adaLN-Zero, as the DDiT blocks of
/// flow_matching's text example): h = LN(x)(1 + scale) + shift, x += gate·Attention(h), then the same
/// around a GELU MLP; shift, scale and gate come from one zero-initialised linear map of the time
/// embedding (sinusoidal features of 1000·t, then a two-layer SiLU MLP). Positions are rotary
/// (RoFormer: q and k rotated by position-dependent angles, so scores depend on offsets only) or
/// learned. The read-out (adaLN, LayerNorm, linear to V logits) is zero-initialised: an untrained
/// network outputs exactly zero, the uniform posterior.
///
/// `causal`: position i sees only the tokens before it. The input is shifted right by one with a
/// begin-of-sequence token (id input_vocabulary), so the logits at i are those of p(x_i | x_<i):
/// an autoregressive model over the same (B, L) → (B, L, V) interface as the posterior networks.

#include <memory>
#include <string>
#include <vector>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

/// softmax(q kᵀ/√d_h) v for q (B, H, Lq, d_h), k and v (B, H, Lk, d_h). `causal`: query i sees keys
/// j ≤ i (Lq == Lk). `key_mask` (B, Lk) bool, when given: only keys marked true take part (every query
/// must keep at least one). LibTorch 2.x runs its fused kernel (at::scaled_dot_product_attention);
/// LibTorch 1.13, which has none, the same arithmetic written out.
at::Tensor dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                                 const at::Tensor& key_mask = {});

/// Rotary position embedding of x (..., L, d) at positions 0..L−1 (d even): the pairs (x_j, x_{j+d/2})
/// rotated by the angle p·10000^(−2j/d). ⟨rot(q, m), rot(k, n)⟩ depends on m − n only.
at::Tensor apply_rotary(const at::Tensor& x);

/// One pre-norm transformer block with adaLN-Zero modulation (DiT, Peebles & Xie 2023): from the
/// conditioning c (after SiLU) one zero-initialised linear map gives shift₁, scale₁, gate₁, shift₂,
/// scale₂, gate₂; h += gate₁·Attention(LN(h)(1 + scale₁) + shift₁), then the same around a GELU MLP.
/// Shared by the token transformer and the DiT (dit.h).
struct AdaLNBlock {
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr}, modulation{nullptr};
  /// A pre-only block (MMDiT's last caption block) gives keys and values only: no projection, no MLP,
  /// and its modulation makes shift₁ and scale₁ alone.
  bool pre_only = false;
  /// Registers its layers in `owner` as prefix + "norm1", "qkv", ... ; the modulation starts at zero.
  static AdaLNBlock create(torch::nn::Module& owner, const std::string& prefix, int64_t width, int64_t mlp_ratio, bool pre_only = false);
  /// h (B, L, d), c (B, d); `rotary` applies rotary positions to q and k; `key_mask` (B, L) as in
  /// dot_product_attention.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& c, int64_t heads, bool causal, bool rotary,
                     const at::Tensor& key_mask = {});
  /// The steps of forward, for attention that joins several blocks (MMDiT): the modulation chunks of c
  /// (B, 1, d) each; q, k, v of the modulated LN(h), stacked (3, B, heads, L, d/heads); and the residual
  /// updates around the attention output (B, heads, L, d/heads).
  std::vector<at::Tensor> modulate(const at::Tensor& c);
  at::Tensor attention_input(const at::Tensor& h, const std::vector<at::Tensor>& m, int64_t heads);
  at::Tensor finish(const at::Tensor& h, const at::Tensor& attended, const std::vector<at::Tensor>& m);
};

/// Sinusoidal features of 1000·t (cos then sin, `features` even, frequencies 10000^(−k/(features/2)))
/// for t 0-dim or (B): (B, features).
at::Tensor sinusoidal_time_features(const at::Tensor& t, int64_t batch, int64_t features, const at::TensorOptions& options);

enum class PositionEncoding { Rotary, Learned };
std::string to_string(PositionEncoding p);
/// "rotary" or "learned"; std::invalid_argument otherwise.
PositionEncoding position_encoding_from_string(const std::string& name);

struct TokenTransformerOptions {
  TokenTransformerOptions(int64_t vocabulary, int64_t length) : vocabulary_(vocabulary), input_vocabulary_(vocabulary), length_(length) {}
  /// V: the data tokens (the logits' width).
  TORCH_ARG(int64_t, vocabulary);
  /// Ids the network reads: V, or V + 1 with a mask token (a causal network adds its own begin token).
  TORCH_ARG(int64_t, input_vocabulary);
  /// L: tokens per sequence.
  TORCH_ARG(int64_t, length);
  /// Model width d (token embeddings, residual stream, time embedding).
  TORCH_ARG(int64_t, width) = 256;
  /// Transformer blocks.
  TORCH_ARG(int64_t, depth) = 4;
  /// Attention heads (width divisible by heads; with rotary positions, an even head width).
  TORCH_ARG(int64_t, heads) = 4;
  /// MLP hidden width / width.
  TORCH_ARG(int64_t, mlp_ratio) = 4;
  TORCH_ARG(PositionEncoding, positions) = PositionEncoding::Rotary;
  /// Position i sees tokens before i only (the autoregressive baseline).
  TORCH_ARG(bool, causal) = false;
};

class TokenTransformerImpl : public VelocityModel {
 public:
  explicit TokenTransformerImpl(TokenTransformerOptions options);
  /// x: (B, L) token ids (int64, or floats holding them); t: (B) or 0-dim. Returns logits (B, L, V).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return {options_.length()}; }
  nlohmann::json spec() const override;
  const TokenTransformerOptions& options() const { return options_; }

 private:
  at::Tensor time_embedding(const at::Tensor& t, int64_t batch, const at::TensorOptions& options);

  TokenTransformerOptions options_;
  torch::nn::Embedding embedding_{nullptr};
  at::Tensor positions_;  // learned (L, d), undefined with rotary positions
  torch::nn::Linear time_in_{nullptr}, time_out_{nullptr};
  std::vector<AdaLNBlock> blocks_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Linear final_modulation_{nullptr}, head_{nullptr};
};

/// The registration of "transformer": user options width, depth, heads, mlp_ratio, positions; the
/// data give vocabulary, input_vocabulary and causal.
ModelRegistration token_transformer_registration();

}  // namespace flowmatch::models
