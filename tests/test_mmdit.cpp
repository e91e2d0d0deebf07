// MMDiT (models/mmdit.h): joint attention against a naive softmax(QKᵀ/√d)V over both streams with
// the caption's padding left out, the zero-initialised output, the empty caption (no caption, a mask
// of no tokens and the "no class" label are one velocity, whatever the padded ids), padding that does
// not matter, a caption that does, finite-difference gradients, and the registry's checks.
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "flowmatch/models/mmdit.h"
#include "model_checks.h"

namespace fmm = flowmatch::models;

namespace {

fmm::MMDiTOptions captions(int64_t vocabulary = 7, int64_t length = 5) {
  return fmm::MMDiTOptions(1, 4, 4).patch(2).width(16).depth(2).heads(2).mlp_ratio(2).text_depth(1).caption_vocabulary(vocabulary).caption_length(length);
}

fmm::Conditioning caption(const std::vector<std::vector<int64_t>>& ids, const std::vector<std::vector<bool>>& present) {
  const int64_t b = static_cast<int64_t>(ids.size()), l = static_cast<int64_t>(ids[0].size());
  fmm::Conditioning c;
  c.context = at::zeros({b, l}, at::kLong);
  c.context_mask = at::zeros({b, l}, at::kBool);
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < l; ++j) {
      c.context[i][j] = ids[i][j];
      c.context_mask[i][j] = static_cast<bool>(present[i][j]);
    }
  return c;
}

}  // namespace

TEST(MMDiT, JointAttentionIsSoftmaxOverBothStreamsWithoutPaddedCaptionKeys) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(1);
  const int64_t b = 2, h = 2, lc = 3, li = 4, dh = 5;
  auto r = [&](int64_t l) { return at::randn({b, h, l, dh}, g, at::kDouble); };
  at::Tensor qc = r(lc), kc = r(lc), vc = r(lc), qi = r(li), ki = r(li), vi = r(li);
  at::Tensor mask = at::tensor({1, 0, 1, 0, 0, 0}, at::kLong).to(at::kBool).view({b, lc});  // caption 0: tokens 0, 2; caption 1: none
  auto [out_c, out_i] = fmm::joint_attention(qc, kc, vc, qi, ki, vi, mask);
  at::Tensor q = at::cat({qc, qi}, 2), k = at::cat({kc, ki}, 2), v = at::cat({vc, vi}, 2);
  for (int64_t s = 0; s < b; ++s)
    for (int64_t head = 0; head < h; ++head)
      for (int64_t i = 0; i < lc + li; ++i) {
        // The loop reference: weights over the keys that take part, normalised.
        std::vector<double> w;
        double total = 0;
        for (int64_t j = 0; j < lc + li; ++j) {
          const bool present = j >= lc || mask[s][j].item<bool>();
          const double e = present ? std::exp((q[s][head][i] * k[s][head][j]).sum().item<double>() / std::sqrt(double(dh))) : 0.0;
          w.push_back(e);
          total += e;
        }
        at::Tensor expected = at::zeros({dh}, at::kDouble);
        for (int64_t j = 0; j < lc + li; ++j) expected += v[s][head][j] * (w[static_cast<size_t>(j)] / total);
        at::Tensor got = i < lc ? out_c[s][head][i] : out_i[s][head][i - lc];
        EXPECT_TRUE(at::allclose(got, expected, 1e-12, 1e-12)) << s << " " << head << " " << i;
      }
}

TEST(MMDiT, UntrainedOutputIsExactlyZeroAndShapesFollowTheInput) {
  auto model = std::make_shared<fmm::MMDiTImpl>(captions());
  at::Tensor x = at::randn({3, 16});
  auto c = caption({{1, 2, 0, 0, 0}, {3, 3, 3, 3, 3}, {0, 0, 0, 0, 0}}, {{1, 1, 0, 0, 0}, {1, 1, 1, 1, 1}, {0, 0, 0, 0, 0}});
  at::Tensor v = model->forward_with(x, at::rand({3}), c);
  EXPECT_EQ(v.sizes(), x.sizes());
  EXPECT_EQ(v.abs().max().item<double>(), 0.0);
  at::Tensor images = at::randn({3, 1, 4, 4});
  EXPECT_EQ(model->forward(images, at::full({}, 0.3)).sizes(), images.sizes());
}

