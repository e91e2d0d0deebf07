"""Type stubs of the flowmatch package, generated from the compiled module by python/stubgen.py."""
from typing import Any, Optional

import torch

__version__: str

class AffineProbPath:
    """x_t = alpha_t x_1 + sigma_t x_0 (+ gamma_t z with interpolant noise), dx_t its time derivative; and the conversions
    between velocity, data (target), noise (epsilon) and score predictions on this path."""
    def __init__(self: AffineProbPath, scheduler: Scheduler, noise: str = ..., noise_scale: float = ...) -> None:
        """noise: 'none', 'constant' (gamma_t = noise_scale, I-CFM) or 'brownian-bridge' (noise_scale sqrt(t (1 - t)))."""
        ...
    def sample(self: AffineProbPath, x_0: torch.Tensor, x_1: torch.Tensor, t: torch.Tensor) -> PathSample:
        """x_t and dx_t at times t (B,); interpolant noise from torch's global generator."""
        ...
    @property
    def scheduler(self) -> Scheduler:
        ...
    @property
    def spec(self) -> Any:
        ...
    def convert(self: AffineProbPath, value: torch.Tensor, from_: str, to: str, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A prediction of kind from_ at (x_t, t) as kind to: 'velocity', 'data', 'noise' or 'score' (t: (B,) or a scalar)."""
        ...
    def target_to_velocity(self: AffineProbPath, x_1: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ...
    def epsilon_to_velocity(self: AffineProbPath, epsilon: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ...
    def velocity_to_target(self: AffineProbPath, velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ...
    def velocity_to_epsilon(self: AffineProbPath, velocity: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ...
    def target_to_epsilon(self: AffineProbPath, x_1: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ...
    def epsilon_to_target(self: AffineProbPath, epsilon: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ...


class CondOTProbPath(AffineProbPath):
    """The straight path x_t = (1 - t) x_0 + t x_1, dx_t = x_1 - x_0 (sigma: I-CFM's constant noise)."""
    def __init__(self: CondOTProbPath, sigma: float = ...) -> None:
        ...


class Manifold:
    """A space a flow lives on (the library's flowmatch::Manifold): points are rows of (B, coordinates)"""
    def __init__(self: Manifold, spec: Any, dim: int = ...) -> None:
        """Manifold('sphere', dim=2) (S^d as unit vectors in R^(d+1)), Manifold('torus', dim=2) (angles in [-pi, pi)),
        or a spec dict such as {'type': 'product', 'factors': [{'type': 'sphere', 'dim': 2}, {'type': 'torus', 'dim': 1}]}."""
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def spec(self) -> Any:
        ...
    @property
    def dimension(self) -> int:
        ...
    @property
    def coordinates(self) -> int:
        ...
    @property
    def log_volume(self) -> float:
        ...
    def project(self: Manifold, x: torch.Tensor) -> torch.Tensor:
        """The nearest point of the manifold to each row."""
        ...
    def project_tangent(self: Manifold, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """v made tangent at x."""
        ...
    def expmap(self: Manifold, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ...
    def logmap(self: Manifold, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ...
    def distance(self: Manifold, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Geodesic distance per row."""
        ...
    def pairwise_distance(self: Manifold, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(n, m) geodesic distances."""
        ...
    def distance_from_manifold(self: Manifold, x: torch.Tensor) -> torch.Tensor:
        ...
    def sample_uniform(self: Manifold, n: int, seed: int = ...) -> torch.Tensor:
        """n points of the uniform distribution (float32)."""
        ...
    def sample_wrapped_normal(self: Manifold, n: int, scale: float = ..., seed: int = ...) -> torch.Tensor:
        """n points of the wrapped normal at the origin (torus) or north pole (sphere); scale 0: the notebooks' (1; 1/2)."""
        ...
    def wrapped_normal_log_density(self: Manifold, x: torch.Tensor, scale: float = ...) -> torch.Tensor:
        """Its exact log-density per row against the volume measure."""
        ...


class MixtureDiscretePath:
    """Discrete flow matching's mixture path over tokens (the library's flowmatch::MixtureDiscretePath)"""
    def __init__(self: MixtureDiscretePath, kappa: str = ..., source: str = ..., vocabulary: int = ...) -> None:
        """kappa: 'linear' or 'poly:n'; source: 'uniform' or 'mask' (the extra id vocabulary)."""
        ...
    @property
    def spec(self) -> Any:
        ...
    @property
    def vocabulary(self) -> int:
        ...
    @property
    def input_vocabulary(self) -> int:
        ...
    @property
    def mask_token(self) -> int:
        ...
    def sample(self: MixtureDiscretePath, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, seed: int = ...) -> torch.Tensor:
        """x_t: each token of x1 kept with probability kappa_t, else x0's."""
        ...
    def kappa(self: MixtureDiscretePath, t: torch.Tensor) -> tuple:
        """(kappa_t, d kappa_t / dt), float64."""
        ...
    def kappa_inverse(self: MixtureDiscretePath, k: torch.Tensor) -> torch.Tensor:
        ...
    def sample_source(self: MixtureDiscretePath, n: int, length: int, seed: int = ...) -> torch.Tensor:
        ...


class ODESolver:
    """Solves dx/dt = velocity_model(x, t, **model_extras) (flow_matching's ODESolver) with flowmatch's solvers;
    with a manifold every step stays on it."""
    def __init__(self: ODESolver, velocity_model: Any, manifold: Manifold = ...) -> None:
        ...
    def sample(self: ODESolver, x_init: torch.Tensor, step_size: Any = ..., method: str = ..., atol: float = ..., rtol: float = ..., time_grid: Any = ..., return_intermediates: bool = ..., **kwargs) -> torch.Tensor:
        """x at time_grid[-1] from x_init at time_grid[0]. method: euler, midpoint, heun, rk4 (fixed steps of step_size, or the
        time_grid's own points when step_size is None) or dopri5 (atol, rtol). With return_intermediates, the states at every
        time_grid time, stacked (len(time_grid), ...). Keyword arguments go to every model call."""
        ...
    def compute_likelihood(self: ODESolver, x_1: torch.Tensor, log_p0: Any = ..., step_size: Any = ..., method: str = ..., atol: float = ..., rtol: float = ..., time_grid: Any = ..., exact_divergence: bool = ..., probes: int = ..., seed: Any = ..., **kwargs) -> tuple:
        """(x_0, log p_1(x_1)) by the continuity equation, solved from x_1 at t = 1 back to t = 0 (fixed-step methods: ceil(1 /
        step_size) equal steps; flow_matching's defaults are euler and Hutchinson, ours dopri5 and exact). log_p0(x) is the source's
        log-density per row (default: N(0, I), or the manifold's uniform distribution). exact_divergence=False uses
        Hutchinson's estimate with `probes` Rademacher probes (seeded by `seed`). Keyword arguments go to every model call."""
        ...


class PathSample:
    """A draw from a conditional path: x_0, x_1, t, x_t and dx_t (flow_matching's PathSample)"""
    @property
    def x_0(self) -> torch.Tensor:
        ...
    @property
    def x_1(self) -> torch.Tensor:
        ...
    @property
    def t(self) -> torch.Tensor:
        ...
    @property
    def x_t(self) -> torch.Tensor:
        ...
    @property
    def dx_t(self) -> torch.Tensor:
        ...


class Run:
    """A run folder: config.json, checkpoints, metrics (the library's flowmatch::Run)"""
    @staticmethod
    def open(dir: str) -> Run:
        """Opens a run folder written by flowmatch.train or 'flowmatch train'."""
        ...
    @property
    def dir(self) -> str:
        ...
    @property
    def config(self) -> Any:
        ...
    @property
    def domain(self) -> str:
        ...
    def latest_checkpoint(self: Run) -> str:
        ...
    def best_checkpoint(self: Run) -> str:
        """checkpoints/best.ckpt: the lowest validation NLL of a run trained with validate='nll' (checkpoint='best' picks it)"""
        ...
    def sample(self: Run, n: int = ..., solver: str = ..., steps: int = ..., seed: int = ..., atol: float = ..., rtol: float = ..., scheduler: str = ..., sde_noise: float = ..., class_: str = ..., guidance: float = ..., checkpoint: str = ..., device: str = ...) -> tuple:
        """Samples as 'flowmatch sample' draws them (same seed, same samples): (x (n, D) float32, info dict with the NFE).
        Unset n/solver/steps take the data's defaults (points: 10000, euler, 100)."""
        ...
    def evaluate(self: Run, n: int = ..., seed: int = ..., solver_sweep: bool = ..., out: str = ..., device: str = ...) -> Any:
        """The data domain's evaluation (points: W2 at 1..100 Euler steps, MMD, straightness): a dict, also written to metrics.json."""
        ...
    def log_likelihood(self: Run, points: Any = ..., split: str = ..., n: int = ..., solver: str = ..., steps: int = ..., atol: float = ..., rtol: float = ..., error_norm: str = ..., seed: int = ..., checkpoint: str = ...) -> tuple:
        """Per-point log p (float64) and the summary dict ('flowmatch likelihood'): of `points`, or (None) of the first n
        rows of the run's own test or validation split (split='test' or 'validation'). error_norm: dopri5's 'sample' or 'batch'.
        checkpoint: a file, 'best' (validate='nll' runs), or '' for the newest."""
        ...


class ScheduleTransformedModel:
    """velocity_model trained on original_scheduler's path, as the velocity of new_scheduler's path with the same
    final distribution (exact for the marginal field): u'(x, r) = (ds/dr / s) x + s dt/dr u(x / s, t_r)."""
    def __init__(self: ScheduleTransformedModel, velocity_model: Any, original_scheduler: Scheduler, new_scheduler: Scheduler) -> None:
        ...
    def __call__(self: ScheduleTransformedModel, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        """The transformed velocity at (x, t); t a scalar or (B,); keyword arguments go to the model."""
        ...


class Scheduler:
    """The scheduler of an affine path x_t = alpha_t x_1 + sigma_t x_0 (t = 0 noise, t = 1 data). Scheduler(spec) builds any
    from its name or spec dict (flowmatch.scheduler_names()); the subclasses below take their parameters."""
    def __init__(self: Scheduler, spec: Any) -> None:
        ...
    def __call__(self: Scheduler, t: torch.Tensor) -> SchedulerOutput:
        """alpha_t, sigma_t, d_alpha_t, d_sigma_t at times t (any shape), in closed form."""
        ...
    def snr_inverse(self: Scheduler, snr: torch.Tensor) -> torch.Tensor:
        """The time t at which alpha_t / sigma_t equals snr (>= 0, may be inf); outside the scheduler's range, the nearer end."""
        ...
    @property
    def spec(self) -> Any:
        """The parameters, as a dict."""
        ...
    @property
    def name(self) -> str:
        ...


class CondOTScheduler(Scheduler):
    """alpha = t, sigma = 1 - (1 - sigma_min) t (the straight line for sigma_min = 0)."""
    def __init__(self: CondOTScheduler, sigma_min: float = ...) -> None:
        ...


class CosineScheduler(Scheduler):
    """alpha = sin(pi t / 2), sigma = cos(pi t / 2)."""
    def __init__(self: CosineScheduler) -> None:
        ...


class DDPMScheduler(Scheduler):
    """DDPM's discrete chain (linear or cosine betas) in flow time: step n is t = 1 - n/steps."""
    def __init__(self: DDPMScheduler, beta_schedule: str = ..., steps: int = ..., beta_start: float = ..., beta_end: float = ...) -> None:
        ...
    @property
    def alpha_bar(self) -> torch.Tensor:
        """alpha-bar_n for n = 0 .. steps (float64)."""
        ...


class LinearVPScheduler(Scheduler):
    """alpha = t, sigma = sqrt(1 - t^2)."""
    def __init__(self: LinearVPScheduler) -> None:
        ...


class PolynomialConvexScheduler(Scheduler):
    """alpha = t^n, sigma = 1 - t^n."""
    def __init__(self: PolynomialConvexScheduler, n: float) -> None:
        ...


class SchedulerOutput:
    """alpha_t, sigma_t and their time derivatives (flow_matching's SchedulerOutput)"""
    @property
    def alpha_t(self) -> torch.Tensor:
        ...
    @property
    def sigma_t(self) -> torch.Tensor:
        ...
    @property
    def d_alpha_t(self) -> torch.Tensor:
        ...
    @property
    def d_sigma_t(self) -> torch.Tensor:
        ...


class VEScheduler(Scheduler):
    """Variance exploding: alpha = 1, sigma from sigma_max (t = 0) to sigma_min (t = 1), geometric."""
    def __init__(self: VEScheduler, sigma_min: float = ..., sigma_max: float = ...) -> None:
        ...


class VPScheduler(Scheduler):
    """Song et al.'s variance-preserving SDE's marginals in flow time (beta from beta_min to beta_max)."""
    def __init__(self: VPScheduler, beta_min: float = ..., beta_max: float = ...) -> None:
        ...


class VonMisesFisherMixture:
    """A mixture of von Mises-Fisher distributions on the sphere S^2 (the library's
    flowmatch::VonMisesFisherMixture; the source of --source vmf-mixture:K)"""
    def __init__(self: VonMisesFisherMixture, weights: torch.Tensor, means: torch.Tensor, kappas: torch.Tensor) -> None:
        """weights (K) summing to 1, unit means (K, 3), concentrations (K) > 0."""
        ...
    @staticmethod
    def fit(x: torch.Tensor, components: int, iterations: int = ..., seed: int = ..., max_kappa: float = ...) -> VonMisesFisherMixture:
        """EM on unit vectors (N, 3) from k-means++ starts; each kappa the exact maximum-likelihood one, capped at max_kappa."""
        ...
    @property
    def weights(self) -> torch.Tensor:
        ...
    @property
    def means(self) -> torch.Tensor:
        ...
    @property
    def kappas(self) -> torch.Tensor:
        ...
    def log_density(self: VonMisesFisherMixture, x: torch.Tensor) -> torch.Tensor:
        """log p per row against the area measure (float64)."""
        ...
    def sample(self: VonMisesFisherMixture, n: int, seed: int = ...) -> torch.Tensor:
        """n exact draws (float64)."""
        ...
    def to_dict(self: VonMisesFisherMixture) -> Any:
        """{'weights', 'means', 'kappas'} as in a run's config.json (data.source_mixture)."""
        ...
    @staticmethod
    def from_dict(d: Any) -> VonMisesFisherMixture:
        """From to_dict's form or a run's config.json['data']['source_mixture']."""
        ...


def assignment(cost: torch.Tensor) -> tuple:
    """Exact linear assignment of a (n, m) cost, n <= m: (column of each row, total cost)."""
    ...

def autoregressive_nll(model: Any, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) per sequence (float64 nats) of tokens x (B, L) under a causal model(x, t) -> logits (B, L, V) of p(x_i | x_<i)."""
    ...

def domain_names() -> list[str]:
    """Registered data domains."""
    ...

def exact_ot(x0: torch.Tensor, x1: torch.Tensor) -> tuple:
    """Exact minibatch OT (squared Euclidean): returns (x0, x1 reordered); equal sizes pair without replacement."""
    ...

def exact_transport(cost: torch.Tensor) -> tuple:
    """Exact OT plan between uniform measures (any sizes): (plan (n, m), cost)."""
    ...

def generalized_kl(logits: torch.Tensor, x1: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, path: MixtureDiscretePath) -> torch.Tensor:
    """The mixture path's generalized KL per token (B, L) for posterior logits (B, L, V)."""
    ...

def geodesic_path_sample(manifold: Manifold, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, scheduler: str = ...) -> tuple:
    """Riemannian flow matching's geodesic path: (x_t, u_t) with x_t = exp_x0(kappa_t log_x0(x1)), kappa_t the
    scheduler's alpha_t (condot: t)."""
    ...

def log_likelihood(velocity: Any, x1: torch.Tensor, method: str = ..., steps: int = ..., atol: float = ..., rtol: float = ..., divergence: str = ..., probes: int = ..., source_scale: float = ..., manifold: Manifold = ..., source_log_density: Any = ...) -> tuple:
    """log p1(x1) of the flow by the continuity equation: (log_prob (B), nfe). The source is N(0, s^2 I), or
    with a manifold its uniform distribution; source_log_density(x, t) overrides either."""
    ...

def model_names() -> list[str]:
    """Registered network types."""
    ...

def negative_elbo(posterior: Any, x1: torch.Tensor, path: MixtureDiscretePath, time_points: int = ..., epsilon: float = ..., seed: int = ...) -> torch.Tensor:
    """-ELBO per sequence (nats) of tokens x1 (B, L) under posterior(x_t, t) -> logits (B, L, V)."""
    ...

def path_sample(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, scheduler: str = ..., sigma: float = ..., noise: str = ...) -> tuple:
    """A point on the conditional path and its velocity: (x_t, u_t) = (alpha_t x1 + sigma_t x0 + gamma_t eps, ...);
    noise: 'constant' (gamma_t = sigma, I-CFM; the default when sigma > 0), 'brownian-bridge' (sigma sqrt(t(1-t))) or 'none'."""
    ...

def run_settings() -> list:
    """The settings flowmatch.train takes (the 'flowmatch train' flags)."""
    ...

def sample_autoregressive(model: Any, n: int, length: int, float64: bool = ..., seed: int = ..., device: str = ...) -> tuple:
    """Draws n sequences of `length` tokens left to right from a causal model: (x (n, length) int64 on `device`, where the model is called, info with the NFE = length)."""
    ...

def sample_ctmc(posterior: Any, x0: torch.Tensor, path: MixtureDiscretePath, steps: int = ..., corrector: Any = ..., float64: bool = ..., seed: int = ...) -> tuple:
    """CTMC Euler sampling of tokens from source tokens x0 (B, L): (x1, info with the NFE). corrector: a number, c(t), or 'A:a:b' for c(t) = A t^a (1 - t)^b."""
    ...

def scheduler_names() -> list[str]:
    """Schedulers accepted by path_sample."""
    ...

def sinkhorn(cost: torch.Tensor, reg: float = ..., max_iterations: int = ..., tolerance: float = ..., epsilon_scaling: bool = ...) -> tuple:
    """Entropic OT plan (stabilized log-domain Sinkhorn): (plan, info dict)."""
    ...

def solve_ode(velocity: Any, x0: torch.Tensor, method: str = ..., steps: int = ..., t0: float = ..., t1: float = ..., atol: float = ..., rtol: float = ..., output_times: list[float] = ..., manifold: Manifold = ...) -> tuple:
    """Integrates dx/dt = velocity(x, t): (x at t1, info with the exact NFE and the states at output_times).
    With a manifold, velocities are made tangent and every step ends on it."""
    ...

def solver_names() -> list[str]:
    """Registered solvers."""
    ...

def train(config: Any = ..., out: str = ..., resume: bool = ..., device: str = ...) -> Run:
    """Trains a run from settings named as the 'flowmatch train' flags ({'steps': 2000, 'coupling': 'exact-ot', ...};
    dashes or underscores) into the folder `out`; returns the Run."""
    ...

def wasserstein2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact W2 between two point sets (n, D) and (m, D), uniform weights, float64."""
    ...
