#include "flowmatch/data/discrete_checkerboard.h"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "flowmatch/discrete_path.h"

namespace flowmatch::data {

namespace {
void check_grid(int64_t grid) {
  if (grid < 4 || grid % 4 != 0 || grid > 65536) {
    throw std::invalid_argument("discrete checkerboard: the grid must be a multiple of 4 in [4, 65536], got " + std::to_string(grid));
  }
}
}  // namespace

at::Tensor sample_discrete_checkerboard(int64_t n, at::Generator& generator, int64_t grid) {
  check_grid(grid);
  if (n < 1) throw std::invalid_argument("number of samples must be >= 1, got " + std::to_string(n));
  const int64_t block = grid / 4;
  at::Tensor a = at::randint(grid, {n}, generator, at::kLong);
  at::Tensor s = at::randint(block, {n}, generator, at::kLong);
  at::Tensor up = at::randint(2, {n}, generator, at::kLong);
  at::Tensor b = s + 2 * block - up * 2 * block + (a.div(block, "floor").remainder(2)) * block;
  return at::stack({a, b}, 1);
}

at::Tensor on_discrete_checkerboard(const at::Tensor& cells, int64_t grid) {
  check_grid(grid);
  TORCH_CHECK(cells.dim() == 2 && cells.size(1) == 2, "discrete checkerboard: cells must be (n, 2), got ", cells.sizes());
  at::Tensor c = cells.to(at::kLong);
  at::Tensor inside = ((c >= 0) & (c < grid)).all(1);
  at::Tensor blocks = c.div(grid / 4, "floor").sum(1);
  return inside & (blocks.remainder(2) == 0);
}

at::Tensor discrete_checkerboard_posterior_logits(const at::Tensor& x_t, const at::Tensor& t, const MixtureDiscretePath& path) {
  const int64_t grid = path.vocabulary();
  check_grid(grid);
  TORCH_CHECK(x_t.dim() == 2 && x_t.size(1) == 2, "discrete checkerboard posterior: x_t must be (B, 2), got ", x_t.sizes());
  const int64_t block = grid / 4;
  // Kept cells: blocks (I, J) with I + J even, and q uniform over them. Each token's likelihood
  // f(v) = p_t(x_t | x₁ = v) = c + d·δ(v, x_t) (c = (1 − κ)p₀(x_t), d = κ, or 0 for the mask token), so
  // every sum over cells is a sum over the 4 blocks: O(B) work, and logarithms of (B, 4) tensors only
  // (this LibTorch's double log and exp cost ~30 ns an element).
  at::Tensor pattern = ((at::arange(4, at::kLong).unsqueeze(1) + at::arange(4, at::kLong).unsqueeze(0)).remainder(2) == 0).to(at::kDouble);
  at::Tensor kappa = path.kappa_at(t.to(at::kCPU)).first.reshape({-1});
  at::Tensor p0 = path.source_probabilities();
  at::Tensor x = x_t.to(at::kCPU);
  at::Tensor cells = at::arange(grid, at::kLong);
  std::vector<at::Tensor> c(2), d(2), per_block(2), token(2);
  for (int i = 0; i < 2; ++i) {
    token[i] = x.select(1, i).contiguous();
    at::Tensor real = (token[i] < grid).to(at::kDouble);
    c[i] = (1 - kappa) * p0.index_select(0, token[i]);
    d[i] = kappa * real;
    at::Tensor home = at::one_hot(token[i].clamp_max(grid - 1).div(block, "floor"), 4).to(at::kDouble);
    per_block[i] = block * c[i].unsqueeze(1) + d[i].unsqueeze(1) * home;  // Σ_{v in block I} f(v)
  }
  std::vector<at::Tensor> logits;
  for (int i = 0; i < 2; ++i) {
    at::Tensor others = at::matmul(per_block[1 - i], pattern);  // S(I) = Σ_b A(I, b) f_other(b), (B, 4)
    at::Tensor z = (per_block[i] * others).sum(1, true);         // Σ_a f(a) S(block(a))
    at::Tensor own = at::where(cells.unsqueeze(0) == token[i].unsqueeze(1), (c[i] + d[i]).log().unsqueeze(1), c[i].log().unsqueeze(1));
    logits.push_back(own + others.log().repeat_interleave(block, 1) - z.log());
  }
  return at::stack(logits, 1).to(x_t.device());
}

}  // namespace flowmatch::data
