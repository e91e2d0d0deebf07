#include "flowmatch/data/point_cloud.h"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "flowmatch/io/pt.h"

namespace flowmatch::data {

at::Tensor load_point_cloud(const std::string& path, const std::string& what) {
  const std::string name = what + " '" + path + "': ";
  at::Tensor t;
  try {
    t = io::load_array(path);
  } catch (const std::exception& e) {
    throw std::runtime_error(name + e.what());
  }
  if (t.dim() != 2 || t.size(0) < 1 || t.size(1) < 1) {
    throw std::runtime_error(name + "expected an (N, D) array, got shape " + c10::str(t.sizes()));
  }
  if (t.scalar_type() != at::kDouble) t = t.to(at::kFloat);
  at::Tensor bad = (~at::isfinite(t)).any(1).nonzero();
  if (bad.numel() > 0) {
    const int64_t row = bad[0][0].item<int64_t>();
    const int64_t col = (~at::isfinite(t[row])).nonzero()[0][0].item<int64_t>();
    throw std::runtime_error(name + "row " + std::to_string(row) + ", column " + std::to_string(col) + " holds NaN or Inf");
  }
  return t.contiguous();
}

PointSampler point_cloud_sampler(const at::Tensor& points) {
  if (!points.defined() || points.dim() != 2 || points.size(0) < 1 || points.size(1) < 1) {
    throw std::invalid_argument("point_cloud_sampler: expects a non-empty (N, D) tensor");
  }
  at::Tensor rows = points.to(at::kCPU, at::kFloat).contiguous();
  return [rows](int64_t n, at::Generator& generator) {
    if (n < 1) throw std::invalid_argument("point cloud: n must be >= 1, got " + std::to_string(n));
    return rows.index_select(0, at::randint(rows.size(0), {n}, generator, at::kLong));
  };
}

PointSampler gaussian_sampler(int64_t dim) {
  if (dim < 1) throw std::invalid_argument("gaussian_sampler: dim must be >= 1, got " + std::to_string(dim));
  return [dim](int64_t n, at::Generator& generator) {
    if (n < 1) throw std::invalid_argument("gaussian: n must be >= 1, got " + std::to_string(n));
    return at::randn({n, dim}, generator, at::kFloat);
  };
}

at::Tensor split_rows(const at::Tensor& x, uint64_t seed, int part) {
  if (part < 0 || part > 2) throw std::invalid_argument("split_rows: part must be 0 (train), 1 (validation) or 2 (test), got " + std::to_string(part));
  const int64_t n = x.size(0);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor perm = at::randperm(n, gen, at::kLong);
  const int64_t train = (n * 8) / 10, validation = n / 10;
  const int64_t lo = part == 0 ? 0 : part == 1 ? train : train + validation;
  const int64_t hi = part == 0 ? train : part == 1 ? train + validation : n;
  return x.index_select(0, perm.slice(0, lo, hi));
}

}  // namespace flowmatch::data
