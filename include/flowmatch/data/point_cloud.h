#pragma once
/// \file
/// Any point cloud as a data set: rows (N, D) from a NumPy file, drawn uniformly; and the
/// D-dimensional standard normal source that goes with it.

#include <cstdint>
#include <string>

#include <ATen/Tensor.h>

#include "flowmatch/data/toy2d.h"

namespace flowmatch::data {

/// Reads an (N, D) array from .npy or .pt (N, D ≥ 1); float64 stays float64, other types become
/// float32. Throws std::runtime_error "WHAT 'path': problem" (WHAT = `what`, e.g. a flag name): not an
/// array of that shape, or the first row and column holding NaN or Inf.
at::Tensor load_point_cloud(const std::string& path, const std::string& what = "data");

/// Rows of `points` (N, D) drawn uniformly with replacement (float32, CPU). Throws
/// std::invalid_argument for an empty or non-2-D tensor.
PointSampler point_cloud_sampler(const at::Tensor& points);

/// Part `part` (0 train, 1 validation, 2 test) of the rows of x under a permutation seeded with `seed`:
/// the first 80 %, the next 10 %, the rest. The splits of finite data sets (manifold and molecular data).
at::Tensor split_rows(const at::Tensor& x, uint64_t seed, int part);

/// N(0, I) in `dim` dimensions (float32, CPU).
PointSampler gaussian_sampler(int64_t dim);

}  // namespace flowmatch::data
