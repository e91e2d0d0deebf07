// Classifier-free guidance: w = 0 is the conditional velocity, the guided formula on a toy model
// whose velocities are known, the doubled batch, and the errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "flowmatch/guidance.h"
#include "flowmatch/models/unet.h"
#include "flowmatch/solvers.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
// v(x, t, c) = scale[c] · x + t · shift[c], with row `classes` of the tables for the null label.
class ToyConditional : public fm::models::VelocityModel {
 public:
  explicit ToyConditional(int64_t classes) : classes_(classes) {
    scale_ = at::linspace(0.5, 2.0, classes + 1, at::kDouble);
    shift_ = at::linspace(-1.0, 3.0, classes + 1, at::kDouble);
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override {
    return forward_conditional(x, t, at::full({x.size(0)}, fm::models::kNullLabel, at::kLong));
  }
  at::Tensor forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) override {
    fm::models::check_labels(labels, x.size(0), classes_);
    ++calls;
    batch_sizes.push_back(x.size(0));
    at::Tensor row = at::where(labels.eq(fm::models::kNullLabel), at::full_like(labels, classes_), labels);
    at::Tensor tt = fm::models::time_column(t, x.size(0), x.options());
    return scale_.index_select(0, row).unsqueeze(1) * x + tt * shift_.index_select(0, row).unsqueeze(1);
  }
  int64_t num_classes() const override { return classes_; }
  nlohmann::json spec() const override { return {{"type", "toy"}}; }
  int64_t calls = 0;
  std::vector<int64_t> batch_sizes;
  at::Tensor scale_, shift_;

 private:
  int64_t classes_;
};
}  // namespace

TEST(Guidance, ScaleZeroIsTheConditionalVelocityWithOneCall) {
  auto model = std::make_shared<ToyConditional>(3);
  at::Tensor x = at::randn({4, 2}, at::kDouble), t = at::full({}, 0.25, at::kDouble);
  at::Tensor labels = at::tensor({0, 2, 1, 0}, at::kLong);
  auto field = fm::guided_velocity_field(model, labels, 0.0);
  at::Tensor v = field(x, t);
  EXPECT_EQ(model->calls, 1);
  EXPECT_TRUE(fmtest::AllClose(v, model->forward_conditional(x, t, labels), 0, 0));
}

TEST(Guidance, GuidedFieldIsOnePlusWConditionalMinusWUnconditional) {
  auto model = std::make_shared<ToyConditional>(3);
  at::Tensor x = at::randn({5, 3}, at::kDouble), labels = at::tensor({0, 1, 2, 1, 0}, at::kLong);
  for (double w : {0.5, 1.0, 2.0, 4.0}) {
    for (double time : {0.0, 0.4, 1.0}) {
      at::Tensor t = at::full({}, time, at::kDouble);
      model->calls = 0;
      model->batch_sizes.clear();
      at::Tensor v = fm::guided_velocity_field(model, labels, w)(x, t);
      EXPECT_EQ(model->calls, 1);  // one call on the doubled batch
      EXPECT_EQ(model->batch_sizes.front(), 10);
      // Closed form: ((1 + w) a_c − w a_∅) x + t ((1 + w) b_c − w b_∅).
      at::Tensor a = model->scale_.index_select(0, labels).unsqueeze(1), b = model->shift_.index_select(0, labels).unsqueeze(1);
      const double a0 = model->scale_[3].item<double>(), b0 = model->shift_[3].item<double>();
      at::Tensor expected = ((1 + w) * a - w * a0) * x + time * ((1 + w) * b - w * b0);
      EXPECT_TRUE(fmtest::AllClose(v, expected, 1e-12, 1e-12)) << "w " << w << " t " << time;
    }
  }
  // Per-sample times (shape (B)) are doubled with the batch.
  at::Tensor t = at::rand({5}, at::kDouble);
  at::Tensor v = fm::guided_velocity_field(model, labels, 2.0)(x, t);
  at::Tensor expected = fm::guided_velocity(model->forward_conditional(x, t, labels), model->forward(x, t), 2.0);
  EXPECT_TRUE(fmtest::AllClose(v, expected, 1e-12, 1e-12));
}

