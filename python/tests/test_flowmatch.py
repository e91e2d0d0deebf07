"""The flowmatch Python module against closed forms, scipy and the C++ results (run by `make test`)."""
import json
import math
import os
import subprocess

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import flowmatch as fm


def test_exact_ot_matches_scipy_and_pairs_without_replacement():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(200, 2, generator=g, dtype=torch.float64) * 2 + 3
    a, b = fm.exact_ot(x0, x1)
    assert torch.equal(a, x0)
    cost = torch.cdist(x0, x1).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    assert abs(float((a - b).pow(2).sum()) - cost[rows, cols].sum()) < 1e-9 * cost[rows, cols].sum()
    # b is x1 reordered: every row exactly once.
    assert torch.equal(torch.sort(b[:, 0]).values, torch.sort(x1[:, 0]).values)
    columns, total = fm.assignment(torch.from_numpy(cost))
    assert abs(total - cost[rows, cols].sum()) < 1e-9 * total
    assert sorted(columns.tolist()) == list(range(200))


def test_transport_plans_and_w2():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(30, 2, generator=g, dtype=torch.float64)
    b = torch.randn(45, 2, generator=g, dtype=torch.float64) + 1
    cost = torch.cdist(a, b).pow(2)
    plan, exact = fm.exact_transport(cost)
    assert torch.allclose(plan.sum(1), torch.full((30,), 1 / 30, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(plan.sum(0), torch.full((45,), 1 / 45, dtype=torch.float64), atol=1e-15)
    assert abs(fm.wasserstein2(a, b) ** 2 - exact) < 1e-9
    soft, info = fm.sinkhorn(cost, reg=0.5)
    assert info["converged"] and info["marginal_error"] < 2e-6
    assert 0 <= info["cost"] - exact <= 0.5 * math.log(30) + 1e-4  # the entropic bound
    with pytest.raises(ValueError):
        fm.sinkhorn(cost, reg=-1.0)


def test_path_sample_is_the_straight_line():
    g = torch.Generator().manual_seed(2)
    x0, x1, t = torch.randn(10, 2, generator=g), torch.randn(10, 2, generator=g), torch.rand(10, generator=g)
    xt, ut = fm.path_sample(x0, x1, t)
    assert torch.allclose(xt, (1 - t[:, None]) * x0 + t[:, None] * x1, atol=1e-6)
    assert torch.allclose(ut, x1 - x0, atol=1e-6)
    assert "vp" in fm.scheduler_names()


def test_path_sample_adds_the_noise_sigma_asks_for():
    # sigma = 0.1 with constant noise: x_t - mean has standard deviation 0.1 in every coordinate (it
    # added none before: the binding set the scale but not the kind). 20 000 x 2 draws: the sample
    # standard deviation is within 4 standard errors (0.1 / sqrt(2 n) each) of 0.1.
    torch.manual_seed(0)
    n = 20000
    x0, x1, t = torch.zeros(n, 2), torch.ones(n, 2), torch.full((n,), 0.5)
    xt, ut = fm.path_sample(x0, x1, t, sigma=0.1)
    resid = xt - 0.5
    assert abs(float(resid.std()) - 0.1) < 4 * 0.1 / (2 * 2 * n) ** 0.5
    assert abs(float(resid.mean())) < 4 * 0.1 / (2 * n) ** 0.5
    assert torch.allclose(ut, torch.ones(n, 2))  # constant noise adds nothing to the velocity
    # The Brownian bridge at t = 1/2: gamma = 0.1 * sqrt(1/4) = 0.05.
    xt, _ = fm.path_sample(x0, x1, t, sigma=0.1, noise="brownian-bridge")
    assert abs(float((xt - 0.5).std()) - 0.05) < 4 * 0.05 / (2 * 2 * n) ** 0.5
    xt, _ = fm.path_sample(x0, x1, t, sigma=0.0)
    assert torch.equal(xt, torch.full((n, 2), 0.5))


def test_solvers_with_python_and_torchscript_velocities():
    x0 = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=torch.float64)
    calls = []

    def linear(x, t):  # dx/dt = -x, t arrives with shape (B,)
        calls.append(t.shape)
        return -x

    x, info = fm.solve_ode(linear, x0, method="rk4", steps=50, output_times=[0.5])
    assert torch.allclose(x, x0 * math.exp(-1), atol=1e-8)
    assert info["nfe"] == 200 == len(calls)  # 0.5 is a grid point: no extra step
    assert torch.allclose(info["trajectory"][0], x0 * math.exp(-0.5), atol=1e-8)
    assert calls[0] == (2,)
    _, adaptive = fm.solve_ode(linear, x0, method="dopri5", atol=1e-8, rtol=1e-8)
    assert adaptive["nfe"] > 0

    class Velocity(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return 2.0 * x + t.unsqueeze(1)

    scripted = torch.jit.script(Velocity())
    x, _ = fm.solve_ode(scripted, x0, method="rk4", steps=200)
    assert torch.allclose(x, (x0 + 0.25) * math.exp(2.0) - 0.75, atol=1e-7)
    with pytest.raises(ValueError):
        fm.solve_ode(linear, x0, method="leapfrog")


def test_log_likelihood_of_a_scaling_flow():
    # v = c x carries N(0, I) to N(0, e^{2c} I).
    c = -0.7
    g = torch.Generator().manual_seed(3)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64) * math.exp(c)
    log_prob, nfe = fm.log_likelihood(lambda x, t: c * x, x, atol=1e-10, rtol=1e-10)
    s = math.exp(c)
    expected = (-0.5 * (x / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)
    assert torch.allclose(log_prob, expected, atol=1e-7)
    assert nfe > 0
    approx, _ = fm.log_likelihood(lambda x, t: c * x, x, divergence="hutchinson", probes=8)
    assert torch.allclose(approx, expected, atol=1e-4)  # Hutchinson is exact for a multiple of I
    # A field that ignores x (no graph to differentiate) has divergence zero: log p is the source's.
    still, _ = fm.log_likelihood(lambda x, t: torch.zeros_like(x), x)
    assert torch.allclose(still, (-0.5 * x ** 2 - 0.5 * math.log(2 * math.pi)).sum(1), atol=1e-12)


def test_manifolds_geodesics_and_projected_solves():
    sphere, torus = fm.Manifold("sphere"), fm.Manifold("torus", dim=3)
    assert (sphere.dimension, sphere.coordinates, torus.coordinates) == (2, 3, 3)
    assert math.isclose(sphere.log_volume, math.log(4 * math.pi))
    assert math.isclose(torus.log_volume, 3 * math.log(2 * math.pi))
    product = fm.Manifold({"type": "product", "factors": [sphere.spec, {"type": "torus", "dim": 1}]})
    assert product.coordinates == 4 and product.dimension == 3
    g = torch.Generator().manual_seed(0)
    x = sphere.project(torch.randn(64, 3, generator=g, dtype=torch.float64))
    y = sphere.project(torch.randn(64, 3, generator=g, dtype=torch.float64))
    # exp(log) is the identity; the distance is the angle; |log| is the distance.
    v = sphere.logmap(x, y)
    assert torch.allclose(sphere.expmap(x, v), y, atol=1e-12)
    angle = torch.acos((x * y).sum(1).clamp(-1, 1))
    assert torch.allclose(sphere.distance(x, y), angle, atol=1e-7)
    assert torch.allclose(v.norm(dim=1), angle, atol=1e-7)
    assert torch.allclose(sphere.pairwise_distance(x, y).diagonal(), angle, atol=1e-7)
    # The geodesic path: its ends are x0 and x1, its velocity is the time derivative of the point.
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.05
    xt, ut = fm.geodesic_path_sample(sphere, x, y, t)
    assert torch.allclose(fm.geodesic_path_sample(sphere, x, y, torch.zeros(64, dtype=torch.float64))[0], x, atol=1e-12)
    assert torch.allclose(fm.geodesic_path_sample(sphere, x, y, torch.ones(64, dtype=torch.float64))[0], y, atol=1e-9)
    h = 1e-6
    fd = (fm.geodesic_path_sample(sphere, x, y, t + h)[0] - fm.geodesic_path_sample(sphere, x, y, t - h)[0]) / (2 * h)
    assert torch.allclose(ut, fd, atol=1e-6)
    # A rotation about the z axis at rate w, integrated on the sphere: exactly the rotation by w.
    w = 1.3
    rot = lambda p, s: w * torch.stack([-p[:, 1], p[:, 0], torch.zeros_like(p[:, 0])], 1)
    end, info = fm.solve_ode(rot, x, method="rk4", steps=200, manifold=sphere)
    c, s_ = math.cos(w), math.sin(w)
    expected = torch.stack([c * x[:, 0] - s_ * x[:, 1], s_ * x[:, 0] + c * x[:, 1], x[:, 2]], 1)
    assert torch.allclose(end, expected, atol=1e-9) and info["nfe"] == 800
    # A zero field keeps the uniform density; with the wrapped normal as the source, its density.
    zero = lambda p, s: torch.zeros_like(p)
    logp, _ = fm.log_likelihood(zero, x, manifold=sphere)
    assert torch.allclose(logp, torch.full_like(logp, -math.log(4 * math.pi)), atol=1e-12)
    wn = sphere.sample_wrapped_normal(50, seed=1).double()
    logp, _ = fm.log_likelihood(zero, wn, manifold=sphere, source_log_density=lambda p, s: sphere.wrapped_normal_log_density(p))
    assert torch.allclose(logp, sphere.wrapped_normal_log_density(wn), atol=1e-12)
    # A rotation moves the density with it (a divergence-free field on the sphere).
    logp, _ = fm.log_likelihood(rot, wn, manifold=sphere, atol=1e-9, rtol=1e-9,
                                source_log_density=lambda p, s: sphere.wrapped_normal_log_density(p))
    c, s_ = math.cos(-w), math.sin(-w)
    back = torch.stack([c * wn[:, 0] - s_ * wn[:, 1], s_ * wn[:, 0] + c * wn[:, 1], wn[:, 2]], 1)
    assert torch.allclose(logp, sphere.wrapped_normal_log_density(back), atol=1e-6)
    # A von Mises-Fisher mixture: EM finds two far-apart components, and as a flow's source a rotation
    # carries its density along exactly as it does the wrapped normal's.
    truth = fm.VonMisesFisherMixture(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 0, 0], [0, 0, -1.0]]), torch.tensor([30.0, 80.0]))
    pts = truth.sample(20000, seed=3)
    fit = fm.VonMisesFisherMixture.fit(pts, 2, iterations=50, seed=4)
    heavy = int(fit.weights.argmax())
    assert abs(float(fit.weights[heavy]) - 0.7) < 5 * math.sqrt(0.21 / 20000)
    assert abs(float(fit.kappas[heavy]) - 80.0) < 5 * 80.0 / math.sqrt(14000)
    assert float(fit.log_density(pts).mean()) >= float(truth.log_density(pts).mean()) - 1e-9
    again = fm.VonMisesFisherMixture.from_dict(fit.to_dict())
    assert torch.equal(again.means, fit.means) and torch.equal(again.kappas, fit.kappas)
    logp, _ = fm.log_likelihood(rot, pts[:50], manifold=sphere, atol=1e-9, rtol=1e-9, source_log_density=lambda p, s: truth.log_density(p))
    back = torch.stack([c * pts[:50, 0] - s_ * pts[:50, 1], s_ * pts[:50, 0] + c * pts[:50, 1], pts[:50, 2]], 1)
    assert torch.allclose(logp, truth.log_density(back), atol=1e-6)
    with pytest.raises(ValueError, match="sum to 1"):
        fm.VonMisesFisherMixture(torch.tensor([0.5, 0.6]), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), torch.tensor([1.0, 1.0]))
    # Uniform samples on the torus stay in [-pi, pi); bad specs are named.
    u = torus.sample_uniform(1000, seed=2)
    assert u.shape == (1000, 3) and u.abs().max() <= math.pi
    with pytest.raises(ValueError, match="klein"):
        fm.Manifold("klein")


