#include "flowmatch/discrete_path.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include "flowmatch/schedulers.h"

namespace flowmatch {

DiscreteSource discrete_source_from_string(const std::string& name) {
  if (name == "uniform") return DiscreteSource::Uniform;
  if (name == "mask") return DiscreteSource::Mask;
  throw std::invalid_argument("unknown discrete source '" + name + "' (expected uniform or mask)");
}

std::string to_string(DiscreteSource source) { return source == DiscreteSource::Mask ? "mask" : "uniform"; }

std::shared_ptr<Scheduler> make_kappa_scheduler(const std::string& name) {
  if (name == "linear") return make_scheduler(nlohmann::json{{"type", "condot"}, {"sigma_min", 0.0}});
  if (name.rfind("poly:", 0) == 0) {
    const std::string text = name.substr(5);
    size_t used = 0;
    double n = 0;
    try {
      n = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    // n >= 1: below it κ̇ = n·t^(n−1) is infinite at t = 0, where the loss and the sampler start.
    if (used == 0 || used != text.size() || !std::isfinite(n) || !(n >= 1) || n > 100) {
      throw std::invalid_argument("--kappa " + name + ": expected poly:n with a number n in [1, 100]");
    }
    return make_scheduler(nlohmann::json{{"type", "polynomial"}, {"exponent", n}});
  }
  throw std::invalid_argument("unknown kappa scheduler '" + name + "' (expected linear or poly:n, e.g. poly:2)");
}

MixtureDiscretePath::MixtureDiscretePath(std::shared_ptr<const Scheduler> kappa, DiscreteSource source, int64_t vocabulary)
    : kappa_(std::move(kappa)), source_(source), vocabulary_(vocabulary) {
  if (!kappa_) throw std::invalid_argument("mixture path: no kappa scheduler");
  if (vocabulary < 2 || vocabulary > (int64_t{1} << 24)) {
    throw std::invalid_argument("mixture path: vocabulary must be in [2, 2^24], got " + std::to_string(vocabulary));
  }
  const auto v = (*kappa_)(at::tensor({0.0, 0.5, 1.0}, at::kDouble));
  const double k0 = v.alpha[0].item<double>(), k1 = v.alpha[2].item<double>();
  const double convex = (v.alpha + v.sigma - 1).abs().max().item<double>();
  if (std::abs(k0) > 1e-12 || std::abs(k1 - 1) > 1e-12 || convex > 1e-12) {
    throw std::invalid_argument("mixture path: kappa must rise from 0 at t = 0 to 1 at t = 1 with alpha + sigma = 1 (scheduler " +
                                kappa_->spec().dump() + ")");
  }
}

PathSample MixtureDiscretePath::sample(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& t,
                                       std::optional<at::Generator> generator) const {
  TORCH_CHECK(x0.scalar_type() == at::kLong && x1.scalar_type() == at::kLong, "mixture path: tokens must be int64, got ",
              x0.scalar_type(), " and ", x1.scalar_type());
  TORCH_CHECK(x0.sizes() == x1.sizes() && x0.dim() >= 2, "mixture path: x0 ", x0.sizes(), " and x1 ", x1.sizes(),
              " must both be (B, L)");
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x0.size(0), "mixture path: t must be (B), got ", t.sizes());
  at::Tensor kappa = (*kappa_)(t.to(at::kDouble)).alpha.to(at::kFloat);
  std::vector<int64_t> shape(x0.dim(), 1);
  shape[0] = x0.size(0);
  // Drawn on the CPU (the generators of runs are CPU ones), then moved to the tokens' device.
  at::Tensor u = (generator ? at::rand(x0.sizes(), *generator, at::TensorOptions().dtype(at::kFloat))
                            : at::rand(x0.sizes(), at::TensorOptions().dtype(at::kFloat)))
                     .to(x0.device());
  PathSample s;
  s.x_t = at::where(u < kappa.to(x0.device()).reshape(shape), x1, x0);
  s.x0 = x0;
  s.x1 = x1;
  s.t = t;
  return s;
}

nlohmann::json MixtureDiscretePath::spec() const {
  return {{"type", "mixture-discrete"}, {"scheduler", kappa_->spec()}, {"source", to_string(source_)}, {"vocabulary", vocabulary_}};
}

std::pair<at::Tensor, at::Tensor> MixtureDiscretePath::kappa_at(const at::Tensor& t) const {
  const auto v = (*kappa_)(t.to(at::kDouble));
  return {v.alpha, v.d_alpha};
}

at::Tensor MixtureDiscretePath::kappa_inverse(const at::Tensor& k) const {
  at::Tensor kd = k.to(at::kDouble);
  return kappa_->time_at_snr(kd / (1 - kd));
}

at::Tensor MixtureDiscretePath::sample_source(int64_t n, int64_t length, at::Generator& generator) const {
  if (n < 1 || length < 1) throw std::invalid_argument("mixture path: source of " + std::to_string(n) + " x " + std::to_string(length) + " tokens");
  if (source_ == DiscreteSource::Mask) return at::full({n, length}, vocabulary_, at::kLong);
  return at::randint(vocabulary_, {n, length}, generator, at::kLong);
}

at::Tensor MixtureDiscretePath::source_probabilities() const {
  if (source_ == DiscreteSource::Mask) {
    at::Tensor p = at::zeros({vocabulary_ + 1}, at::kDouble);
    p[vocabulary_] = 1.0;
    return p;
  }
  return at::full({vocabulary_}, 1.0 / static_cast<double>(vocabulary_), at::kDouble);
}

namespace {

// −[p_θ(x_t | x_t) − δ(x₁, x_t) + (1 − δ)·log p_θ(x₁ | x_t)] per token: the generalized KL without its
// time weight.
at::Tensor generalized_kl_bracket(const at::Tensor& logits, const at::Tensor& x1, const at::Tensor& x_t, const MixtureDiscretePath& path) {
  const int64_t v = path.vocabulary();
  TORCH_CHECK(logits.dim() == x1.dim() + 1 && logits.size(-1) == v && logits.sizes().slice(0, x1.dim()) == x1.sizes(),
              "generalized KL: logits ", logits.sizes(), " must be the tokens' shape ", x1.sizes(), " times the vocabulary ", v);
  TORCH_CHECK(x_t.sizes() == x1.sizes(), "generalized KL: x_t ", x_t.sizes(), " and x1 ", x1.sizes(), " differ");
  at::Tensor log_p = at::log_softmax(logits, -1);
  at::Tensor log_p_x1 = log_p.gather(-1, x1.unsqueeze(-1)).squeeze(-1);
  at::Tensor real = x_t < v;  // the mask token has no posterior probability
  at::Tensor p_xt = log_p.gather(-1, x_t.clamp_max(v - 1).unsqueeze(-1)).squeeze(-1).exp() * real.to(log_p.scalar_type());
  at::Tensor delta = (x_t == x1).to(log_p.scalar_type());
  return -(p_xt - delta + (1 - delta) * log_p_x1);
}

// A per-sequence weight (B) broadcast against tokens (B, L, ...).
at::Tensor per_sequence(const at::Tensor& w, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = like.size(0);
  return w.to(like.scalar_type()).to(like.device()).reshape(shape);
}

}  // namespace

at::Tensor generalized_kl(const at::Tensor& logits, const at::Tensor& x1, const at::Tensor& x_t, const at::Tensor& t,
                          const MixtureDiscretePath& path) {
  at::Tensor bracket = generalized_kl_bracket(logits, x1, x_t, path);
  auto [kappa, d_kappa] = path.kappa_at(t);
  return per_sequence(d_kappa / (1 - kappa), bracket) * bracket;
}

at::Tensor discrete_negative_elbo(const PosteriorField& posterior, const at::Tensor& x1, const MixtureDiscretePath& path,
                                  const DiscreteELBOOptions& options, at::Generator& generator) {
  if (!posterior) throw std::invalid_argument("discrete ELBO: the posterior is empty");
  TORCH_CHECK(x1.scalar_type() == at::kLong && x1.dim() == 2, "discrete ELBO: data must be (B, L) int64 tokens, got ",
              x1.sizes(), " ", x1.scalar_type());
  if (options.time_points() < 1) throw std::invalid_argument("discrete ELBO: time points must be >= 1, got " + std::to_string(options.time_points()));
  if (options.chunk() < 1) throw std::invalid_argument("discrete ELBO: chunk must be >= 1, got " + std::to_string(options.chunk()));
  if (!(options.epsilon() >= 0 && options.epsilon() < 1)) {
    throw std::invalid_argument("discrete ELBO: epsilon must be in [0, 1), got " + std::to_string(options.epsilon()));
  }
  if (x1.numel() > 0 && (x1.min().item<int64_t>() < 0 || x1.max().item<int64_t>() >= path.vocabulary())) {
    throw std::invalid_argument("discrete ELBO: tokens outside [0, " + std::to_string(path.vocabulary()) + ")");
  }
  at::NoGradGuard no_grad;
  const int64_t b = x1.size(0), length = x1.size(1), k = options.time_points();
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < b; start += options.chunk()) {
    const int64_t n = std::min(options.chunk(), b - start);
    at::Tensor data = x1.narrow(0, start, n);
    at::Tensor total = at::zeros({n}, at::kDouble);
    for (int64_t i = 0; i < k; ++i) {
      // κ uniform in its stratum of [0, 1 − ε); the posterior is called at t = κ⁻¹(κ).
      at::Tensor kappa = (at::rand({n}, generator, at::kDouble) + static_cast<double>(i)) * ((1 - options.epsilon()) / static_cast<double>(k));
      at::Tensor t = path.kappa_inverse(kappa).clamp(0.0, 1.0);
      at::Tensor x0 = path.sample_source(n, length, generator).to(data.device());
      at::Tensor keep = (at::rand({n, length}, generator, at::kDouble) < kappa.unsqueeze(1)).to(data.device());
      at::Tensor x_t = at::where(keep, data, x0);
      at::Tensor logits = posterior(x_t, t.to(at::kFloat).to(data.device()));
      at::Tensor bracket = generalized_kl_bracket(logits.to(at::kDouble), data, x_t, path);
      total += (per_sequence(1 / (1 - kappa), bracket) * bracket).sum(1).to(at::kCPU);
    }
    total.mul_(1 - options.epsilon());  // the mean over [0, 1 − ε) times its length
    parts.push_back(total / static_cast<double>(k));
  }
  return at::cat(parts);
}

