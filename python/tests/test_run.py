"""Runs from Python (flowmatch.train, flowmatch.Run) against the command line on the same run folder."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

import flowmatch as fm

TINY = {"source": "gaussian", "steps": 60, "batch": 64, "width": 16, "depth": 2, "log-every": 20, "checkpoint_every": 30, "coupling": "exact-ot"}


def test_registries_name_the_built_ins():
    assert {"euler", "midpoint", "heun", "rk4", "dopri5", "sde"} <= set(fm.solver_names())
    assert {"mlp", "unet", "torchscript"} <= set(fm.model_names())
    assert {"points", "images"} <= set(fm.domain_names())
    names = {s["name"] for s in fm.run_settings()}
    assert {"steps", "model", "model-option", "coupling", "objective"} <= names


def test_train_sample_and_evaluate_from_python(tmp_path):
    out = str(tmp_path / "run")
    run = fm.train(dict(TINY, seed=5), out)
    assert run.domain == "points"
    assert run.config["model"]["options"]["width"] == 16
    assert run.config["training"]["steps"] == 60
    assert os.path.exists(os.path.join(out, "checkpoints", "step-60.ckpt"))
    x, info = run.sample(n=300, steps=10, seed=3)
    assert x.shape == (300, 2) and x.dtype == torch.float32
    assert info["nfe"] == 10 and info["solver"] == "euler"
    # The same seed gives the same samples; another seed other samples.
    again, _ = fm.Run.open(out).sample(n=300, steps=10, seed=3)
    assert torch.equal(x, again)
    other, _ = run.sample(n=300, steps=10, seed=4)
    assert not torch.equal(x, other)
    # Every registered ODE solver through the same call; NFE = steps x evaluations per step.
    _, mid = run.sample(n=50, solver="midpoint", steps=5)
    assert mid["nfe"] == 10
    metrics = run.evaluate(n=200)
    assert set(["w2_euler1", "w2_euler100", "w2_floor", "straightness", "mmd_rbf_euler100"]) <= set(metrics)
    assert json.load(open(os.path.join(out, "metrics.json")))["w2_euler100"] == metrics["w2_euler100"]
    logp, summary = run.log_likelihood(torch.randn(20, 2, dtype=torch.float64), solver="rk4", steps=10)
    assert logp.shape == (20,) and torch.isfinite(logp).all()
    assert abs(summary["nll"] + float(logp.mean())) < 1e-12


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="beta-min applies to --path vp"):
        fm.train({"beta-min": 0.2, "steps": 5}, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="unknown setting 'stepz'"):
        fm.train({"stepz": 5}, str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a" / "config.json")


@pytest.mark.skipif("FLOWMATCH_CLI" not in os.environ, reason="the flowmatch command line was not built")
def test_python_trained_run_samples_like_the_command_line(tmp_path):
    cli = os.environ["FLOWMATCH_CLI"]
    torch.set_num_threads(1)  # as the command line below: the same arithmetic, the same weights
    out = str(tmp_path / "py")
    run = fm.train(dict(TINY, seed=2), out)
    x, info = run.sample(n=400, steps=25, seed=11)
    npy = str(tmp_path / "cli.npy")
    subprocess.run([cli, "sample", "--run", out, "--n", "400", "--steps", "25", "--seed", "11", "--out", npy, "--threads", "1"],
                   check=True, capture_output=True)
    assert np.array_equal(np.load(npy), x.numpy())
    assert json.load(open(str(tmp_path / "cli.json")))["nfe"] == info["nfe"]
    # And a run trained by the command line with the same settings has the same weights: same samples.
    cli_run = str(tmp_path / "cli")
    subprocess.run([cli, "train", "--out", cli_run, "--steps", "60", "--batch", "64", "--width", "16", "--depth", "2",
                    "--log-every", "20", "--checkpoint-every", "30", "--coupling", "exact-ot", "--source", "gaussian", "--seed", "2", "--quiet",
                    "--threads", "1"], check=True, capture_output=True)
    y, _ = fm.Run.open(cli_run).sample(n=400, steps=25, seed=11)
    assert torch.equal(x, y)


def test_manifold_runs_from_python_stay_on_the_torus_and_beat_the_uniform_density(tmp_path):
    out = str(tmp_path / "torus")
    run = fm.train({"data": "torus-checkerboard", "steps": 500, "coupling": "independent", "seed": 1}, out)
    assert run.domain == "manifold"
    assert run.config["path"]["type"] == "geodesic"
    x, info = run.sample(n=300, steps=50, seed=2)
    assert x.shape == (300, 2)
    assert float(x.abs().max()) <= np.pi + 1e-6  # angles stay wrapped in [-pi, pi]
    log_p, summary = run.log_likelihood(x)
    # The uniform torus has NLL 2 log(2 pi) = 3.676; the trained flow puts its samples well above it.
    assert summary["nll"] < 2 * np.log(2 * np.pi) - 0.3
    assert {"manifold-mlp"} <= set(fm.model_names())
    assert {"manifold"} <= set(fm.domain_names())


DATA_DIR = os.environ.get("FLOWMATCH_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))


@pytest.mark.skipif("FLOWMATCH_CLI" not in os.environ or not os.path.isdir(os.path.join(DATA_DIR, "earth")),
                    reason="needs the command line and the Earth data")
def test_likelihood_of_the_runs_own_splits_is_the_command_lines(tmp_path):
    torch.set_num_threads(1)  # as the command line below: the same arithmetic
    out = str(tmp_path / "volcano")
    run = fm.train({"data": "earth:volcano", "data-dir": DATA_DIR, "steps": 40, "width": 16, "depth": 2, "seed": 3}, out)
    log_p, summary = run.log_likelihood(split="validation", atol=1e-6, rtol=1e-6)
    assert summary["data"] == "earth:volcano validation split (%d points)" % log_p.shape[0]
    assert summary["n"] == log_p.shape[0] and 60 < log_p.shape[0] < 100  # 10 % of 827 rows
    npy = str(tmp_path / "val.npy")
    subprocess.run([os.environ["FLOWMATCH_CLI"], "likelihood", "--run", out, "--split", "validation", "--atol", "1e-6", "--rtol", "1e-6",
                    "--threads", "1", "--out", npy], check=True, capture_output=True)
    assert np.allclose(np.load(npy), log_p.numpy(), rtol=0, atol=1e-9)
    test_log_p, test_summary = run.log_likelihood(n=30)
    assert test_summary["data"] == "earth:volcano test split (30 points)" and test_log_p.shape == (30,)
    assert not np.allclose(test_log_p[:30].numpy(), log_p[:30].numpy())  # other rows
    with pytest.raises(ValueError, match="--split train: expected test or validation"):
        run.log_likelihood(split="train")


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA_DIR, "earth")), reason="needs the Earth data")
def test_validation_keeps_the_best_checkpoint_and_scores_it_again(tmp_path):
    torch.set_num_threads(1)
    out = str(tmp_path / "volcano")
    run = fm.train({"data": "earth:volcano", "data-dir": DATA_DIR, "steps": 60, "width": 16, "depth": 2, "seed": 3,
                    "checkpoint-every": 20, "validate": "nll", "validate_tol": 1e-3}, out)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        scores = [json.loads(line) for line in f]
    scores = [(s["step"], s["validation_nll"]) for s in scores if "validation_nll" in s]
    assert [step for step, _ in scores] == [20, 40, 60]
    step, nll = min(scores, key=lambda s: s[1])
    assert run.best_checkpoint().endswith("checkpoints/best.ckpt")
    with open(os.path.join(out, "checkpoints", "best.json")) as f:
        assert json.load(f)["step"] == step
    _, summary = run.log_likelihood(split="validation", atol=1e-3, rtol=1e-3, error_norm="batch", checkpoint="best")
    assert summary["nll"] == nll
