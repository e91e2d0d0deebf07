// The evaluation classifier: shapes, learning a separable problem, saving and loading.
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "flowmatch/classifier.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
// Three classes of 8×8 images told apart by where a bright square sits (left, right, bottom-middle),
// on noisy backgrounds.
fm::data::ImageDataset squares(int64_t per_class, uint64_t seed) {
  auto gen = fmtest::generator(seed);
  at::Tensor images = at::randint(0, 60, {3 * per_class, 1, 8, 8}, gen, at::TensorOptions().dtype(at::kLong));
  for (int64_t i = 0; i < 3 * per_class; ++i) {
    const int64_t c = i / per_class;
    const int64_t y = c == 2 ? 4 : 1, x = c == 0 ? 0 : c == 1 ? 4 : 2;
    images[i].narrow(1, y, 3).narrow(2, x, 3).fill_(230);
  }
  return {images.to(at::kByte), at::div(at::arange(3 * per_class, at::kLong), per_class, "floor"), {"left", "right", "bottom"}};
}
}  // namespace

TEST(Classifier, ShapesAndFeatures) {
  at::manual_seed(0);
  fm::ImageClassifier net(fm::ImageClassifierOptions(1, 28, 10).width(8).feature_dim(32));
  EXPECT_EQ(net->forward(at::randn({5, 1, 28, 28})).sizes(), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(net->features(at::randn({5, 784})).sizes(), (std::vector<int64_t>{5, 32}));
  EXPECT_THROW(net->forward(at::randn({5, 100})), c10::Error);
  EXPECT_THROW(fm::ImageClassifier(fm::ImageClassifierOptions(1, 30, 10)), std::invalid_argument);
  EXPECT_THROW(fm::ImageClassifier(fm::ImageClassifierOptions(1, 28, 1)), std::invalid_argument);
}

TEST(Classifier, LearnsASeparableProblemAndRoundTripsThroughAFile) {
  at::manual_seed(0);
  fm::ImageClassifier net(fm::ImageClassifierOptions(1, 8, 3).width(8).feature_dim(16).dropout(0));
  const auto train = squares(40, 1), test = squares(20, 2);
  at::Tensor test_x = fm::data::pixels_to_unit_range(test.images);
  const double before = fm::classifier_accuracy(*net, test_x, test.labels);
  int reports = 0;
  EXPECT_TRUE(fm::train_image_classifier(*net, train, fm::ClassifierTrainingOptions().epochs(15).batch_size(16).lr(3e-3).augment(false).seed(3),
                                         [&](const fm::ClassifierProgress&) { ++reports; }));
  EXPECT_GE(reports, 15);
  const double after = fm::classifier_accuracy(*net, test_x, test.labels);
  EXPECT_LT(before, 0.7);
  EXPECT_EQ(after, 1.0);

  fmtest::TempDir dir;
  fm::save_image_classifier(dir / "c.ckpt", *net, {{"note", "test"}});
  nlohmann::json meta;
  auto loaded = fm::load_image_classifier(dir / "c.ckpt", &meta);
  EXPECT_EQ(meta["note"], "test");
  EXPECT_TRUE(fmtest::AllClose(loaded->forward(test_x), net->forward(test_x), 0, 0));
  EXPECT_TRUE(fmtest::AllClose(fm::classifier_features(*loaded, test_x), fm::classifier_features(*net, test_x), 0, 0));
  std::ofstream(dir / "junk.ckpt") << "not a checkpoint";
  EXPECT_THROW(fm::load_image_classifier(dir / "junk.ckpt"), std::runtime_error);
  EXPECT_THROW(fm::load_image_classifier(dir / "missing.ckpt"), std::runtime_error);
}

TEST(Classifier, StopsWhenAsked) {
  at::manual_seed(0);
  fm::ImageClassifier net(fm::ImageClassifierOptions(1, 8, 3).width(4));
  int polls = 0;
  EXPECT_FALSE(fm::train_image_classifier(*net, squares(10, 1), fm::ClassifierTrainingOptions().epochs(5).batch_size(4), {},
                                          [&] { return ++polls >= 3; }));
  EXPECT_EQ(polls, 3);
  fm::data::ImageDataset wrong = squares(4, 1);
  wrong.images = at::zeros({12, 1, 4, 4}, at::kByte);
  EXPECT_THROW(fm::train_image_classifier(*net, wrong, {}), std::invalid_argument);
}
