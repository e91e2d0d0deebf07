#pragma once
/// \file
/// Schedulers of affine Gaussian paths x_t = α_t·x₁ + σ_t·x₀ (t = 0 noise, t = 1 data). The change
/// of scheduler of a trained velocity field (`schedule_transformed_field`) is in prediction.h: this
/// header knows nothing of velocity fields or models.
///
/// Every scheduler gives α_t, σ_t and their time derivatives in closed form, and inverts its
/// signal-to-noise ratio ρ_t = α_t / σ_t (needed to move a field from one scheduler to another).
/// The formulas are in docs/PATHS.md.

#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>
#include <torch/arg.h>


namespace flowmatch {

/// α_t, σ_t and their time derivatives, each shaped like the time tensor given.
struct SchedulerValues {
  at::Tensor alpha, sigma, d_alpha, d_sigma;
};

/// A scheduler of an affine Gaussian path.
class Scheduler {
 public:
  virtual ~Scheduler() = default;
  /// α_t, σ_t, α̇_t, σ̇_t at times t ∈ [0, 1] (any shape, floating point).
  virtual SchedulerValues operator()(const at::Tensor& t) const = 0;
  /// The time t ∈ [0, 1] at which α_t/σ_t = ρ, for ρ ≥ 0 (ρ may be +inf); values of ρ outside the
  /// scheduler's range map to the nearer end of [0, 1].
  virtual at::Tensor time_at_snr(const at::Tensor& snr) const = 0;
  /// {"type": name, ...parameters}; `make_scheduler` rebuilds the scheduler from it.
  virtual nlohmann::json spec() const = 0;
  std::string name() const { return spec().at("type").get<std::string>(); }
};

/// CondOT: α = t, σ = 1 − (1 − σ_min)·t (Lipman et al.; σ_min = 0 is the straight line).
struct CondOTSchedulerOptions {
  TORCH_ARG(double, sigma_min) = 0.0;
};
class CondOTScheduler : public Scheduler {
 public:
  explicit CondOTScheduler(CondOTSchedulerOptions options = {});
  SchedulerValues operator()(const at::Tensor& t) const override;
  at::Tensor time_at_snr(const at::Tensor& snr) const override;
  nlohmann::json spec() const override;

 private:
  CondOTSchedulerOptions options_;
};

/// Polynomial-convex: α = tⁿ, σ = 1 − tⁿ (n > 0; n = 1 is CondOT).
struct PolynomialSchedulerOptions {
  TORCH_ARG(double, exponent) = 2.0;
};
class PolynomialScheduler : public Scheduler {
 public:
  explicit PolynomialScheduler(PolynomialSchedulerOptions options = {});
  SchedulerValues operator()(const at::Tensor& t) const override;
  at::Tensor time_at_snr(const at::Tensor& snr) const override;
  nlohmann::json spec() const override;

 private:
  PolynomialSchedulerOptions options_;
};

/// Cosine: α = sin(πt/2), σ = cos(πt/2).
class CosineScheduler : public Scheduler {
 public:
  SchedulerValues operator()(const at::Tensor& t) const override;
  at::Tensor time_at_snr(const at::Tensor& snr) const override;
  nlohmann::json spec() const override;
};

/// Variance-preserving (Song et al.'s VP SDE in flow-matching time): with s = 1 − t and
/// T(s) = ½(β_max − β_min)s² + β_min·s, α = exp(−T/2), σ = √(1 − α²).
struct VPSchedulerOptions {
  TORCH_ARG(double, beta_min) = 0.1;
  TORCH_ARG(double, beta_max) = 20.0;
};
class VPScheduler : public Scheduler {
 public:
  explicit VPScheduler(VPSchedulerOptions options = {});
  SchedulerValues operator()(const at::Tensor& t) const override;
  at::Tensor time_at_snr(const at::Tensor& snr) const override;
  nlohmann::json spec() const override;

