#include "flowmatch/ngram.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace flowmatch {

KneserNeyModel::KneserNeyModel(int64_t vocabulary, KneserNeyOptions options) : vocabulary_(vocabulary), options_(options) {
  if (vocabulary < 2) throw std::invalid_argument("Kneser-Ney: vocabulary must be >= 2, got " + std::to_string(vocabulary));
  if (options.order() < 1) throw std::invalid_argument("Kneser-Ney: order must be >= 1, got " + std::to_string(options.order()));
  if (!(options.discount() > 0 && options.discount() <= 1)) {
    throw std::invalid_argument("Kneser-Ney: discount must be in (0, 1], got " + std::to_string(options.discount()));
  }
  // Keys hold up to `order` digits in base V + 1: (V + 1)^order must fit in 63 bits.
  const double bits = static_cast<double>(options.order()) * std::log2(static_cast<double>(vocabulary + 1));
  if (bits > 63) {
    throw std::invalid_argument("Kneser-Ney: order " + std::to_string(options.order()) + " is too high for a vocabulary of " +
                                std::to_string(vocabulary) + " (64-bit keys)");
  }
  grams_.resize(static_cast<size_t>(options.order()) + 1);
  contexts_.resize(static_cast<size_t>(options.order()) + 1);
}

uint64_t KneserNeyModel::key(const int64_t* tokens, int64_t length) const {
  uint64_t k = 0;
  for (int64_t i = 0; i < length; ++i) k = k * static_cast<uint64_t>(vocabulary_ + 1) + static_cast<uint64_t>(tokens[i] + 1);
  return k;
}

void KneserNeyModel::fit(const std::vector<int64_t>& tokens) {
  if (fitted_) throw std::logic_error("Kneser-Ney: fit may be called once");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocabulary_) {
      throw std::invalid_argument("Kneser-Ney: token " + std::to_string(tokens[i]) + " at " + std::to_string(i) + " is outside [0, " +
                                  std::to_string(vocabulary_) + ")");
    }
  }
  const int64_t n = options_.order();
  const int64_t size = static_cast<int64_t>(tokens.size());
  // The highest order: raw counts (n-grams ending at every position with a full history).
  for (int64_t end = n; end <= size; ++end) grams_[n][key(tokens.data() + end - n, n)] += 1;
  // Lower orders: continuation counts, N₁₊(• g) = the distinct (k + 1)-grams x g.
  for (int64_t k = n - 1; k >= 1; --k) {
    std::unordered_set<uint64_t> seen;
    for (int64_t end = k + 1; end <= size; ++end) {
      const int64_t* g = tokens.data() + end - k - 1;
      if (seen.insert(key(g, k + 1)).second) grams_[k][key(g + 1, k)] += 1;
    }
  }
  // Context totals and types, from the gram keys: a k-gram's context is its key without the last digit.
  for (int64_t k = 1; k <= n; ++k) {
    for (const auto& [gram, count] : grams_[k]) {
      Context& c = contexts_[k][gram / static_cast<uint64_t>(vocabulary_ + 1)];
      c.total += count;
      c.types += 1;
    }
  }
  fitted_ = true;
}

double KneserNeyModel::probability(const int64_t* history, int64_t length, int64_t next) const {
  // Order k uses a history of k − 1 tokens: from 1/V up to the longest history available.
  double p = 1.0 / static_cast<double>(vocabulary_);
  const double d = options_.discount();
  for (int64_t k = 1; k <= std::min<int64_t>(options_.order(), length + 1); ++k) {
    const int64_t* h = history + length - (k - 1);
    const auto ctx = contexts_[k].find(key(h, k - 1));
    if (ctx == contexts_[k].end() || ctx->second.total <= 0) continue;  // unseen history: the lower order alone
    uint64_t g = key(h, k - 1) * static_cast<uint64_t>(vocabulary_ + 1) + static_cast<uint64_t>(next + 1);
    const auto it = grams_[k].find(g);
    const double c = it == grams_[k].end() ? 0.0 : it->second;
    p = std::max(c - d, 0.0) / ctx->second.total + d * ctx->second.types / ctx->second.total * p;
  }
  return p;
}

double KneserNeyModel::log_prob(const int64_t* history, int64_t history_length, int64_t next) const {
  if (!fitted_) throw std::logic_error("Kneser-Ney: fit the model first");
  if (next < 0 || next >= vocabulary_) throw std::invalid_argument("Kneser-Ney: token " + std::to_string(next) + " is outside the vocabulary");
  if (history_length < 0 || (history_length > 0 && !history)) throw std::invalid_argument("Kneser-Ney: bad history");
  for (int64_t i = 0; i < history_length; ++i) {
    if (history[i] < 0 || history[i] >= vocabulary_) {
      throw std::invalid_argument("Kneser-Ney: history token " + std::to_string(history[i]) + " is outside the vocabulary");
    }
  }
  const int64_t used = std::min<int64_t>(history_length, options_.order() - 1);
  return std::log(probability(history + history_length - used, used, next));
}

double KneserNeyModel::nll_per_token(const std::vector<int64_t>& tokens) const {
  if (tokens.empty()) throw std::invalid_argument("Kneser-Ney: no tokens to score");
  double total = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t used = std::min<int64_t>(static_cast<int64_t>(i), options_.order() - 1);
    total -= log_prob(tokens.data() + i - used, used, tokens[i]);
  }
  return total / static_cast<double>(tokens.size());
}

}  // namespace flowmatch
