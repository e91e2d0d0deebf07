#include "flowmatch/sde.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace flowmatch {

SolveResult solve_sde(const VelocityField& velocity, const Scheduler& scheduler, const at::Tensor& x0,
                      const SDEOptions& options, at::Generator& generator) {
  if (!velocity) throw std::invalid_argument("solve_sde: velocity field is empty");
  if (options.steps() < 1) throw std::invalid_argument("SDE steps must be >= 1, got " + std::to_string(options.steps()));
  const double t0 = options.t0(), t1 = options.t1();
  if (!(t0 >= 0 && t1 <= 1 && t0 < t1)) {
    throw std::invalid_argument("SDE times must satisfy 0 <= t0 < t1 <= 1, got t0 = " + std::to_string(t0) +
                                ", t1 = " + std::to_string(t1));
  }
  if (!(options.noise_scale() >= 0) || !std::isfinite(options.noise_scale())) {
    throw std::invalid_argument("SDE noise scale must be finite and >= 0, got " + std::to_string(options.noise_scale()));
  }
  const int64_t n = options.steps();
  const double h = (t1 - t0) / static_cast<double>(n);
  SolveResult result;
  at::Tensor x = x0.clone();
  // Buffers reused across steps when no graph is being recorded (the sampling case).
  const bool in_place = !at::GradMode::is_enabled();
  at::Tensor noise = at::empty(x0.sizes(), x0.options().device(generator.device()));
  if (options.record_trajectory()) {
    result.trajectory.push_back(x.clone());
    result.times.push_back(t0);
  }
  // The scheduler's coefficients at every step time, evaluated once.
  const at::Tensor grid = at::arange(n, at::kDouble) * h + t0;
  const SchedulerValues coefficients = scheduler(grid);
  const auto alphas = coefficients.alpha.accessor<double, 1>(), sigmas = coefficients.sigma.accessor<double, 1>();
  const auto d_alphas = coefficients.d_alpha.accessor<double, 1>(), d_sigmas = coefficients.d_sigma.accessor<double, 1>();
  for (int64_t k = 0; k < n; ++k) {
    const double t = t0 + h * static_cast<double>(k);
    at::Tensor u = velocity(x, at::full({}, t, x.options()));
    ++result.nfe;
    const double alpha = alphas[k], sigma = sigmas[k], d_alpha = d_alphas[k], d_sigma = d_sigmas[k];
    const double g = options.diffusion() ? options.diffusion()(t) : options.noise_scale() * sigma;
    if (!(g >= 0) || !std::isfinite(g)) {
      throw std::invalid_argument("SDE diffusion g(" + std::to_string(t) + ") = " + std::to_string(g) +
                                  " (expected finite and >= 0)");
    }
    at::Tensor drift = u;
    if (g > 0) {
      // ½g²·score = −(g²/(2σ))·x̂₀ with x̂₀ = (α̇x − αu)/(α̇σ − ασ̇).
      const double det = d_alpha * sigma - alpha * d_sigma;
      at::Tensor x0_hat = (x * d_alpha - u * alpha) / det;
      drift = u - x0_hat * (g * g / (2 * sigma));
      noise.normal_(0, 1, generator);
      at::Tensor dw = noise.to(x.device());
      x = in_place ? x.add_(drift, h).add_(dw, g * std::sqrt(h)) : x + drift * h + dw * (g * std::sqrt(h));
    } else {
      x = in_place ? x.add_(drift, h) : x + drift * h;
    }
    if (options.record_trajectory()) {
      result.trajectory.push_back(x.clone());
      result.times.push_back(t + h);
    }
  }
  result.x = x;
  result.steps = n;
  return result;
}

}  // namespace flowmatch
