"""flow_matching's nouns in flowmatch: schedulers, affine paths and their conversions, the schedule
transform and the ODE solver object, against closed forms; the solver object against the command line;
the type stubs against the module; `pip install ./python` into a fresh virtual environment."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import flowmatch as fm

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)


def closed_forms():
    """(scheduler, alpha(t), sigma(t)) for the schedulers with elementary formulas."""
    pi = math.pi
    return [
        (fm.CondOTScheduler(), lambda t: t, lambda t: 1 - t),
        (fm.CondOTScheduler(sigma_min=0.1), lambda t: t, lambda t: 1 - 0.9 * t),
        (fm.PolynomialConvexScheduler(n=3.0), lambda t: t**3, lambda t: 1 - t**3),
        (fm.CosineScheduler(), lambda t: torch.sin(pi * t / 2), lambda t: torch.cos(pi * t / 2)),
        (fm.LinearVPScheduler(), lambda t: t, lambda t: torch.sqrt(1 - t**2)),
    ]


ALL = [fm.CondOTScheduler(), fm.CondOTScheduler(sigma_min=0.1), fm.PolynomialConvexScheduler(n=3.0), fm.CosineScheduler(),
       fm.LinearVPScheduler(), fm.VPScheduler(), fm.VPScheduler(beta_min=0.5, beta_max=10.0), fm.VEScheduler(),
       fm.DDPMScheduler(), fm.DDPMScheduler(beta_schedule="cosine")]


def test_schedulers_give_their_closed_forms_derivatives_and_snr_inverse():
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    for s, alpha, sigma in closed_forms():
        out = s(t)
        assert torch.allclose(out.alpha_t, alpha(t), atol=1e-14), s
        assert torch.allclose(out.sigma_t, sigma(t), atol=1e-14), s
    for s in ALL:
        out = s(t)
        assert isinstance(s, fm.Scheduler) and isinstance(out, fm.SchedulerOutput)
        # Derivatives against central differences (h = 1e-6 in float64: error O(h^2) + rounding 1e-10).
        h = 1e-6
        up, down = s(t + h), s(t - h)
        scale = 1 + out.d_alpha_t.abs().max() + out.d_sigma_t.abs().max()
        assert torch.allclose(out.d_alpha_t, (up.alpha_t - down.alpha_t) / (2 * h), atol=1e-6 * scale), s
        assert torch.allclose(out.d_sigma_t, (up.sigma_t - down.sigma_t) / (2 * h), atol=1e-6 * scale), s
        # The SNR inverse undoes the SNR: alpha/sigma is monotone in t.
        snr = out.alpha_t / out.sigma_t
        assert torch.allclose(s.snr_inverse(snr), t, atol=1e-8), s
        # The spec rebuilds the same scheduler.
        again = fm.Scheduler(s.spec)
        assert torch.equal(again(t).alpha_t, out.alpha_t) and again.name == s.name
    for s in (fm.VPScheduler(), fm.LinearVPScheduler(), fm.CosineScheduler(), fm.DDPMScheduler()):
        out = s(t)
        assert torch.allclose(out.alpha_t**2 + out.sigma_t**2, torch.ones_like(t), atol=1e-12), s  # variance preserving
    assert fm.DDPMScheduler().alpha_bar.shape == (1001,)
    with pytest.raises(ValueError):
        fm.Scheduler("no-such-scheduler")
    with pytest.raises(ValueError):
        fm.PolynomialConvexScheduler(n=-1.0)


def test_affine_path_samples_and_converts_between_every_target():
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    x_1 = torch.randn(64, 3, generator=g, dtype=torch.float64) * 2 + 1
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.05
    for s in ALL:
        path = fm.AffineProbPath(scheduler=s)
        ps = path.sample(x_0=x_0, x_1=x_1, t=t)
        v = s(t)
        a, b, da, db = (u[:, None] for u in (v.alpha_t, v.sigma_t, v.d_alpha_t, v.d_sigma_t))
        assert torch.allclose(ps.x_t, a * x_1 + b * x_0, atol=1e-12)
        assert torch.allclose(ps.dx_t, da * x_1 + db * x_0, atol=1e-10)
        assert torch.equal(ps.x_0, x_0) and torch.equal(ps.x_1, x_1) and torch.equal(ps.t, t)
        tol = dict(atol=1e-7, rtol=1e-7)
        assert torch.allclose(path.target_to_velocity(x_1=x_1, x_t=ps.x_t, t=t), ps.dx_t, **tol), s
        assert torch.allclose(path.epsilon_to_velocity(epsilon=x_0, x_t=ps.x_t, t=t), ps.dx_t, **tol), s
        assert torch.allclose(path.velocity_to_target(velocity=ps.dx_t, x_t=ps.x_t, t=t), x_1, **tol), s
        assert torch.allclose(path.velocity_to_epsilon(velocity=ps.dx_t, x_t=ps.x_t, t=t), x_0, **tol), s
        assert torch.allclose(path.target_to_epsilon(x_1=x_1, x_t=ps.x_t, t=t), x_0, **tol), s
        assert torch.allclose(path.epsilon_to_target(epsilon=x_0, x_t=ps.x_t, t=t), x_1, **tol), s
        assert torch.allclose(path.convert(x_0, "noise", "score", ps.x_t, t), -x_0 / b, **tol), s
    straight = fm.CondOTProbPath()
    assert isinstance(straight, fm.AffineProbPath) and straight.scheduler.name == "condot"
    ps = straight.sample(x_0, x_1, t)
    assert torch.allclose(ps.dx_t, x_1 - x_0, atol=1e-14)
    noisy = fm.AffineProbPath(fm.CondOTScheduler(), noise="constant", noise_scale=0.1)
    with pytest.raises(ValueError, match="interpolant noise"):
        noisy.target_to_velocity(x_1, ps.x_t, t)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        straight.sample(x_0, x_1, t[:10])


def gaussian_marginal_velocity(scheduler, x, t, m=1.5, s=0.5):
    """The marginal velocity of the affine path from N(0, 1) to N(m, s^2) in 1-D (independent coupling):
    u(x, t) = E[d_alpha x_1 + d_sigma x_0 | x_t = x] for jointly Gaussian (x_1, x_0, x_t)."""
    o = scheduler(t)
    a, b, da, db = o.alpha_t, o.sigma_t, o.d_alpha_t, o.d_sigma_t
    var = a**2 * s**2 + b**2
    r = (x[:, 0] - a * m) / var
    return (da * (m + a * s**2 * r) + db * b * r)[:, None]


def test_schedule_transform_turns_one_paths_marginal_field_into_anothers():
    # The marginal field of the CondOT path, transformed to the cosine and VP schedulers, is the marginal
    # field of those paths (the transform is exact for marginal fields); float64, away from the ends.
    x = torch.linspace(-3, 3, 25, dtype=torch.float64)[:, None]
    condot = fm.CondOTScheduler()
    for wanted in (fm.CosineScheduler(), fm.VPScheduler(), fm.PolynomialConvexScheduler(n=2.0)):
        model = fm.ScheduleTransformedModel(lambda y, t: gaussian_marginal_velocity(condot, y, t), condot, wanted)
        for r in (0.1, 0.3, 0.5, 0.7, 0.9):
            t = torch.full((25,), r, dtype=torch.float64)
            assert torch.allclose(model(x, t), gaussian_marginal_velocity(wanted, x, t), atol=1e-8), (wanted, r)
            assert torch.allclose(model(x, torch.tensor(r, dtype=torch.float64)), model(x, t))  # a scalar t
    # Keyword arguments reach the model (as flow_matching's model extras), also through a solver.
    scaled = fm.ScheduleTransformedModel(lambda y, t, scale=1.0: scale * gaussian_marginal_velocity(condot, y, t), condot,
                                         fm.CosineScheduler())
    t = torch.full((25,), 0.5, dtype=torch.float64)
    assert torch.allclose(scaled(x, t, scale=2.0), 2 * scaled(x, t), atol=1e-12)
    out = fm.ODESolver(scaled).sample(x, step_size=0.25, method="rk4", time_grid=[0.2, 0.8], scale=0.0)
    transformed_zero = fm.ScheduleTransformedModel(lambda y, t: 0 * y, condot, fm.CosineScheduler())
    assert torch.allclose(out, fm.ODESolver(transformed_zero).sample(x, step_size=0.25, method="rk4", time_grid=[0.2, 0.8]))


def test_ode_solver_sample_follows_flow_matchings_grid_rules():
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    seen = []

    def decay(y, t, rate=1.0):
        seen.append(rate)
        return -rate * y

    solver = fm.ODESolver(velocity_model=decay)
    # Dopri5 lands on every time of the grid: exp(-t) there.
    grid = torch.tensor([0.0, 0.25, 0.5, 1.0])
    states = solver.sample(x, method="dopri5", atol=1e-10, rtol=1e-10, time_grid=grid, return_intermediates=True)
    assert states.shape == (4, 1, 2)
    for k, t in enumerate(grid.tolist()):
        assert torch.allclose(states[k], x * math.exp(-t), atol=1e-9)
    # Euler with a step size: torchdiffeq's grid 0, 0.3, 0.6, 0.9, 1.0 (the last step shorter).
    out = solver.sample(x, step_size=0.3, method="euler")
    expected = x * (1 - 0.3) ** 3 * (1 - 0.1)
    assert torch.allclose(out, expected, atol=1e-14)
    # No step size: the time grid's own points are the Euler steps.
    states = solver.sample(x, method="euler", time_grid=[0.0, 0.5, 1.0], return_intermediates=True)
    assert torch.allclose(states, torch.stack([x, x * 0.5, x * 0.25]), atol=1e-14)
    # A step size with intermediates: the states at the grid's times, integrated by RK4 in steps of 0.05.
    states = solver.sample(x, step_size=0.05, method="rk4", time_grid=[0.0, 0.4, 1.0], return_intermediates=True)
    assert torch.allclose(states[1], x * math.exp(-0.4), atol=1e-8) and torch.allclose(states[2], x * math.exp(-1), atol=1e-8)
    # Backwards in time, and keyword arguments reach the model (flow_matching's model_extras).
    seen.clear()
    out = solver.sample(x, method="dopri5", atol=1e-10, rtol=1e-10, time_grid=[1.0, 0.0], rate=2.0)
    assert torch.allclose(out, x * math.exp(2.0), atol=1e-8) and set(seen) == {2.0}
    with pytest.raises(ValueError):
        solver.sample(x, method="no-such-method")
    with pytest.raises(ValueError, match="step_size"):
        solver.sample(x, step_size=-0.1)
    with pytest.raises(ValueError, match="fixed-step"):
        solver.sample(x, step_size=0.1, method="dopri5")


def test_ode_solver_likelihood_of_a_linear_flow():
    # v(x) = a x carries N(0, I) to N(0, e^{2a} I): log p1(x) = log N(x e^{-a}; 0, I) - a d, and x_0 = x e^{-a}.
    a, d = 0.7, 3
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(20, d, generator=g, dtype=torch.float64) * 2
    solver = fm.ODESolver(lambda y, t: a * y)
    exact = torch.distributions.Normal(0.0, 1.0).log_prob(x1 * math.exp(-a)).sum(1) - a * d
    x0, logp = solver.compute_likelihood(x1, atol=1e-10, rtol=1e-10)
    assert torch.allclose(logp, exact, atol=1e-8) and torch.allclose(x0, x1 * math.exp(-a), atol=1e-8)
    # Hutchinson with Rademacher probes is exact for a multiple of the identity; RK4 steps of 0.05.
    x0, logp = solver.compute_likelihood(x1, step_size=0.05, method="rk4", exact_divergence=False, probes=2, seed=3)
    assert torch.allclose(logp, exact, atol=1e-6)
    # Another source density: N(0, 4 I).
    wide = torch.distributions.Normal(0.0, 2.0)
    x0, logp = solver.compute_likelihood(x1, log_p0=lambda y: wide.log_prob(y).sum(1), atol=1e-10, rtol=1e-10)
    assert torch.allclose(logp, wide.log_prob(x1 * math.exp(-a)).sum(1) - a * d, atol=1e-8)
    with pytest.raises(ValueError, match=r"\[1.0, 0.0\]"):
        solver.compute_likelihood(x1, time_grid=[0.0, 1.0])
    with pytest.raises(ValueError, match="step_size"):
        solver.compute_likelihood(x1, method="euler")


@pytest.mark.skipif("FLOWMATCH_CLI" not in os.environ, reason="the flowmatch command line was not built")
def test_solver_object_and_the_command_line_give_the_same_likelihoods(tmp_path):
    class Velocity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(torch.cat([x, t.unsqueeze(1).to(x.dtype)], dim=1))

    torch.manual_seed(0)
    model = torch.jit.script(Velocity().double())
    model.save(str(tmp_path / "v.pt"))
    x1 = torch.randn(50, 2, dtype=torch.float64)
    np.save(tmp_path / "x1.npy", x1.numpy())
    subprocess.run([os.environ["FLOWMATCH_CLI"], "likelihood", "--model-file", str(tmp_path / "v.pt"), "--data",
                    str(tmp_path / "x1.npy"), "--solver", "rk4", "--steps", "20", "--out", str(tmp_path / "logp.npy"),
                    "--threads", "1"], check=True, capture_output=True)
    cli = torch.from_numpy(np.load(tmp_path / "logp.npy"))
    _, logp = fm.ODESolver(model).compute_likelihood(x1, step_size=0.05, method="rk4")
    assert cli.shape == (50,) and torch.allclose(logp, cli, atol=1e-6)


def test_type_stubs_are_those_of_the_built_module():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, os.path.join(PYTHON_DIR, "stubgen.py")], check=True, capture_output=True,
                         text=True, env=env).stdout
    with open(os.path.join(PYTHON_DIR, "flowmatch", "__init__.pyi")) as f:
        committed = f.read()
    assert out == committed, "python/flowmatch/__init__.pyi is stale: regenerate it with python/stubgen.py"
    public = {n for n in dir(fm) if not n.startswith("_")}
    for name in public:
        assert f"class {name}" in committed or f"def {name}(" in committed, name


def test_pip_installs_the_package_into_a_fresh_environment(tmp_path):
    # `pip install ./python` offline (no build isolation is needed: setup.py has no pyproject), into a virtual
    # environment that sees Debian's torch; the build reuses this tree's CMake build (FLOWMATCH_BUILD_DIR).
    build_dir = os.path.dirname(os.path.dirname(os.path.abspath(fm.__file__)))  # .../build/python
    build_dir = os.path.dirname(build_dir)
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        pytest.skip("the module was not built by this tree's CMake")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["FLOWMATCH_BUILD_DIR"] = build_dir
    env["PIP_NO_INDEX"] = "1"
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-cache-dir", PYTHON_DIR], check=True, capture_output=True,
                   env=env, cwd=str(tmp_path))
    probe = ("import flowmatch as fm, torch, os; "
             "print(os.path.dirname(fm.__file__)); "
             "print(float(fm.CondOTScheduler()(torch.tensor([0.25])).sigma_t)); "
             "print(' '.join(sorted(f for f in os.listdir(os.path.dirname(fm.__file__)) if f != '__pycache__')))")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True, capture_output=True, text=True,
                         env=env, cwd=str(tmp_path)).stdout.split("\n")
    assert out[0].startswith(str(venv)), out
    assert float(out[1]) == 0.75
    files = out[2].split()
    assert files[:3] == ["__init__.py", "__init__.pyi", "_core" + files[2][len("_core"):]] and files[2].endswith(".so"), files
    assert files[3:] == ["py.typed"], files