def test_autoregressive_likelihood_and_sampling_of_a_markov_chain():
    # A causal "network" written by hand: p(x_0) = pi, p(x_i | x_<i) = P[x_{i-1}] (its logits at i read x_{i-1}).
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    P = torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)

    def model(x, t):
        previous = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
        logits = P.log()[previous]
        logits[:, 0] = pi.log()
        return logits

    x = torch.cartesian_prod(torch.arange(3), torch.arange(3), torch.arange(3))
    nll = fm.autoregressive_nll(model, x)
    expected = -(pi[x[:, 0]] * P[x[:, 0], x[:, 1]] * P[x[:, 1], x[:, 2]]).log()
    assert torch.allclose(nll, expected, atol=1e-12)
    samples, info = fm.sample_autoregressive(model, 60000, 3, seed=1)
    assert info["nfe"] == 3
    index = samples[:, 0] * 9 + samples[:, 1] * 3 + samples[:, 2]
    share = torch.bincount(index, minlength=27).double() / 60000
    p = (-expected).exp()
    assert ((share - p).abs() <= 5 * (p * (1 - p) / 60000).sqrt() + 1e-4).all()


def test_discrete_flow_matching_with_the_true_posterior_of_one_token():
    q = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    for source in ("mask", "uniform"):
        path = fm.MixtureDiscretePath("poly:2", source, vocabulary=4)
        p0 = torch.zeros(path.input_vocabulary, dtype=torch.float64)
        if source == "mask":
            p0[4] = 1
        else:
            p0[:] = 0.25

        def posterior(x_t, t):  # p(x1 = y | x_t) ∝ q(y) (kappa δ(x_t, y) + (1 - kappa) p0(x_t))
            kappa = path.kappa(t)[0].reshape(-1, 1)
            delta = (x_t.reshape(-1, 1) == torch.arange(4)).double()
            w = q * (kappa * delta + (1 - kappa) * p0[x_t.reshape(-1)].reshape(-1, 1))
            return (w / w.sum(1, keepdim=True)).log().unsqueeze(1)

        x1 = torch.arange(4).repeat(2000).reshape(-1, 1)
        elbo = fm.negative_elbo(posterior, x1, path, time_points=32, epsilon=0.0, seed=1).reshape(-1, 4)
        assert (elbo.mean(0) >= -q.log() - 5 * elbo.std(0) / math.sqrt(2000)).all()  # a bound
        if source == "mask":  # tight: -log q (within 5 standard errors of the estimate)
            assert ((elbo.mean(0) + q.log()).abs() <= 5 * elbo.std(0) / math.sqrt(2000)).all()
            x, info = fm.sample_ctmc(posterior, path.sample_source(100000, 1, seed=2), path, steps=3, seed=3)
            assert info["nfe"] == 3
            share = torch.bincount(x.reshape(-1), minlength=4).double() / 100000
            assert torch.allclose(share, q, atol=5 * math.sqrt(0.25 / 100000))
            x, _ = fm.sample_ctmc(posterior, path.sample_source(10, 1, seed=2), path, steps=4, corrector="2:0.5:0.5", seed=3)
            assert x.shape == (10, 1)
            with pytest.raises(ValueError, match="expected A"):
                fm.sample_ctmc(posterior, path.sample_source(10, 1, seed=2), path, steps=4, corrector="2:x")
        logits = torch.randn(100, 1, 4, dtype=torch.float64)
        x_t = torch.randint(path.input_vocabulary, (100, 1))
        assert (fm.generalized_kl(logits, torch.randint(4, (100, 1)), x_t, torch.rand(100) * 0.99, path) >= 0).all()