SolveResult solve_ctmc_euler(const PosteriorField& posterior, const at::Tensor& x0, const SolverOptions& options) {
  auto path = std::dynamic_pointer_cast<const MixtureDiscretePath>(options.path());
  if (!path) throw std::invalid_argument("solver ctmc-euler needs a discrete (mixture) path: a run on tokens");
  if (!posterior) throw std::invalid_argument("solver ctmc-euler: the posterior is empty");
  TORCH_CHECK(x0.scalar_type() == at::kLong && x0.dim() == 2, "solver ctmc-euler: x0 must be (B, L) int64 tokens, got ",
              x0.sizes(), " ", x0.scalar_type());
  if (x0.numel() > 0 && (x0.min().item<int64_t>() < 0 || x0.max().item<int64_t>() >= path->input_vocabulary())) {
    throw std::invalid_argument("solver ctmc-euler: source tokens must be ids in [0, " + std::to_string(path->input_vocabulary()) + ")");
  }
  const std::vector<double> grid = time_grid(options);
  if (grid.front() < 0 || grid.back() != 1.0 || grid[1] < grid[0]) {
    throw std::invalid_argument("solver ctmc-euler integrates forward to t = 1 (a grid from t0 >= 0 to 1)");
  }
  at::Generator generator = options.generator() ? *options.generator() : at::make_generator<at::CPUGeneratorImpl>(0);
  const int64_t v = path->vocabulary(), v_in = path->input_vocabulary();
  const auto categorical_type = options.categorical_float64() ? at::kDouble : at::kFloat;
  // Categorical draws on the CPU generator: rows of probabilities (n, K) -> (n) ids.
  auto draw = [&](const at::Tensor& p) { return at::multinomial(p.to(at::kCPU), 1, true, generator).squeeze(1).to(x0.device()); };
  at::NoGradGuard no_grad;
  SolveResult r;
  at::Tensor x = x0.clone();
  if (options.record_trajectory()) r.trajectory.push_back(x.clone()), r.times.push_back(grid.front());
  const int64_t steps = static_cast<int64_t>(grid.size()) - 1;
  at::Tensor p0 = path->source_probabilities().to(categorical_type).to(x0.device());
  for (int64_t i = 0; i < steps; ++i) {
    const double t = grid[i], h = grid[i + 1] - grid[i];
    at::Tensor logits = posterior(x, at::full({x.size(0)}, t, at::TensorOptions().dtype(at::kFloat).device(x.device())));
    TORCH_CHECK(logits.dim() == 3 && logits.size(0) == x.size(0) && logits.size(1) == x.size(1) && logits.size(2) == v,
                "solver ctmc-euler: the posterior gave ", logits.sizes(), " for tokens ", x.sizes(), " (expected (B, L, ", v, "))");
    ++r.nfe;
    at::Tensor probs = at::softmax(logits.to(categorical_type), -1);
    at::Tensor x1_hat = draw(probs.reshape({-1, v})).reshape(x.sizes());
    if (i + 1 == steps) {
      x = x1_hat;  // the last step lands on t = 1 by sampling the posterior
    } else {
      auto [kappa_t, d_kappa_t] = path->kappa_at(at::tensor({t}, at::kDouble));
      const double kappa = kappa_t.item<double>(), d_kappa = d_kappa_t.item<double>();
      const double rate = d_kappa / (1 - kappa);
      const double c = options.corrector() ? options.corrector()(t) : 0.0;
      if (c > 0 && kappa > 0) {
        // Rates over the input vocabulary: toward x̂₁, plus the divergence-free term; none to stay.
        at::Tensor one_hot = at::one_hot(x1_hat, v_in).to(categorical_type);
        at::Tensor u = rate * one_hot + (c * d_kappa / (kappa * (1 - kappa))) * ((1 - kappa) * p0 + kappa * one_hot);
        u = u.masked_fill(at::one_hot(x, v_in).to(at::kBool), 0.0);
        at::Tensor intensity = u.sum(-1);
        at::Tensor jump = at::rand(x.sizes(), generator, at::TensorOptions().dtype(categorical_type)).to(x.device()) <
                          1 - at::exp(-h * intensity);
        if (jump.any().item<bool>()) {
          at::Tensor rows = u.reshape({-1, v_in}).index({jump.reshape({-1})});
          at::Tensor flat = x.reshape({-1}).clone();
          flat.index_put_({jump.reshape({-1})}, draw(rows));
          x = flat.reshape(x.sizes());
        }
      } else {
        at::Tensor change = (x1_hat != x).to(categorical_type) * rate;
        at::Tensor jump = at::rand(x.sizes(), generator, at::TensorOptions().dtype(categorical_type)).to(x.device()) <
                          1 - at::exp(-h * change);
        x = at::where(jump, x1_hat, x);
      }
    }
    ++r.steps;
    if (options.record_trajectory()) r.trajectory.push_back(x.clone()), r.times.push_back(grid[i + 1]);
  }
  r.x = x;
  return r;
}

std::function<double(double)> corrector_schedule(const std::string& spec) {
  std::vector<double> values;
  size_t start = 0;
  while (true) {
    const size_t colon = spec.find(':', start);
    const std::string part = spec.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (part.empty() || used != part.size() || !std::isfinite(v) || v < 0) {
      throw std::invalid_argument("corrector '" + spec + "': expected A[:a[:b]] with finite numbers >= 0 (c(t) = A t^a (1 - t)^b)");
    }
    values.push_back(v);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (values.size() > 3) throw std::invalid_argument("corrector '" + spec + "': expected at most three numbers A:a:b");
  values.resize(3, 0.0);
  const double a = values[0], p = values[1], q = values[2];
  return [a, p, q](double t) { return a * std::pow(t, p) * std::pow(1 - t, q); };
}

}  // namespace flowmatch
