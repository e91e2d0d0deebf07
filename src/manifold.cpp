#include "flowmatch/manifold.h"

#include <ATen/ATen.h>

namespace flowmatch {

at::Tensor Manifold::error_ratio(const at::Tensor& err, const at::Tensor& a, const at::Tensor& b, double atol,
                                 double rtol) const {
  at::Tensor scale = at::maximum(a.abs(), b.abs()).mul_(rtol).add_(atol);
  at::Tensor ratio = (err / scale).square_();
  if (ratio.dim() == 0) return ratio.sqrt().reshape({1});
  return ratio.reshape({ratio.size(0), -1}).mean(1).sqrt();
}

}  // namespace flowmatch