@pytest.mark.skipif("FLOWMATCH_CLI" not in os.environ, reason="the flowmatch command line was not built")
def test_module_agrees_with_the_command_line(tmp_path):
    cli = os.environ["FLOWMATCH_CLI"]

    class Velocity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(torch.cat([x, t.unsqueeze(1)], dim=1))

    torch.manual_seed(0)
    model = torch.jit.script(Velocity())
    model.save(str(tmp_path / "v.pt"))
    x0 = torch.randn(300, 2)
    np.save(tmp_path / "x0.npy", x0.numpy())
    subprocess.run([cli, "sample", "--model-file", str(tmp_path / "v.pt"), "--initial", str(tmp_path / "x0.npy"),
                    "--solver", "rk4", "--steps", "10", "--out", str(tmp_path / "cli.npy"), "--threads", "1"],
                   check=True, capture_output=True)
    with torch.no_grad():
        x, info = fm.solve_ode(model, x0, method="rk4", steps=10)
    assert info["nfe"] == 40
    assert torch.allclose(x, torch.from_numpy(np.load(tmp_path / "cli.npy")), atol=1e-6)
    # Exact W2 through the module and through `flowmatch eval --samples --reference`.
    b = torch.randn(250, 2, dtype=torch.float64)
    np.save(tmp_path / "a.npy", x.double().numpy())
    np.save(tmp_path / "b.npy", b.numpy())
    out = subprocess.run([cli, "eval", "--samples", str(tmp_path / "a.npy"), "--reference", str(tmp_path / "b.npy")],
                         check=True, capture_output=True, text=True).stdout
    assert abs(json.loads(out)["w2"] - fm.wasserstein2(x.double(), b)) < 1e-12
