#include <cstdio>

#include <ATen/ATen.h>

#include "flowmatch/metrics.h"

int main() {
  at::Tensor a = at::randn({10, 2}, at::kDouble);
  const double w2 = flowmatch::metrics::wasserstein2(a, a + 1.0);  // a translation by (1, 1): √2
  std::printf("%.6f\n", w2);
  return w2 > 1.41421 && w2 < 1.41422 ? 0 : 1;
}
