#include "flowmatch/solvers.h"

#include "flowmatch/dpm_solver.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include "enum_names.h"
#include "registry.h"
#include "flowmatch/autoregressive.h"
#include "flowmatch/discrete_path.h"
#include "flowmatch/sde.h"
#include "flowmatch/schedulers.h"

namespace flowmatch {

namespace {
constexpr detail::EnumNames<SolverMethod, 5> kSolverNames{{{SolverMethod::Euler, "euler"},
                                                          {SolverMethod::Midpoint, "midpoint"},
                                                          {SolverMethod::Heun, "heun"},
                                                          {SolverMethod::RK4, "rk4"},
                                                          {SolverMethod::Dopri5, "dopri5"}}};
}  // namespace

SolverMethod solver_method_from_string(const std::string& name) {
  return detail::enum_from_name(kSolverNames, name, "solver");
}
std::string to_string(SolverMethod method) { return detail::enum_name(kSolverNames, method); }

int64_t evaluations_per_step(SolverMethod method) {
  switch (method) {
    case SolverMethod::Euler: return 1;
    case SolverMethod::Midpoint: return 2;
    case SolverMethod::Heun: return 2;
    case SolverMethod::RK4: return 4;
    case SolverMethod::Dopri5: return 6;
  }
  return 0;
}

namespace {
void check_interval(const SolverOptions& options) {
  if (!std::isfinite(options.t0()) || !std::isfinite(options.t1()) || options.t0() == options.t1()) {
    throw std::invalid_argument("solver needs finite t0 != t1, got t0=" + std::to_string(options.t0()) +
                                " t1=" + std::to_string(options.t1()));
  }
}
}  // namespace

std::vector<double> time_grid(const SolverOptions& options) {
  std::vector<double> grid = options.time_grid();
  if (grid.empty()) {
    // The grid is allocated here: a count past 10^7 steps (10^7 network evaluations) is a typo.
    constexpr int64_t kMaxSteps = 10'000'000;
    if (options.steps() < 1 || options.steps() > kMaxSteps) {
      throw std::invalid_argument("solver steps must be in [1, " + std::to_string(kMaxSteps) + "], got " +
                                  std::to_string(options.steps()));
    }
    check_interval(options);
    grid.resize(static_cast<size_t>(options.steps()) + 1);
    const double dt = (options.t1() - options.t0()) / static_cast<double>(options.steps());
    for (size_t k = 0; k < grid.size(); ++k) grid[k] = options.t0() + dt * static_cast<double>(k);
    grid.back() = options.t1();
    return grid;
  }
  if (grid.size() < 2) throw std::invalid_argument("time grid needs at least 2 points");
  const bool increasing = grid[1] > grid[0];
  for (size_t k = 0; k < grid.size(); ++k) {
    if (!std::isfinite(grid[k])) throw std::invalid_argument("time grid has a non-finite entry at " + std::to_string(k));
    if (k > 0 && ((grid[k] > grid[k - 1]) != increasing || grid[k] == grid[k - 1])) {
      throw std::invalid_argument("time grid must be strictly monotone (entry " + std::to_string(k) + ")");
    }
  }
  return grid;
}

namespace {

// The requested output times, validated against [start, end] and sorted in the direction of
// integration, near-duplicates (1e-12 of the span) removed.
std::vector<double> output_times(const SolverOptions& options, double start, double end) {
  std::vector<double> out = options.output_times();
  const double lo = std::min(start, end), hi = std::max(start, end), tiny = 1e-12 * (hi - lo);
  for (double t : out) {
    if (!std::isfinite(t) || t < lo - tiny || t > hi + tiny) {
      throw std::invalid_argument("output time " + std::to_string(t) + " lies outside the integration interval [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
  }
  std::sort(out.begin(), out.end());
  if (end < start) std::reverse(out.begin(), out.end());
  std::vector<double> unique;
  for (double t : out)
    if (unique.empty() || std::fabs(t - unique.back()) > tiny) unique.push_back(std::clamp(t, lo, hi));
  return unique;
}

// The step grid with the output times inserted (a time within 1e-12 of the span of a grid
// point is that grid point); `is_output[k]` marks the grid points to record.
std::vector<double> merge_times(const std::vector<double>& grid, const std::vector<double>& outputs,
                                std::vector<char>& is_output) {
  const double direction = grid.back() > grid.front() ? 1.0 : -1.0;
  const double tiny = 1e-12 * std::fabs(grid.back() - grid.front());
  std::vector<double> merged;
  is_output.clear();
  size_t o = 0;
  for (size_t k = 0; k < grid.size(); ++k) {
    while (o < outputs.size() && direction * (grid[k] - outputs[o]) > tiny) {
      merged.push_back(outputs[o++]);
      is_output.push_back(1);
    }
    const bool same = o < outputs.size() && std::fabs(grid[k] - outputs[o]) <= tiny;
    merged.push_back(grid[k]);
    is_output.push_back(same ? 1 : 0);
    if (same) ++o;
  }
  return merged;
}

// Dormand–Prince 5(4) tableau (Hairer, Nørsett & Wanner, Solving ODEs I, Table 5.2).
constexpr double kC[7] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
constexpr double kA[7][6] = {
    {},
    {1.0 / 5},
    {3.0 / 40, 9.0 / 40},
    {44.0 / 45, -56.0 / 15, 32.0 / 9},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
    {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}};
// Fifth-order weights minus the embedded fourth-order ones (stage 7 is f at the new point).
constexpr double kE[7] = {71.0 / 57600, 0.0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40};

// The largest per-sample RMS of err / (atol + rtol·max(|a|, |b|)), or with `batch` the RMS over all.
double error_norm(const at::Tensor& err, const at::Tensor& a, const at::Tensor& b, double atol, double rtol, bool batch = false) {
  at::Tensor scale = at::maximum(a.abs(), b.abs()).mul_(rtol).add_(atol);
  at::Tensor ratio = (err / scale).square_();
  if (ratio.dim() == 0 || batch) return std::sqrt(ratio.mean().item<double>());
  return ratio.reshape({ratio.size(0), -1}).mean(1).max().sqrt().item<double>();
}

}  // namespace

ErrorNorm error_norm_from_string(const std::string& name) {
  if (name == "sample") return ErrorNorm::Sample;
  if (name == "batch") return ErrorNorm::Batch;
  throw std::invalid_argument("error norm '" + name + "': expected sample or batch");
}

static SolveResult solve_dopri5(const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
  const bool batch_norm = options.error_norm() == ErrorNorm::Batch;
  const Manifold* space = options.manifold().get();
  if (!(options.atol() > 0) || !(options.rtol() >= 0) || !std::isfinite(options.atol()) || !std::isfinite(options.rtol())) {
    throw std::invalid_argument("dopri5 needs atol > 0 and rtol >= 0, got atol=" + std::to_string(options.atol()) +
                                " rtol=" + std::to_string(options.rtol()));
  }
  if (options.max_steps() < 1) throw std::invalid_argument("dopri5 max_steps must be >= 1, got " + std::to_string(options.max_steps()));
  if (!(options.initial_step() >= 0) || !std::isfinite(options.initial_step())) {
    throw std::invalid_argument("dopri5 initial_step must be finite and >= 0, got " + std::to_string(options.initial_step()));
  }
  std::vector<double> outputs;
  if (options.time_grid().empty()) {
    check_interval(options);
    outputs = {options.t0(), options.t1()};
  } else {
    outputs = time_grid(options);  // validates monotonicity
  }
  // Requested output times become landing points; only they are recorded.
  std::vector<char> is_output(outputs.size(), 1);
  const bool selected = !options.output_times().empty();
  if (selected) outputs = merge_times(outputs, output_times(options, outputs.front(), outputs.back()), is_output);
  const bool record = options.record_trajectory() || selected;
  const double t_end = outputs.back();
  const double direction = t_end > outputs.front() ? 1.0 : -1.0;
  const bool every_step = options.record_trajectory() && options.time_grid().empty() && !selected;
  const double atol = options.atol(), rtol = options.rtol();

  SolveResult result;
  auto call = [&](const at::Tensor& state, double t) {
    ++result.nfe;
    at::Tensor v = field(state, at::scalar_tensor(t, x0.options()));
    TORCH_CHECK(v.sizes() == state.sizes(), "velocity field returned shape ", v.sizes(), " for a state of shape ",
                state.sizes());
    return v.is_alias_of(state) ? v.clone() : v;  // the stage buffers are overwritten later
  };
  // As for the fixed-step methods: buffers are reused in place only when no autograd graph can
  // refer to them; with gradients enabled every stage is a new tensor.
  const bool in_place = !at::GradMode::is_enabled();
  double t = outputs.front();
  at::Tensor x = in_place ? x0.clone() : x0;
  at::Tensor stage, x_new, err;
  if (in_place) {
    stage = at::empty_like(x0);
    x_new = at::empty_like(x0);
    err = at::empty_like(x0);
  }
  if (record && (!selected || is_output[0])) {
    result.trajectory.push_back(x0.clone());
    result.times.push_back(t);
  }
  at::Tensor k[7];
  k[0] = call(x, t);

  double h = options.initial_step();
  if (h == 0.0) {
    // Hairer's starting step: from the sizes of x and v, then one trial Euler step.
    auto norm = [&](const at::Tensor& v) { return error_norm(v, x, x, atol, rtol, batch_norm); };
    const double d0 = norm(x), d1 = norm(k[0]);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    h0 = std::min(h0, std::fabs(t_end - t));
    at::Tensor f1 = call(x + (direction * h0) * k[0], t + direction * h0);
    const double d2 = norm(f1 - k[0]) / h0;
    const double h1 = std::max(d1, d2) <= 1e-15 ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / std::max(d1, d2), 1.0 / 5);
    h = std::min(100 * h0, h1);
  }
  h = std::min(h, std::fabs(t_end - t));

  // PI step-size control (Hairer's DOPRI5: β = 0.04, exponent 0.2 − 0.75β, factors in [0.2, 10]).
  const double beta = 0.04, exponent = 0.2 - beta * 0.75, safety = 0.9;
  double previous_error = 1e-4;
  size_t next_output = 1;
  int64_t attempts = 0;
  while (direction * (t_end - t) > 0) {
    if (++attempts > options.max_steps()) {
      throw std::runtime_error("dopri5 did not reach t=" + std::to_string(t_end) + " within " +
                               std::to_string(options.max_steps()) + " steps (at t=" + std::to_string(t) +
                               "); loosen atol/rtol or raise max_steps");
    }
    // Land exactly on the next requested output time.
    const double target = outputs[next_output];
    bool lands = false;
    if (h >= std::fabs(target - t) * (1 - 1e-12)) {
      h = std::fabs(target - t);
      lands = true;
    }
    const double hs = direction * h;
    auto combine = [&](int row, at::Tensor& into) {  // x + h Σ_j a[row][j] k_j
      if (in_place) {
        into.copy_(x);
      } else {
        into = x.clone();
      }
      for (int j = 0; j < row; ++j)
        if (kA[row][j] != 0.0) into.add_(k[j], hs * kA[row][j]);
    };
    for (int s = 1; s < 6; ++s) {
      combine(s, stage);
      k[s] = call(stage, t + kC[s] * hs);
    }
    combine(6, x_new);
    k[6] = call(x_new, t + hs);
    if (in_place) {
      err.zero_();
    } else {
      err = at::zeros_like(x);
    }
    for (int j = 0; j < 7; ++j)
      if (kE[j] != 0.0) err.add_(k[j], hs * kE[j]);
    // On a manifold its error ratio per sample; the batch norm is their RMS (each sample has the same
    // number of coordinates, so it is the RMS over all of them, as in flat space).
    const double e = !space     ? error_norm(err, x, x_new, atol, rtol, batch_norm)
                     : batch_norm ? space->error_ratio(err, x, x_new, atol, rtol).square().mean().sqrt().item<double>()
                                  : space->error_ratio(err, x, x_new, atol, rtol).max().item<double>();
    if (!std::isfinite(e)) {
      throw std::runtime_error("dopri5: non-finite error estimate at t=" + std::to_string(t) +
                               " (does the velocity field return NaN or Inf?)");
    }
    if (e <= 1.0) {
      t = lands ? target : t + hs;
      std::swap(x, x_new);  // in place: the old state's buffer becomes the next x_new
      k[0] = k[6];  // first same as last
      if (space) {  // back onto the space; the velocity there is evaluated anew (no FSAL)
        if (in_place) {
          x.copy_(space->project(x));
        } else {
          x = space->project(x);
        }
        k[0] = call(x, t);
      }
      ++result.steps;
      if (lands) {
        if (record && !every_step && (!selected || is_output[next_output])) {
          result.trajectory.push_back(x.clone());
          result.times.push_back(t);
        }
        ++next_output;
      }
      if (every_step) {
        result.trajectory.push_back(x.clone());
        result.times.push_back(t);
      }
      const double factor = std::pow(std::max(e, 1e-10), exponent) / std::pow(previous_error, beta);
      h = h / std::clamp(factor / safety, 0.1, 5.0);
      previous_error = std::max(e, 1e-4);
    } else {
      ++result.rejected_steps;
      h = h / std::min(5.0, std::pow(e, exponent) / safety);
    }
  }
  result.x = x;
  return result;
}

SolveResult solve_ode(const VelocityField& given_field, const at::Tensor& x0, const SolverOptions& options) {
  if (!given_field) throw std::invalid_argument("solve_ode: velocity field is empty");
  TORCH_CHECK(x0.defined() && x0.is_floating_point(), "solve_ode: x0 must be a floating-point tensor");
  const std::shared_ptr<const Manifold> space = options.manifold();
  VelocityField field = given_field;
  if (space) {
    field = [given_field, space](const at::Tensor& x, const at::Tensor& t) { return space->project_tangent(x, given_field(x, t)); };
  }
  if (options.method() == SolverMethod::Dopri5) return solve_dopri5(field, space ? space->project(x0) : x0, options);
  std::vector<double> grid = time_grid(options);
  std::vector<char> is_output(grid.size(), 1);
  const bool selected = !options.output_times().empty();
  if (selected) grid = merge_times(grid, output_times(options, grid.front(), grid.back()), is_output);
  const bool record = options.record_trajectory() || selected;
  const SolverMethod method = options.method();
  // In-place updates are safe only when no autograd graph refers to the state.
  const bool in_place = !at::GradMode::is_enabled();
  SolveResult result;
  at::Tensor x = space ? space->project(x0) : x0;
  if (in_place) x = x.clone();
  if (record && is_output[0]) {
    result.trajectory.push_back(x.clone());
    result.times.push_back(grid[0]);
  }
  auto time = [&](double t) { return at::scalar_tensor(t, x0.options()); };
  auto call = [&](const at::Tensor& state, double t) {
    ++result.nfe;
    at::Tensor v = field(state, time(t));
    TORCH_CHECK(v.sizes() == state.sizes(), "velocity field returned shape ", v.sizes(),
                " for a state of shape ", state.sizes());
    return v;
  };
  auto axpy = [&](at::Tensor& target, const at::Tensor& v, double h) {
    if (in_place) {
      target.add_(v, h);
    } else {
      target = target + h * v;
    }
  };

  for (size_t k = 0; k + 1 < grid.size(); ++k) {
    const double t = grid[k];
    const double h = grid[k + 1] - grid[k];
    switch (method) {
      case SolverMethod::Euler: {
        axpy(x, call(x, t), h);
        break;
      }
      case SolverMethod::Midpoint: {
        at::Tensor k1 = call(x, t);
        at::Tensor k2 = call(x + (0.5 * h) * k1, t + 0.5 * h);
        axpy(x, k2, h);
        break;
      }
      case SolverMethod::Heun: {
        at::Tensor k1 = call(x, t);
        at::Tensor k2 = call(x + h * k1, t + h);
        axpy(x, k1 + k2, 0.5 * h);
        break;
      }
      case SolverMethod::RK4: {
        at::Tensor k1 = call(x, t);
        at::Tensor k2 = call(x + (0.5 * h) * k1, t + 0.5 * h);
        at::Tensor k3 = call(x + (0.5 * h) * k2, t + 0.5 * h);
        at::Tensor k4 = call(x + h * k3, t + h);
        axpy(x, k1 + 2.0 * (k2 + k3) + k4, h / 6.0);
        break;
      }
      case SolverMethod::Dopri5:
        break;  // handled by solve_dopri5
    }
    if (space) {
      if (in_place) {
        x.copy_(space->project(x));
      } else {
        x = space->project(x);
      }
    }
    ++result.steps;
    if (record && is_output[k + 1]) {
      result.trajectory.push_back(x.clone());
      result.times.push_back(grid[k + 1]);
    }
  }
  result.x = x;
  return result;
}

namespace {

SolverFunction runge_kutta(SolverMethod method) {
  return [method](const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
    return solve_ode(field, x0, SolverOptions(options).method(method));
  };
}

using SolverEntry = std::pair<SolverInfo, SolverFunction>;

detail::Registry<SolverEntry>& solver_registry() {
  static auto* registry = [] {
    auto* r = new detail::Registry<SolverEntry>;
    for (SolverMethod m : {SolverMethod::Euler, SolverMethod::Midpoint, SolverMethod::Heun, SolverMethod::RK4, SolverMethod::Dopri5}) {
      const bool adaptive = m == SolverMethod::Dopri5;
      r->add(to_string(m), {SolverInfo{to_string(m), evaluations_per_step(m), adaptive, false,
                                       adaptive ? "Dormand-Prince 5(4), adaptive steps (atol, rtol)"
                                                : "explicit Runge-Kutta, fixed steps"},
                            runge_kutta(m)});
    }
    r->add("sde",
        {SolverInfo{"sde", 1, false, true, "Euler-Maruyama with the flow's marginals, diffusion noise_scale x sigma_t"},
         [](const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
           if (!options.scheduler()) {
             throw std::invalid_argument("solver sde needs the path's scheduler (a run on an affine path)");
           }
           if (options.manifold()) throw std::invalid_argument("solver sde does not take a manifold state");
           at::Generator generator = options.generator() ? *options.generator() : at::make_generator<at::CPUGeneratorImpl>(0);
           return solve_sde(field, *options.scheduler(), x0,
                            SDEOptions()
                                .steps(options.steps())
                                .t0(options.t0())
                                .t1(options.t1())
                                .noise_scale(options.noise_scale())
                                .record_trajectory(options.record_trajectory()),
                            generator);
         }});
    r->add("reverse-sde",
        {SolverInfo{"reverse-sde", 1, false, true,
                    "Euler-Maruyama on dX = [v + w s]dt + sqrt(2w) dW, w = noise_scale x sigma_t^2 d/dt log(alpha_t/sigma_t): "
                    "DDPM's reverse SDE on its own path (CondOT: w = (1 - t)/t)"},
         [](const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
           if (!options.scheduler()) {
             throw std::invalid_argument("solver reverse-sde needs the path's scheduler (a run on an affine path)");
           }
           if (options.manifold()) throw std::invalid_argument("solver reverse-sde does not take a manifold state");
           const double eta = options.noise_scale();
           if (!(eta >= 0) || !std::isfinite(eta)) {
             throw std::invalid_argument("reverse-sde: noise scale (--sde-noise) must be finite and >= 0, got " + std::to_string(eta));
           }
           auto scheduler = options.scheduler();
           // w(t) = σ²·(α̇/α − σ̇/σ) = σ²·d/dt log SNR^½; g = √(2ηw). Where α = 0 (t = 0 on CondOT) w is
           // infinite: the first step takes w at its end instead (on CondOT h·w(h) = 1 − h, where w(10⁻³)
           // would have made h·w ≈ 999h, a blow-up of the state for any step count below 1000).
           if (options.steps() < 1) throw std::invalid_argument("reverse-sde: steps must be >= 1, got " + std::to_string(options.steps()));
           const double first_end = options.t0() + (options.t1() - options.t0()) / static_cast<double>(options.steps());
           const double alpha0 = (*scheduler)(at::full({1}, options.t0(), at::kDouble)).alpha.item<double>();
           auto diffusion = [scheduler, eta, first_end, alpha0, t0 = options.t0()](double t) {
             const double at_t = t == t0 && alpha0 <= 0 ? first_end : t;
             auto v = (*scheduler)(at::full({1}, at_t, at::kDouble));
             const double a = v.alpha.item<double>(), s = v.sigma.item<double>();
             const double w = s * s * v.d_alpha.item<double>() / a - s * v.d_sigma.item<double>();
             return std::sqrt(std::max(0.0, 2 * eta * w));
           };
           at::Generator generator = options.generator() ? *options.generator() : at::make_generator<at::CPUGeneratorImpl>(0);
           return solve_sde(field, *scheduler, x0,
                            SDEOptions()
                                .steps(options.steps())
                                .t0(options.t0())
                                .t1(options.t1())
                                .diffusion(diffusion)
                                .record_trajectory(options.record_trajectory()),
                            generator);
         }});
    for (const auto& [name, order] : {std::pair<const char*, int>{"ddim", 1}, {"dpm-solver++", 2}}) {
      const int k = order;
      const std::string solver = name;
      r->add(name, {SolverInfo{name, 1, false, false,
                               k == 1 ? "DDIM (eta 0): the first-order exponential integrator in data prediction (affine paths)"
                                      : "DPM-Solver++(2M): second-order multistep exponential integrator in data prediction (affine paths)"},
                    [k, solver](const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
                      if (!options.scheduler()) {
                        throw std::invalid_argument("solver " + solver + " needs the path's scheduler (a run on an affine path)");
                      }
                      return solve_exponential_integrator(field, *options.scheduler(), x0, options, k);
                    }});
    }
    r->add("ancestral",
           {SolverInfo{"ancestral", 1, false, true,
                       "DDIM with eta = --sde-noise (1: DDPM's ancestral sampler): data prediction plus fresh noise (affine paths)"},
            [](const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
              if (!options.scheduler()) throw std::invalid_argument("solver ancestral needs the path's scheduler (a run on an affine path)");
              return solve_ancestral(field, *options.scheduler(), x0, options);
            }});
    SolverInfo ctmc{"ctmc-euler", 1, false, false,
                    "discrete data: CTMC Euler steps from the posterior p(x1 | x_t), the last step samples it"};
    ctmc.discrete = true;
    r->add("ctmc-euler", {ctmc, solve_ctmc_euler});
    SolverInfo autoregressive{"autoregressive", 1, false, false,
                              "tokens left to right from a causal network's p(x_i | x_<i) (autoregressive runs); steps = length"};
    autoregressive.discrete = true;
    r->add("autoregressive", {autoregressive, sample_autoregressive});
    return r;
  }();
  return *registry;
}

}  // namespace

void register_solver(const SolverInfo& info, SolverFunction solve_fn) {
  if (info.name.empty() || !solve_fn) throw std::invalid_argument("register_solver: a name and a function are required");
  if (info.evaluations_per_step < 1) {
    throw std::invalid_argument("register_solver: evaluations per step must be >= 1, got " + std::to_string(info.evaluations_per_step));
  }
  solver_registry().add(info.name, {info, std::move(solve_fn)});
}

std::vector<std::string> solver_names(bool stochastic) {
  std::vector<std::string> names;
  for (const auto& [name, entry] : solver_registry().entries())
    if (stochastic || (!entry.first.stochastic && !entry.first.discrete)) names.push_back(name);
  return names;
}

namespace {
SolverEntry find_solver(const std::string& name) {
  const auto entry = solver_registry().find(name);
  if (!entry) throw std::invalid_argument("unknown solver '" + name + "' (expected one of: " + solver_registry().known() + ")");
  return *entry;
}
}  // namespace

SolverInfo solver_info(const std::string& name) { return find_solver(name).first; }

SolveResult solve(const std::string& name, const VelocityField& field, const at::Tensor& x0, const SolverOptions& options) {
  return find_solver(name).second(field, x0, options);
}

}  // namespace flowmatch
