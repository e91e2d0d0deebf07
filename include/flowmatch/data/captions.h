#pragma once
/// \file
/// Captions for Fashion-MNIST with words a model must read beyond the class: "a dark small ankle
/// boot". Each image's size (the share of its pixels above the ink level) and darkness (the mean
/// brightness of those pixels: a low mean reads "dark") come from its own pixels; the training set's
/// terciles cut each into three words. Every caption is one of 10 × 3 × 3 = 90, so a caption is also a
/// label (class · 9 + darkness · 3 + size): guidance, label dropout (the empty caption) and class-aware
/// couplings work on captions unchanged, while a network that reads text (`mmdit`) sees the words.
/// A word-level tokenizer over the captions' vocabulary turns prompts into token ids.

#include <array>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>

namespace flowmatch::data {

/// A pixel (0..255) above this is ink.
constexpr int kInkLevel = 25;

/// Per image of (N, C, H, W) uint8: the share of ink pixels (size) and their mean brightness in
/// [0, 255] (0 where an image has no ink), each (N) float64.
std::pair<at::Tensor, at::Tensor> ink_size_and_brightness(const at::Tensor& images);

struct CaptionSet {
  std::vector<std::string> vocabulary;             ///< words, in id order
  std::vector<std::string> captions;               ///< one per label, "a dark small ankle boot"
  std::vector<std::vector<int64_t>> tokens;        ///< the captions' token ids
  std::array<double, 2> size_thresholds{};         ///< terciles of the training set's size
  std::array<double, 2> brightness_thresholds{};   ///< terciles of the training set's brightness
  static const std::array<const char*, 3> kSizeWords;        ///< small, medium, large
  static const std::array<const char*, 3> kDarknessWords;    ///< dark, grey, light (by rising brightness)

  /// The words of captions (in order): class · 9 + darkness · 3 + size, from the class names.
  static CaptionSet build(const std::vector<std::string>& class_names, std::array<double, 2> size_thresholds,
                          std::array<double, 2> brightness_thresholds);
  /// The caption label of each image (N) int64, from its class and its pixels.
  at::Tensor labels(const at::Tensor& images, const at::Tensor& class_labels) const;
  /// The longest caption, in tokens.
  int64_t max_length() const;
  /// The label of a prompt: words as tokens (lower case; commas and repeated spaces ignored). Throws
  /// std::invalid_argument naming words outside the vocabulary (and listing it), or a sequence of known
  /// words that is no caption (with the grammar).
  int64_t label_of(const std::string& prompt) const;
  /// Token ids of text, each word looked up; std::invalid_argument names the unknown words.
  std::vector<int64_t> tokenize(const std::string& text) const;
  nlohmann::json to_json() const;
  static CaptionSet from_json(const nlohmann::json& j);
};

/// The terciles (1/3 and 2/3 quantiles) of values (N) float64.
std::array<double, 2> terciles(const at::Tensor& values);

}  // namespace flowmatch::data