 private:
  VPSchedulerOptions options_;
};

/// Linear variance-preserving: α = t, σ = √(1 − t²).
class LinearVPScheduler : public Scheduler {
 public:
  SchedulerValues operator()(const at::Tensor& t) const override;
  at::Tensor time_at_snr(const at::Tensor& snr) const override;
  nlohmann::json spec() const override;
};

/// Variance-exploding (geometric): α = 1, σ = σ_min·(σ_max/σ_min)^(1−t). The path starts at
/// x₁ + σ_max·x₀, so sampling starts from σ_max·x₀ (see `ProbabilityPath::start`).
struct VESchedulerOptions {
  TORCH_ARG(double, sigma_min) = 0.01;
  TORCH_ARG(double, sigma_max) = 30.0;
};
class VEScheduler : public Scheduler {
 public:
  explicit VEScheduler(VESchedulerOptions options = {});
  SchedulerValues operator()(const at::Tensor& t) const override;
  at::Tensor time_at_snr(const at::Tensor& snr) const override;
  nlohmann::json spec() const override;

 private:
  VESchedulerOptions options_;
};

/// DDPM's discrete variance-preserving chain (Ho et al. 2020; cosine: Nichol & Dhariwal 2021) in
/// flow-matching time. Step n ∈ {0, …, N} of the chain is the time t = 1 − n/N (n = 0 is the data,
/// n = N the noise end), where α_t² = ᾱ_n = Π_{i ≤ n}(1 − β_i) and σ_t² = 1 − ᾱ_n: the state x_n of
/// the chain is the path's x_t, not rescaled. Between steps log ᾱ is the monotone cubic (Fritsch–Carlson)
/// through the steps' values: α, σ and their derivatives are continuous in t, so the probability-flow
/// ODE has a continuous velocity for Runge–Kutta and adaptive solvers, and the SNR inverts exactly.
///   linear: β_i = β_start + (β_end − β_start)·(i − 1)/(N − 1) (10⁻⁴ … 0.02 for N = 1000);
///   cosine: ᾱ_n = f(n)/f(0), f(n) = cos²((n/N + s)/(1 + s)·π/2), s = 0.008, each β_i clipped to 0.999.
/// At t = 0 α is not exactly 0 (ᾱ_N = 4·10⁻⁵ for linear), as in DDPM, whose sampler starts from N(0, I).
struct DDPMSchedulerOptions {
  TORCH_ARG(std::string, beta_schedule) = "linear";  ///< linear or cosine
  TORCH_ARG(int64_t, steps) = 1000;                  ///< N
  TORCH_ARG(double, beta_start) = 1e-4;              ///< linear: β_1
  TORCH_ARG(double, beta_end) = 0.02;                ///< linear: β_N
};
class DDPMScheduler : public Scheduler {
 public:
  explicit DDPMScheduler(DDPMSchedulerOptions options = {});
  SchedulerValues operator()(const at::Tensor& t) const override;
  at::Tensor time_at_snr(const at::Tensor& snr) const override;
  nlohmann::json spec() const override;
  const DDPMSchedulerOptions& options() const { return options_; }
  /// ᾱ_n for n = 0 … N (float64, CPU).
  const at::Tensor& alpha_bar() const { return alpha_bar_; }

 private:
  DDPMSchedulerOptions options_;
  at::Tensor alpha_bar_, log_alpha_bar_, slopes_;
};

/// The flow time of DDPM step n of an N-step chain, t = 1 − n/N, and back (n = (1 − t)·N, not rounded).
at::Tensor ddpm_time_of_step(const at::Tensor& n, int64_t steps);
at::Tensor ddpm_step_of_time(const at::Tensor& t, int64_t steps);

/// condot, polynomial, cosine, vp, linear-vp, ve, ddpm-linear, ddpm-cosine.
std::vector<std::string> scheduler_names();
/// From `spec()`, or a bare name with default parameters. Throws std::invalid_argument naming an
/// unknown type or a bad parameter.
std::shared_ptr<Scheduler> make_scheduler(const nlohmann::json& spec);

}  // namespace flowmatch
