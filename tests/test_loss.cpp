// The flow-matching loss on hand-computed cases and its gradient.
#include "flowmatch/loss.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(FlowMatchingLoss, HandComputedValues) {
  at::Tensor pred = at::tensor({1.0, 2.0, 3.0, 4.0}, at::kDouble).view({2, 2});
  at::Tensor target = at::tensor({0.0, 0.0, 1.0, 1.0}, at::kDouble).view({2, 2});
  // Squared errors 1, 4, 4, 9: mean 18/4.
  EXPECT_DOUBLE_EQ(fm::flow_matching_loss(pred, target).item<double>(), 4.5);
  // Weights (1, 0) keep only the first sample: (1 + 4)/4.
  EXPECT_DOUBLE_EQ(fm::flow_matching_loss(pred, target, at::tensor({1.0, 0.0}, at::kDouble)).item<double>(), 1.25);
}

TEST(FlowMatchingLoss, GradientIsTwiceTheResidualOverTheCount) {
  auto g = fmtest::generator(0);
  at::Tensor pred = at::randn({5, 3}, g, at::kDouble).requires_grad_();
  at::Tensor target = at::randn({5, 3}, g, at::kDouble);
  fm::flow_matching_loss(pred, target).backward();
  EXPECT_TRUE(fmtest::AllClose(pred.grad(), 2 * (pred.detach() - target) / 15, 1e-12, 1e-14));
}

TEST(FlowMatchingLoss, RejectsMismatchedShapes) {
  EXPECT_THROW(fm::flow_matching_loss(at::zeros({2, 2}), at::zeros({2, 3})), c10::Error);
  EXPECT_THROW(fm::flow_matching_loss(at::zeros({2, 2}), at::zeros({2, 2}), at::ones({3})), c10::Error);
}