TEST(MMDiT, TheEmptyCaptionIsOneVelocityWhateverThePaddedIds) {
  auto model = fmtest::random_network<fmm::MMDiTImpl>(captions(), 2, 0.2);
  at::Tensor x = at::randn({2, 16}, at::kDouble), t = at::tensor({0.2, 0.7}, at::kDouble);
  at::Tensor none = model->forward(x, t);
  at::Tensor empty_a = model->forward_with(x, t, caption({{1, 2, 3, 4, 5}, {6, 6, 6, 6, 6}}, {{0, 0, 0, 0, 0}, {0, 0, 0, 0, 0}}));
  at::Tensor empty_b = model->forward_with(x, t, caption({{0, 0}, {5, 1}}, {{0, 0}, {0, 0}}));
  EXPECT_TRUE(at::allclose(none, empty_a, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(none, empty_b, 1e-12, 1e-12));
  EXPECT_GT(none.abs().max().item<double>(), 1e-3);  // random weights: not the zero of the initialisation
}

TEST(MMDiT, PaddingDoesNotMatterAndTheCaptionDoes) {
  auto model = fmtest::random_network<fmm::MMDiTImpl>(captions(), 3, 0.2);
  at::Tensor x = at::randn({1, 16}, at::kDouble), t = at::full({1}, 0.5, at::kDouble);
  at::Tensor a = model->forward_with(x, t, caption({{1, 2, 6, 6, 6}}, {{1, 1, 0, 0, 0}}));
  at::Tensor padded_otherwise = model->forward_with(x, t, caption({{1, 2, 0, 4, 3}}, {{1, 1, 0, 0, 0}}));
  at::Tensor shorter = model->forward_with(x, t, caption({{1, 2}}, {{1, 1}}));
  EXPECT_TRUE(at::allclose(a, padded_otherwise, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(a, shorter, 1e-12, 1e-12));
  at::Tensor other_word = model->forward_with(x, t, caption({{1, 3}}, {{1, 1}}));
  at::Tensor other_order = model->forward_with(x, t, caption({{2, 1}}, {{1, 1}}));  // learned positions
  EXPECT_GT((a - other_word).abs().max().item<double>(), 1e-4);
  EXPECT_GT((a - other_order).abs().max().item<double>(), 1e-4);
}

TEST(MMDiT, ClassesAreOneTokenCaptionsWithTheNullLabelEmpty) {
  auto o = fmm::MMDiTOptions(1, 4, 4).width(16).depth(1).heads(2).mlp_ratio(2).num_classes(3);
  auto model = fmtest::random_network<fmm::MMDiTImpl>(o, 4, 0.2);
  at::Tensor x = at::randn({3, 16}, at::kDouble), t = at::full({}, 0.4, at::kDouble);
  at::Tensor labels = at::tensor(std::vector<int64_t>{0, 2, fmm::kNullLabel}, at::kLong);
  at::Tensor v = model->forward_conditional(x, t, labels);
  at::Tensor unconditional = model->forward(x, t);
  EXPECT_TRUE(at::allclose(v[2], unconditional[2], 1e-12, 1e-12));
  EXPECT_GT((v[0] - unconditional[0]).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(model->num_classes(), 3);
  EXPECT_THROW(model->forward_conditional(x, t, at::tensor({0, 3, 1}, at::kLong)), std::invalid_argument);
}

TEST(MMDiT, GradientsMatchFiniteDifferences) {
  auto model = fmtest::random_network<fmm::MMDiTImpl>(captions(4, 3).depth(1), 5, 0.3);
  at::Tensor x = at::randn({2, 16}, at::kDouble), t = at::tensor({0.3, 0.8}, at::kDouble);
  auto c = caption({{1, 3, 0}, {2, 0, 0}}, {{1, 1, 0}, {1, 0, 0}});
  auto loss = [&] { return model->forward_with(x, t, c).pow(2).sum(); };
  EXPECT_GT(fmtest::expect_gradients_match_finite_differences(*model, loss, 1e-5), 50);
}

TEST(MMDiT, RegistryBuildsItForImagesAndNamesMistakes) {
  auto spec = fmm::model_registration("mmdit").describe({1, 28, 28}, 10, {{"width", 32}, {"depth", 1}, {"heads", 2}});
  EXPECT_EQ(spec["options"]["patch"], 2);
  EXPECT_EQ(spec["options"]["num_classes"], 10);
  auto model = fmm::make_model(spec);
  EXPECT_EQ(model->sample_shape(), (std::vector<int64_t>{1, 28, 28}));
  try {
    fmm::model_registration("mmdit").describe({1, 28, 28}, 10, {{"patch", 3}});
    FAIL() << "patch 3 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("patch size 3 does not divide 28x28"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fmm::model_registration("mmdit").describe({1, 28, 28}, 0, nlohmann::json::object()), std::invalid_argument);  // nothing to read
  EXPECT_THROW(fmm::model_registration("mmdit").describe({2}, 3, nlohmann::json::object()), std::invalid_argument);         // not images
  auto with_captions = std::make_shared<fmm::MMDiTImpl>(captions());
  at::Tensor x = at::randn({1, 16});
  EXPECT_THROW(with_captions->forward_with(x, at::full({}, 0.5), caption({{7}}, {{1}})), c10::Error);  // id outside the vocabulary
  EXPECT_THROW(with_captions->forward_with(x, at::full({}, 0.5), caption({{1, 1, 1, 1, 1, 1}}, {{1, 1, 1, 1, 1, 1}})), c10::Error);  // too long
}
