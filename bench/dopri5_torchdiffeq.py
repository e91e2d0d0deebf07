#!/usr/bin/python3
"""torchdiffeq's dopri5 on the field of `flowmatch bench --case dopri5-norms --weights FILE.pt`, for the
work-precision comparison at equal achieved error (issue "Performance II": adaptive steps).

The field is ../shared/bench/ref_likelihood_2d.py's network (a 3x64 SELU MLP with t as an extra input) with
the weights and points that script writes with --save-weights FILE.pt; the points are the states at t = 0,
solved to t = 1 in float64. The error of each solve is measured against torchdiffeq's own solve at 1e-12,
as flowmatch measures its own against its solve at 1e-12, with the same two figures: the largest per-point
error norm and the RMS error.

    /usr/bin/python3 ../shared/bench/ref_likelihood_2d.py --save-weights /tmp/field.pt > /dev/null
    python3 bench/dopri5_torchdiffeq.py --weights /tmp/field.pt            # needs torchdiffeq (not in Debian)
    flowmatch bench --case dopri5-norms --weights /tmp/field.pt

Prints one JSON object per tolerance: tolerance, nfe, max_error, rms_error.
"""
import argparse, json

import torch
import torchdiffeq


class MLP(torch.nn.Module):
    def __init__(self, dim=2, w=64):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, w), torch.nn.SELU(),
            torch.nn.Linear(w, w), torch.nn.SELU(),
            torch.nn.Linear(w, w), torch.nn.SELU(),
            torch.nn.Linear(w, dim))

    def forward(self, t, x):
        return self.net(torch.cat([x, t.reshape(1, 1).expand(x.shape[0], 1).to(x.dtype)], 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True)
    a = p.parse_args()
    saved = torch.load(a.weights, weights_only=False)  # a file we wrote; 2.6+ defaults to True
    x0 = saved["points"].to(torch.float64)
    field = MLP(x0.shape[1], saved["state_dict"]["net.0.weight"].shape[0]).to(torch.float64)
    field.load_state_dict({k: v.to(torch.float64) for k, v in saved["state_dict"].items()}, strict=True)
    calls = [0]

    def f(t, x):
        calls[0] += 1
        return field(t, x)

    span = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        exact = torchdiffeq.odeint(f, x0, span, method="dopri5", rtol=1e-12, atol=1e-12)[-1]
        for tol in (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7):
            calls[0] = 0
            x1 = torchdiffeq.odeint(f, x0, span, method="dopri5", rtol=tol, atol=tol)[-1]
            print(json.dumps({"implementation": "torchdiffeq " + getattr(torchdiffeq, "__version__", "?"), "tolerance": tol, "nfe": calls[0],
                              "max_error": (x1 - exact).norm(dim=1).max().item(),
                              "rms_error": (x1 - exact).square().mean().sqrt().item()}))


if __name__ == "__main__":
    main()
