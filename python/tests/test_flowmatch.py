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
