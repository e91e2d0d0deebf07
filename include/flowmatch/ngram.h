#pragma once
/// \file
/// The classical baseline of character-level discrete flow matching: an interpolated Kneser–Ney
/// n-gram model (Kneser & Ney 1995; Chen & Goodman 1999) over token ids in [0, V):
///   P_k(w | h) = max(c_k(h w) − D, 0)/c_k(h) + D·N₁₊(h •)/c_k(h)·P_{k−1}(w | h'),   P_0(w) = 1/V,
/// with raw counts at the highest order, continuation counts N₁₊(• h w) below it, h' the history
/// without its oldest token, and the lower order alone where c_k(h) = 0. Each P_k sums to one.

#include <cstdint>
#include <unordered_map>
#include <vector>

#include <torch/arg.h>

namespace flowmatch {

struct KneserNeyOptions {
  /// n: the highest order (the history is n − 1 tokens).
  TORCH_ARG(int64_t, order) = 5;
  /// D in (0, 1].
  TORCH_ARG(double, discount) = 0.75;
};

class KneserNeyModel {
 public:
  /// std::invalid_argument for a vocabulary below 2, an order below 1 or too large for 64-bit keys,
  /// or a discount outside (0, 1].
  KneserNeyModel(int64_t vocabulary, KneserNeyOptions options = KneserNeyOptions());
  /// Counts the n-grams of `tokens` (ids in [0, V)); may be called once.
  void fit(const std::vector<int64_t>& tokens);
  /// log P(next | history), natural log; only the last order − 1 tokens of the history count.
  double log_prob(const int64_t* history, int64_t history_length, int64_t next) const;
  /// Mean −log P per token (nats) of `tokens`, each predicted from the (up to n − 1) tokens before it.
  double nll_per_token(const std::vector<int64_t>& tokens) const;
  int64_t vocabulary() const { return vocabulary_; }
  const KneserNeyOptions& options() const { return options_; }

 private:
  struct Context {
    double total = 0;   // Σ_w c_k(h w)
    double types = 0;   // N₁₊(h •)
  };
  double probability(const int64_t* history, int64_t length, int64_t next) const;
  uint64_t key(const int64_t* tokens, int64_t length) const;

  int64_t vocabulary_;
  KneserNeyOptions options_;
  bool fitted_ = false;
  // Per order k = 1..n: counts of k-grams and the totals of their (k − 1)-token contexts.
  std::vector<std::unordered_map<uint64_t, double>> grams_;
  std::vector<std::unordered_map<uint64_t, Context>> contexts_;
};

}  // namespace flowmatch
