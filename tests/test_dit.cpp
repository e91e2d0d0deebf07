// DiT (models/dit.h): patches in and out, the fixed 2-D positions against their formula, the
// zero-initialised output, class conditioning with the "no class" label, finite-difference gradients,
// and the registry's checks (a patch that does not divide the image is named).
#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "flowmatch/models/dit.h"
#include "model_checks.h"

namespace fmm = flowmatch::models;

namespace {

std::shared_ptr<fmm::DiTImpl> random_dit(fmm::DiTOptions o, uint64_t seed, double scale = 0.2) {
  return fmtest::random_network<fmm::DiTImpl>(o, seed, scale);
}

}  // namespace

TEST(DiT, PatchesRoundTripAndHoldTheirPixels) {
  at::Tensor images = at::arange(2 * 3 * 4 * 6, at::kDouble).reshape({2, 3, 4, 6});
  at::Tensor patches = fmm::patchify(images, 2);
  EXPECT_EQ(patches.sizes(), (std::vector<int64_t>{2, 6, 12}));
  // Patch 4 of image 1 is row 1, column 1 of the 2 × 3 grid: pixels rows 2..3, columns 2..3, channel-major.
  at::Tensor expected = images[1].slice(1, 2, 4).slice(2, 2, 4).reshape({-1});
  EXPECT_TRUE(at::equal(patches[1][4], expected));
  EXPECT_TRUE(at::equal(fmm::unpatchify(patches, 3, 4, 6, 2), images));
  EXPECT_TRUE(at::equal(fmm::unpatchify(fmm::patchify(images, 1), 3, 4, 6, 1), images));
}

TEST(DiT, PositionsFollowTheSinCosFormula) {
  at::Tensor pos = fmm::sincos_positions_2d(3, 5, 8).to(at::kDouble);  // quarter = 2: frequencies 1 and 1/100
  EXPECT_EQ(pos.sizes(), (std::vector<int64_t>{15, 8}));
  const int64_t row = 2, column = 3, k = row * 5 + column;
  const double expected[8] = {std::sin(row * 1.0),    std::sin(row / 100.0),    std::cos(row * 1.0),    std::cos(row / 100.0),
                              std::sin(column * 1.0), std::sin(column / 100.0), std::cos(column * 1.0), std::cos(column / 100.0)};
  for (int j = 0; j < 8; ++j) EXPECT_NEAR(pos[k][j].item<double>(), expected[j], 1e-6) << j;
}

TEST(DiT, UntrainedOutputIsZeroAndShapedLikeTheInput) {
  fmm::DiTImpl model(fmm::DiTOptions(1, 8, 8).patch(2).width(32).depth(2).heads(4).num_classes(10));
  at::Tensor x = at::randn({3, 64});
  at::Tensor v = model.forward_conditional(x, at::rand({3}), at::tensor(std::vector<int64_t>{0, 9, fmm::kNullLabel}, at::kLong));
  EXPECT_EQ(v.sizes(), x.sizes());
  EXPECT_EQ(v.abs().max().item<double>(), 0.0);
  EXPECT_EQ(model.forward(x.reshape({3, 1, 8, 8}), at::zeros({})).sizes(), (std::vector<int64_t>{3, 1, 8, 8}));
}

TEST(DiT, ClassesTimeAndEveryPixelMoveTheOutput) {
  auto model = random_dit(fmm::DiTOptions(2, 4, 4).patch(2).width(16).depth(2).heads(2).num_classes(3), 5);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  at::Tensor x = at::randn({2, 32}, gen, at::kDouble), t = at::full({2}, 0.4, at::kDouble);
  at::Tensor labels = at::tensor({0, 0}, at::kLong);
  at::Tensor base = model->forward_conditional(x, t, labels);
  auto moved = [&](const at::Tensor& a) { return (a - base).abs().max().item<double>(); };
  EXPECT_GT(moved(model->forward_conditional(x, t, at::tensor({1, 1}, at::kLong))), 1e-6);
  EXPECT_GT(moved(model->forward_conditional(x, t, at::full({2}, fmm::kNullLabel, at::kLong))), 1e-6);
  EXPECT_TRUE(at::allclose(model->forward(x, t), model->forward_conditional(x, t, at::full({2}, fmm::kNullLabel, at::kLong)), 0, 0));
  EXPECT_GT(moved(model->forward_conditional(x, t + 0.1, labels)), 1e-6);
  // Attention mixes patches: a pixel of the last patch moves the output of the first.
  at::Tensor y = x.clone();
  y[0][31] += 1.0;
  EXPECT_GT((model->forward_conditional(y, t, labels)[0].reshape({2, 4, 4})[0][0][0] - base[0].reshape({2, 4, 4})[0][0][0]).abs().item<double>(), 1e-9);
  EXPECT_THROW(model->forward_conditional(x, t, at::tensor({3, 0}, at::kLong)), std::invalid_argument);
}

TEST(DiT, GradientsMatchFiniteDifferences) {
  auto model = random_dit(fmm::DiTOptions(1, 4, 4).patch(2).width(8).depth(1).heads(2).num_classes(2), 9);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  at::Tensor x = at::randn({2, 16}, gen, at::kDouble), target = at::randn({2, 16}, gen, at::kDouble);
  at::Tensor t = at::rand({2}, gen, at::kDouble), labels = at::tensor(std::vector<int64_t>{1, fmm::kNullLabel}, at::kLong);
  auto loss = [&] { return (model->forward_conditional(x, t, labels) - target).square().sum(); };
  EXPECT_GT(fmtest::expect_gradients_match_finite_differences(*model, loss, 1e-6), 20);
}

TEST(DiT, RegistryFillsTheImageAndNamesABadPatch) {
  const auto registration = fmm::model_registration("dit");
  const nlohmann::json spec = registration.describe({1, 28, 28}, 10, {{"width", 64}, {"depth", 2}});
  EXPECT_EQ(spec["options"]["patch"], 2);
  EXPECT_EQ(spec["options"]["num_classes"], 10);
  auto model = fmm::make_model(spec);
  EXPECT_EQ(model->spec(), spec);
  EXPECT_EQ(model->num_classes(), 10);
  auto message = [&](const std::vector<int64_t>& shape, const nlohmann::json& options) {
    try {
      registration.describe(shape, 0, options);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({1, 28, 28}, {{"patch", 3}}).find("patch size 3 does not divide 28x28 images"), std::string::npos);
  EXPECT_NE(message({1, 28, 28}, {{"channels", 8}}).find("'channels' does not apply to model dit"), std::string::npos);
  EXPECT_NE(message({2}, {}).find("needs images"), std::string::npos);
  EXPECT_NE(message({1, 8, 8}, {{"width", 30}}).find("divisible by 4"), std::string::npos);
}