TEST(Guidance, GuidedLinearFlowMatchesTheClosedFormSolution) {
  // With v = a x + t b per row, Euler on the guided field converges to the linear ODE's solution:
  // x(1) = e^{a'} x0 + b' (e^{a'} − 1 − a') / a'², with a' and b' the guided coefficients. RK4 with
  // 50 steps is accurate to ~1e-8 here.
  auto model = std::make_shared<ToyConditional>(2);
  at::Tensor x0 = at::randn({4, 2}, at::kDouble), labels = at::tensor({0, 1, 1, 0}, at::kLong);
  const double w = 1.5;
  auto result = fm::solve_ode(fm::guided_velocity_field(model, labels, w), x0, fm::SolverOptions().method(fm::SolverMethod::RK4).steps(50));
  at::Tensor a = (1 + w) * model->scale_.index_select(0, labels).unsqueeze(1) - w * model->scale_[2];
  at::Tensor b = (1 + w) * model->shift_.index_select(0, labels).unsqueeze(1) - w * model->shift_[2];
  at::Tensor expected = at::exp(a) * x0 + b * (at::exp(a) - 1 - a) / (a * a);
  EXPECT_TRUE(fmtest::AllClose(result.x, expected, 1e-7, 1e-7));
}

TEST(Guidance, WorksOnTheUNet) {
  at::manual_seed(0);
  auto net = std::make_shared<fm::models::UNetImpl>(fm::models::UNetOptions(1, 8).base_channels(8).channel_multipliers({1, 2}).num_classes(3));
  {
    torch::NoGradGuard no_grad;
    auto gen = fmtest::generator(1);
    for (auto& p : net->parameters()) p.copy_(at::randn(p.sizes(), gen) * 0.2);
  }
  at::Tensor x = at::randn({3, 64}), t = at::full({}, 0.5), labels = at::tensor({0, 1, 2}, at::kLong);
  at::Tensor expected = 3.0 * net->forward_conditional(x, t, labels) - 2.0 * net->forward(x, t);
  EXPECT_TRUE(fmtest::AllClose(fm::guided_velocity_field(net, labels, 2.0)(x, t), expected, 1e-4, 1e-5));
}

TEST(Guidance, ErrorsAreNamed) {
  auto model = std::make_shared<ToyConditional>(3);
  at::Tensor labels = at::tensor({0, 1}, at::kLong);
  EXPECT_THROW(fm::guided_velocity_field(model, labels, -1.0), std::invalid_argument);
  EXPECT_THROW(fm::guided_velocity_field(model, labels, std::nan("")), std::invalid_argument);
  EXPECT_THROW(fm::guided_velocity_field(model, at::tensor({0, 3}, at::kLong), 1.0), std::invalid_argument);
  EXPECT_THROW(fm::guided_velocity_field(nullptr, labels, 1.0), std::invalid_argument);
  at::manual_seed(0);
  auto unconditional = std::make_shared<fm::models::UNetImpl>(fm::models::UNetOptions(1, 8).base_channels(8).channel_multipliers({1}));
  EXPECT_THROW(fm::guided_velocity_field(unconditional, labels, 1.0), std::invalid_argument);
}

TEST(Guidance, GridLabels) {
  EXPECT_TRUE(fm::grid_labels(6, 3).equal(at::tensor({0, 0, 1, 1, 2, 2}, at::kLong)));
  EXPECT_TRUE(fm::grid_labels(3, 5, 4).equal(at::tensor({4, 4, 4}, at::kLong)));
  EXPECT_THROW(fm::grid_labels(7, 3), std::invalid_argument);
  EXPECT_THROW(fm::grid_labels(3, 3, 3), std::invalid_argument);
}
