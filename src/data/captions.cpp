#include "flowmatch/data/captions.h"

#include <algorithm>
#include <cctype>
#include <sstream>
#include <stdexcept>

#include <ATen/ATen.h>

namespace flowmatch::data {

const std::array<const char*, 3> CaptionSet::kSizeWords = {"small", "medium", "large"};
const std::array<const char*, 3> CaptionSet::kDarknessWords = {"dark", "grey", "light"};

namespace {

// "Ankle boot" → "ankle boot", "T-shirt/top" → "t-shirt": a class name as caption words.
std::string class_words(const std::string& name) {
  std::string out;
  for (char ch : name.substr(0, name.find('/'))) out += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

std::vector<std::string> words_of(const std::string& text) {
  std::string cleaned;
  for (char ch : text) cleaned += ch == ',' || ch == '.' ? ' ' : static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::istringstream in(cleaned);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

int64_t bucket(double value, const std::array<double, 2>& cuts) { return value < cuts[0] ? 0 : value < cuts[1] ? 1 : 2; }

}  // namespace

std::pair<at::Tensor, at::Tensor> ink_size_and_brightness(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte, "ink_size_and_brightness: uint8 images (N, C, H, W), got ",
              images.sizes());
  at::Tensor v = images.reshape({images.size(0), -1}).to(at::kDouble);
  at::Tensor ink = v.gt(kInkLevel).to(at::kDouble);
  at::Tensor count = ink.sum(1);
  at::Tensor size = count / static_cast<double>(v.size(1));
  at::Tensor brightness = (v * ink).sum(1) / count.clamp_min(1.0);
  return {size, brightness};
}

std::array<double, 2> terciles(const at::Tensor& values) {
  TORCH_CHECK(values.numel() >= 3, "terciles: need at least 3 values, got ", values.numel());
  at::Tensor q = at::quantile(values.to(at::kDouble).reshape({-1}), at::tensor({1.0 / 3.0, 2.0 / 3.0}, at::kDouble));
  return {q[0].item<double>(), q[1].item<double>()};
}

CaptionSet CaptionSet::build(const std::vector<std::string>& class_names, std::array<double, 2> size_thresholds,
                             std::array<double, 2> brightness_thresholds) {
  if (class_names.empty()) throw std::invalid_argument("captions: no class names");
  CaptionSet set;
  set.size_thresholds = size_thresholds;
  set.brightness_thresholds = brightness_thresholds;
  auto id_of = [&](const std::string& word) {
    auto it = std::find(set.vocabulary.begin(), set.vocabulary.end(), word);
    if (it != set.vocabulary.end()) return static_cast<int64_t>(it - set.vocabulary.begin());
    set.vocabulary.push_back(word);
    return static_cast<int64_t>(set.vocabulary.size()) - 1;
  };
  id_of("a");
  for (const char* w : kDarknessWords) id_of(w);
  for (const char* w : kSizeWords) id_of(w);
  for (const auto& name : class_names) {
    for (int64_t dark = 0; dark < 3; ++dark) {
      for (int64_t size = 0; size < 3; ++size) {
        const std::string caption = std::string("a ") + kDarknessWords[dark] + " " + kSizeWords[size] + " " + class_words(name);
        std::vector<int64_t> ids;
        for (const auto& w : words_of(caption)) ids.push_back(id_of(w));
        set.captions.push_back(caption);
        set.tokens.push_back(ids);
      }
    }
  }
  return set;
}

at::Tensor CaptionSet::labels(const at::Tensor& images, const at::Tensor& class_labels) const {
  auto [size, brightness] = ink_size_and_brightness(images);
  TORCH_CHECK(class_labels.dim() == 1 && class_labels.size(0) == images.size(0), "captions: one class label per image");
  at::Tensor out = at::empty({images.size(0)}, at::kLong);
  auto s = size.accessor<double, 1>(), b = brightness.accessor<double, 1>();
  at::Tensor cls = class_labels.to(at::kLong).contiguous();
  auto c = cls.accessor<int64_t, 1>();
  for (int64_t i = 0; i < images.size(0); ++i) {
    out[i] = c[i] * 9 + bucket(b[i], brightness_thresholds) * 3 + bucket(s[i], size_thresholds);
  }
  return out;
}

int64_t CaptionSet::max_length() const {
  size_t n = 0;
  for (const auto& t : tokens) n = std::max(n, t.size());
  return static_cast<int64_t>(n);
}

std::vector<int64_t> CaptionSet::tokenize(const std::string& text) const {
  std::vector<int64_t> ids;
  std::vector<std::string> unknown;
  for (const auto& w : words_of(text)) {
    auto it = std::find(vocabulary.begin(), vocabulary.end(), w);
    if (it == vocabulary.end()) {
      unknown.push_back("'" + w + "'");
    } else {
      ids.push_back(static_cast<int64_t>(it - vocabulary.begin()));
    }
  }
  if (!unknown.empty()) {
    std::string list, known;
    for (const auto& u : unknown) list += (list.empty() ? "" : ", ") + u;
    for (const auto& v : vocabulary) known += (known.empty() ? "" : " ") + v;
    throw std::invalid_argument("prompt '" + text + "': " + list + (unknown.size() == 1 ? " is" : " are") +
                                " not in the captions' vocabulary (" + known + ")");
  }
  return ids;
}

int64_t CaptionSet::label_of(const std::string& prompt) const {
  const std::vector<int64_t> ids = tokenize(prompt);
  for (size_t k = 0; k < tokens.size(); ++k) {
    if (tokens[k] == ids) return static_cast<int64_t>(k);
  }
  throw std::invalid_argument("prompt '" + prompt + "' is no caption: captions read 'a DARKNESS SIZE CLASS' with DARKNESS dark, grey or "
                              "light, SIZE small, medium or large, e.g. '" + captions.back() + "'");
}

nlohmann::json CaptionSet::to_json() const {
  return {{"vocabulary", vocabulary},
          {"captions", captions},
          {"tokens", tokens},
          {"size_thresholds", size_thresholds},
          {"brightness_thresholds", brightness_thresholds}};
}

CaptionSet CaptionSet::from_json(const nlohmann::json& j) {
  CaptionSet set;
  try {
    set.vocabulary = j.at("vocabulary").get<std::vector<std::string>>();
    set.captions = j.at("captions").get<std::vector<std::string>>();
    set.tokens = j.at("tokens").get<std::vector<std::vector<int64_t>>>();
    set.size_thresholds = j.at("size_thresholds").get<std::array<double, 2>>();
    set.brightness_thresholds = j.at("brightness_thresholds").get<std::array<double, 2>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("the run's captions description: ") + e.what());
  }
  if (set.captions.size() != set.tokens.size() || set.captions.empty()) {
    throw std::invalid_argument("the run's captions description has " + std::to_string(set.captions.size()) + " captions and " +
                                std::to_string(set.tokens.size()) + " token lists");
  }
  for (const auto& t : set.tokens) {
    for (int64_t id : t) {
      if (id < 0 || id >= static_cast<int64_t>(set.vocabulary.size())) {
        throw std::invalid_argument("the run's captions description has token id " + std::to_string(id) + " outside its vocabulary of " +
                                    std::to_string(set.vocabulary.size()));
      }
    }
  }
  return set;
}

}  // namespace flowmatch::data
