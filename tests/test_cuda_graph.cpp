// CapturedSolve's refusals, which every build makes before touching a GPU (cuda_graph.h); the replay
// itself is checked against the eager solve in tests/test_cuda.cpp, on a CUDA build with a device.
#include <ATen/ATen.h>

#include "flowmatch/cuda_graph.h"
#include "test_util.h"

namespace fm = flowmatch;

namespace {
std::string refusal(const at::Tensor& example, const fm::SolverOptions& options) {
  try {
    fm::CapturedSolve solve([](const at::Tensor& x, const at::Tensor&) { return -x; }, example, options);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no invalid_argument";
}
}  // namespace

TEST(CapturedSolve, RefusesWhatAGraphCannotHoldNamingIt) {
  const at::Tensor x = at::zeros({4, 2});
  const auto euler = fm::SolverOptions().method(fm::SolverMethod::Euler).steps(10);
  EXPECT_NE(refusal(x, euler).find("on cpu"), std::string::npos);
  EXPECT_NE(refusal(x, fm::SolverOptions().method(fm::SolverMethod::Dopri5)).find("dopri5"), std::string::npos);
  EXPECT_NE(refusal(x, fm::SolverOptions(euler).record_trajectory(true)).find("record_trajectory"), std::string::npos);
  EXPECT_NE(refusal(at::zeros({4, 2}, at::kLong), euler).find("floating-point"), std::string::npos);
}
