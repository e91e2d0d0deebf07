#pragma once
/// \file
/// Two-dimensional toy distributions, defined exactly as in docs/DATASETS.md
/// (gaussian, 8gaussians, moons and checkerboard follow the team's PROTOCOLS.md).

#include <functional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

namespace flowmatch::data {

/// Draws n points of shape (n, D) (float32, CPU) using only `generator` for randomness.
using PointSampler = std::function<at::Tensor(int64_t n, at::Generator& generator)>;

/// The valid names: gaussian, 8gaussians, moons, checkerboard, circles, 2spirals, swissroll,
/// pinwheel, scurve.
const std::vector<std::string>& toy2d_names();
bool is_toy2d(const std::string& name);

/// n samples (n, 2) of the named distribution. Throws std::invalid_argument for an unknown
/// name (listing the valid ones) or n < 1.
at::Tensor sample_toy2d(const std::string& name, int64_t n, at::Generator& generator);

/// A sampler bound to a name (validated now, not at the first draw).
PointSampler toy2d_sampler(const std::string& name);

}  // namespace flowmatch::data
