#pragma once
/// \file
/// Couplings: how source (noise) and target (data) samples of a minibatch are paired
/// before the conditional path is drawn.
///
/// Every coupling takes a source batch of n rows and a target batch of m rows (same trailing
/// shape) and returns max(n, m) pairs. When n = m the exact coupling is a permutation and each row
/// is used exactly once; the plan-based ones (Sinkhorn, unequal sizes) keep every row of the larger
/// side exactly once and draw its partner from the plan's conditional law, so the pairs follow the
/// plan without the duplicated rows of sampling the joint plan with replacement.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>

#include "flowmatch/manifold.h"
#include "flowmatch/transport.h"

namespace flowmatch {

/// A paired minibatch: row i of x0 goes with row i of x1 (and has label labels[i] when the
/// coupling was given labels).
struct CoupledBatch {
  at::Tensor x0;
  at::Tensor x1;
  at::Tensor labels;
};

/// The cost of moving source row i to target row j, as an (n, m) float64 CPU matrix.
using CostFunction = std::function<at::Tensor(const at::Tensor& x0, const at::Tensor& x1)>;
/// ‖x0_i − x1_j‖² over the flattened rows (the default cost).
at::Tensor squared_euclidean_cost(const at::Tensor& x0, const at::Tensor& x1);

/// d_M(x0_i, x1_j)² on a manifold (Riemannian flow matching's minibatch OT cost).
CostFunction squared_geodesic_cost(std::shared_ptr<const Manifold> manifold);

class Coupling {
 public:
  virtual ~Coupling() = default;
  /// The transport cost the OT couplings minimise (squared Euclidean unless set: a geodesic or an
  /// alignment cost plugs in here). The independent coupling ignores it.
  void set_cost(CostFunction cost);
  /// The cost matrix of a source and a target batch under this coupling's cost, checked for shape
  /// (n, m) and finiteness.
  at::Tensor cost_matrix(const at::Tensor& x0, const at::Tensor& x1) const;
  /// Pairs a source batch (n, ...) with a target batch (m, ...): max(n, m) pairs.
  virtual CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                            std::optional<at::Generator> generator = std::nullopt) const = 0;
  virtual nlohmann::json spec() const = 0;

  /// Class-conditional pairing: rows are paired only with rows of the same label, by this
  /// coupling within each label. `labels1` (m,) int64 labels the targets. `labels0` (n,) labels
  /// the sources; when it is undefined the sources are unlabeled i.i.d. noise (n = m required) and
  /// get the target labels' counts in row order, which for i.i.d. rows is a random split.
  /// A label present on one side only is an error (std::invalid_argument). The result's `labels`
  /// holds each pair's label; pairs come grouped by label, in increasing label order.
  CoupledBatch pair_within_labels(const at::Tensor& x0, const at::Tensor& labels0, const at::Tensor& x1,
                                  const at::Tensor& labels1,
                                  std::optional<at::Generator> generator = std::nullopt) const;

 private:
  CostFunction cost_;
};

/// Pairs as drawn (independent coupling, I-CFM). For n ≠ m the smaller side is repeated as
/// evenly as possible (each row ⌊k/n⌋ or ⌈k/n⌉ times, in random order).
class IndependentCoupling : public Coupling {
 public:
  CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
};

/// Exact minibatch optimal transport for squared Euclidean cost (OT-CFM). For equal batch
/// sizes the plan is a permutation: x1 is reordered so that (x0[i], x1[i]) follow the optimal
/// assignment, each pair used exactly once. For unequal sizes the exact plan comes from the network
/// simplex (LEMON) and pairs are drawn from it (see the file comment).
class ExactOTCoupling : public Coupling {
 public:
  CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
};

/// Entropic optimal transport (log-domain Sinkhorn on squared Euclidean cost, in the data's
/// units); pairs drawn from the plan.
class SinkhornCoupling : public Coupling {
 public:
  explicit SinkhornCoupling(SinkhornOptions options = {});
  CoupledBatch pair(const at::Tensor& x0, const at::Tensor& x1,
                    std::optional<at::Generator> generator = std::nullopt) const override;
  nlohmann::json spec() const override;
  const SinkhornOptions& options() const { return options_; }

 protected:
  SinkhornOptions options_;
};

/// The Schrödinger-bridge coupling of SB-CFM (Tong et al.): the entropic plan with
/// ε = 2σ², to be used with the Brownian-bridge path noise of the same σ (`AffinePath` with
/// `InterpolantNoise::BrownianBridge`, noise_scale σ).
class SchrodingerBridgeCoupling : public SinkhornCoupling {
 public:
  /// σ > 0; `options.reg` is replaced by 2σ².
  explicit SchrodingerBridgeCoupling(double sigma, SinkhornOptions options = {});
  nlohmann::json spec() const override;
  double sigma() const { return sigma_; }

 private:
  double sigma_;
};

/// Pairs (max(n, m) of them) drawn from a plan (n, m): every row of the larger side exactly once
/// (both sides when n = m: rows of x0), its partner drawn with probability proportional to its
/// row (or column) of the plan. Returns index tensors into x0 and x1.
std::pair<at::Tensor, at::Tensor> draw_pairs_from_plan(const at::Tensor& plan,
                                                       std::optional<at::Generator> generator = std::nullopt);

/// Names accepted by `make_coupling`.
std::vector<std::string> coupling_names();
/// Rebuilds a coupling from its spec or name; throws std::invalid_argument listing valid names.
/// Specs: {"type": "independent"}, {"type": "exact-ot"}, {"type": "sinkhorn", "reg": ε,
/// "max_iterations": k, "tolerance": δ}, {"type": "schrodinger-bridge", "sigma": σ, ...}.
std::shared_ptr<Coupling> make_coupling(const nlohmann::json& spec);

}  // namespace flowmatch
