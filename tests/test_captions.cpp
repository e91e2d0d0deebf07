// Captions for Fashion-MNIST (data/captions.h): size and darkness from each image's pixels, terciles
// as thresholds, the 90 captions and their tokens, prompts (unknown words named), and an MMDiT that
// reads a label as its caption's tokens.
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "flowmatch/data/captions.h"
#include "flowmatch/models/mmdit.h"
#include "model_checks.h"

namespace fmd = flowmatch::data;
namespace fmm = flowmatch::models;

namespace {
const std::vector<std::string> kClasses = {"T-shirt/top", "Ankle boot"};
}

TEST(Captions, SizeAndBrightnessComeFromTheInkPixels) {
  // Image 0: 4 ink pixels of 100 and 200 (mean 150) among 16; image 1: no ink (at or below the ink level).
  at::Tensor images = at::zeros({2, 1, 4, 4}, at::kByte);
  images[0][0][0][0] = 100, images[0][0][0][1] = 200, images[0][0][1][0] = 100, images[0][0][1][1] = 200;
  images[1][0][2][2] = fmd::kInkLevel;
  auto [size, brightness] = fmd::ink_size_and_brightness(images);
  EXPECT_DOUBLE_EQ(size[0].item<double>(), 4.0 / 16);
  EXPECT_DOUBLE_EQ(brightness[0].item<double>(), 150.0);
  EXPECT_DOUBLE_EQ(size[1].item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(brightness[1].item<double>(), 0.0);
  // Terciles split 0..299 into thirds.
  auto cuts = fmd::terciles(at::arange(300, at::kDouble));
  EXPECT_NEAR(cuts[0], 99.667, 1e-3);
  EXPECT_NEAR(cuts[1], 199.333, 1e-3);
}

TEST(Captions, EveryClassDarknessAndSizeHasItsCaptionAndLabel) {
  const auto set = fmd::CaptionSet::build(kClasses, {0.1, 0.2}, {100, 150});
  ASSERT_EQ(set.captions.size(), 18u);
  EXPECT_EQ(set.captions[0], "a dark small t-shirt");
  EXPECT_EQ(set.captions[17], "a light large ankle boot");
  EXPECT_EQ(set.max_length(), 5);
  // Labels: class · 9 + darkness · 3 + size, darkness by brightness (below 100 dark, 150 or more light).
  at::Tensor images = at::zeros({3, 1, 10, 10}, at::kByte);
  images[0].view({-1}).narrow(0, 0, 5).fill_(90);    // size 0.05 (small), brightness 90 (dark)
  images[1].view({-1}).narrow(0, 0, 15).fill_(120);  // size 0.15 (medium), brightness 120 (grey)
  images[2].view({-1}).narrow(0, 0, 50).fill_(250);  // size 0.5 (large), brightness 250 (light)
  at::Tensor labels = set.labels(images, at::tensor({0, 1, 1}, at::kLong));
  EXPECT_EQ(labels[0].item<int64_t>(), 0);
  EXPECT_EQ(labels[1].item<int64_t>(), 9 + 3 + 1);
  EXPECT_EQ(labels[2].item<int64_t>(), 9 + 6 + 2);
  EXPECT_EQ(set.captions[static_cast<size_t>(labels[1].item<int64_t>())], "a grey medium ankle boot");
  // Round trip through the run's description.
  const auto again = fmd::CaptionSet::from_json(set.to_json());
  EXPECT_EQ(again.tokens, set.tokens);
  EXPECT_EQ(again.captions, set.captions);
}

TEST(Captions, PromptsAreTokenizedAndUnknownWordsNamed) {
  const auto set = fmd::CaptionSet::build(kClasses, {0.1, 0.2}, {100, 150});
  EXPECT_EQ(set.label_of("a light, large ankle boot"), 17);
  EXPECT_EQ(set.label_of("A  Dark small T-shirt."), 0);
  try {
    set.label_of("a purple small sparkly t-shirt");
    FAIL() << "unknown words accepted";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'purple', 'sparkly' are not in the captions' vocabulary"), std::string::npos) << what;
    EXPECT_NE(what.find("a dark grey light small medium large"), std::string::npos) << what;  // the vocabulary listed
  }
  try {
    set.label_of("a boot ankle");
    FAIL() << "a non-caption accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("is no caption"), std::string::npos) << e.what();
  }
}

TEST(Captions, AnMMDiTReadsALabelAsItsCaptionsTokens) {
  const auto set = fmd::CaptionSet::build(kClasses, {0.1, 0.2}, {100, 150});
  auto o = fmm::MMDiTOptions(1, 4, 4).width(16).depth(2).heads(2).mlp_ratio(2).text_depth(1).num_classes(18)
               .caption_vocabulary(static_cast<int64_t>(set.vocabulary.size())).caption_length(set.max_length()).caption_table(set.tokens);
  auto model = fmtest::random_network<fmm::MMDiTImpl>(o, 6, 0.2);
  at::Tensor x = at::randn({2, 16}, at::kDouble), t = at::tensor({0.3, 0.6}, at::kDouble);
  at::Tensor v = model->forward_conditional(x, t, at::tensor(std::vector<int64_t>{12, fmm::kNullLabel}, at::kLong));
  // Label 12's caption as context, padded to the table's length.
  fmm::Conditioning c;
  const auto& ids = set.tokens[12];
  c.context = at::zeros({2, set.max_length()}, at::kLong);
  c.context_mask = at::zeros({2, set.max_length()}, at::kBool);
  for (size_t j = 0; j < ids.size(); ++j) c.context[0][static_cast<int64_t>(j)] = ids[j], c.context_mask[0][static_cast<int64_t>(j)] = true;
  at::Tensor w = model->forward_with(x, t, c);
  EXPECT_TRUE(at::allclose(v[0], w[0], 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(v[1], model->forward(x, t)[1], 1e-12, 1e-12));  // "no class": the empty caption
  EXPECT_THROW(fmm::MMDiTImpl(o.num_classes(17)), std::invalid_argument);   // a row per class
}
