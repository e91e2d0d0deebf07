#pragma once
/// \file
/// Any point cloud as a data set: rows (N, D) from a NumPy file, drawn uniformly; and the
/// D-dimensional standard normal source that goes with it.

#include <cstdint>
#include <string>

#include <ATen/Tensor.h>

#include "flowmatch/data/toy2d.h"

namespace flowmatch::data {

/// Reads an (N, D) .npy array (float32, float64 or integer; N, D ≥ 1) as float32. Throws
/// std::runtime_error naming the file and the problem: not an array of that shape, or the first row
/// holding NaN or Inf.
at::Tensor load_point_cloud(const std::string& path);

/// Rows of `points` (N, D) drawn uniformly with replacement (float32, CPU). Throws
/// std::invalid_argument for an empty or non-2-D tensor.
PointSampler point_cloud_sampler(const at::Tensor& points);

/// N(0, I) in `dim` dimensions (float32, CPU).
PointSampler gaussian_sampler(int64_t dim);

}  // namespace flowmatch::data
