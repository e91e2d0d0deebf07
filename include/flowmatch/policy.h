#pragma once
/// \file
/// Batch-1 sampling for control loops. A flow-matching policy (as π0 and flow policies have it) draws an
/// action chunk from noise with a few Euler steps of a velocity conditioned on the current observation,
/// once per control tick, one sample at a time. At batch 1 the arithmetic is a few microseconds per step
/// and LibTorch's per-operation dispatch costs more than it; this header does the same work with the
/// weights in contiguous float32 rows, activations in buffers allocated once, and matrix-vector
/// products written out (vectorised for the CPU it runs on): no allocation and no dispatch per call.
/// examples/policy_control_loop.cpp uses it; `flowmatch bench --case policy-latency` times it against
/// ../shared/bench/ref_policy_latency.py.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>

namespace flowmatch {

/// An MLP for one input row at a time: Linear layers with an activation between them (none after the
/// last), in float32.
class SmallBatchMLP {
 public:
  enum class Activation { SiLU, SELU, ReLU };
  /// From (weight (out, in), bias (out)) per layer, in order; each layer's input width must be the
  /// previous one's output. std::invalid_argument naming the layer whose shapes do not chain.
  SmallBatchMLP(const std::vector<std::pair<at::Tensor, at::Tensor>>& layers, Activation activation);
  int64_t input_size() const { return sizes_.front(); }
  int64_t output_size() const { return sizes_.back(); }
  /// out = MLP(in): `input_size()` floats in, `output_size()` floats out (may not overlap `in`). Uses the
  /// object's buffers: one call at a time per object.
  void forward(const float* in, float* out) const;

 private:
  std::vector<int64_t> sizes_;                ///< widths: input, hidden..., output
  std::vector<std::vector<float>> weights_;   ///< per layer, row-major (out, in)
  std::vector<std::vector<float>> biases_;
  Activation activation_;
  mutable std::vector<float> a_, b_;          ///< the hidden activations, in turn
};

/// The policy's sampler: x ← x + h·v([x, observation, t]) at t = 0, h, …, 1 − h (h = 1/steps), from
/// the noise given in `action`, for one sample. The network's input is [action, observation, t]
/// (ref_policy_latency.py's layout) and its output the action's velocity.
class EulerPolicySampler {
 public:
  /// std::invalid_argument when the network's widths are not action + observation + 1 → action, or
  /// steps < 1.
  EulerPolicySampler(SmallBatchMLP network, int64_t action_size, int64_t observation_size, int64_t steps);
  /// `action` holds the noise on entry (action_size floats) and the sampled action on return. Uses the
  /// object's buffers: one call at a time per object (one sampler per control thread).
  void sample(const float* observation, float* action) const;
  const SmallBatchMLP& network() const { return network_; }
  int64_t steps() const { return steps_; }

 private:
  SmallBatchMLP network_;
  int64_t action_, observation_, steps_;
  mutable std::vector<float> input_, velocity_;
};

/// The Linear layers of a torch.nn.Sequential (ref_policy_latency.py's Policy.net, with activations
/// between them) from tensors read by io::load_pt_tensors: every `prefix`K.weight with its
/// `prefix`K.bias, in increasing K. std::runtime_error when there is none or a bias is missing.
std::vector<std::pair<at::Tensor, at::Tensor>> sequential_linear_layers(const std::map<std::string, at::Tensor>& tensors,
                                                                         const std::string& prefix);

}  // namespace flowmatch
