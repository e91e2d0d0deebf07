#pragma once
/// \file
/// Class conditioning at sampling time and classifier-free guidance (Ho & Salimans, 2022):
///   ṽ(x, t, c) = (1 + w) · v(x, t, c) − w · v(x, t, ∅),
/// with ∅ the network's learned "no class" entry (trained by dropping labels). w = 0 is the plain
/// conditional velocity; any solver integrates the result.

#include <memory>

#include <ATen/Tensor.h>

#include "flowmatch/models/velocity_model.h"
#include "flowmatch/velocity_field.h"

namespace flowmatch {

/// The guided combination of a conditional and an unconditional velocity (any shapes that broadcast).
at::Tensor guided_velocity(const at::Tensor& conditional, const at::Tensor& unconditional, double guidance_scale);

/// v(x, t, labels) guided with scale `guidance_scale` (w ≥ 0; w = 0: one network call per
/// evaluation, otherwise one call on the doubled batch [x; x] with labels [c; ∅]). `labels` (B)
/// int64, entries in [0, num_classes) or kNullLabel; the solver's batch must be B. Throws
/// std::invalid_argument when the model is not conditional, labels are bad, or w is negative or
/// not finite.
VelocityField guided_velocity_field(std::shared_ptr<models::VelocityModel> model, const at::Tensor& labels,
                                    double guidance_scale = 0.0);

/// `n` labels for a sampling grid: class k repeated n / num_classes times, in class order (n must
/// be a multiple of num_classes), or all `only_class` when it is ≥ 0.
at::Tensor grid_labels(int64_t n, int64_t num_classes, int64_t only_class = -1);

}  // namespace flowmatch
