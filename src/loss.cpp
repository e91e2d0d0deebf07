#include "flowmatch/loss.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace flowmatch {

at::Tensor flow_matching_loss(const at::Tensor& prediction, const at::Tensor& target,
                              const at::Tensor& weight) {
  TORCH_CHECK(prediction.defined() && target.defined(), "flow_matching_loss: undefined tensor");
  TORCH_CHECK(prediction.sizes() == target.sizes(), "flow_matching_loss: prediction ",
              prediction.sizes(), " and target ", target.sizes(), " must have the same shape");
  at::Tensor squared = (prediction - target).square();
  if (!weight.defined()) return squared.mean();
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == prediction.size(0),
              "flow_matching_loss: weight must have shape (", prediction.size(0), "), got ",
              weight.sizes());
  std::vector<int64_t> shape(static_cast<size_t>(prediction.dim()), 1);
  shape[0] = prediction.size(0);
  return (squared * weight.view(shape)).mean();
}

}  // namespace flowmatch
