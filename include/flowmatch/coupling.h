#pragma once
/// \file
/// Couplings: how source (noise) and target (data) samples of a minibatch are paired
/// before the conditional path is drawn.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>

namespace flowmatch {

/// A paired minibatch: row i of x0 goes with row i of x1.
struct CoupledBatch {
  at::Tensor x0;
  at::Tensor x1;
};

class Coupling {
 public:
  virtual ~Coupling() = default;
  /// Pairs a source batch (B, ...) with a target batch (B, ...).
  virtual CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                            std::optional<at::Generator> generator = std::nullopt) const = 0;
  virtual nlohmann::json spec() const = 0;
};

/// Pairs as drawn (independent coupling, I-CFM).
class IndependentCoupling : public Coupling {
 public:
  CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
};

/// Exact minibatch optimal transport for squared Euclidean cost (OT-CFM). For equal batch
/// sizes the plan is a permutation: x0 is reordered so that (x0[i], x1[i]) follow the optimal
/// assignment, each pair used exactly once (no sampling with replacement).
class ExactOTCoupling : public Coupling {
 public:
  CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
};

/// Names accepted by `make_coupling`.
std::vector<std::string> coupling_names();
/// Rebuilds a coupling from its spec or name; throws std::invalid_argument listing valid names.
std::shared_ptr<Coupling> make_coupling(const nlohmann::json& spec);

}  // namespace flowmatch
