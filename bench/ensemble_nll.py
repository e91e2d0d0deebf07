#!/usr/bin/python3
"""The NLL of an ensemble: the mixture density (1/K) sum_k p_k(x) of K runs, from each run's per-point log p.

Each run's `flowmatch likelihood --run RUN --out logp.npy` writes log p of every point of its split, in the
split's order. The runs must share the split (`flowmatch train --split-seed S`, differing in --seed), and so
the same points; the script refuses files of different lengths. Prints one JSON object: members, n, nll and
its standard error over the points (nats per point), and each member's own nll.

    python3 bench/ensemble_nll.py run-a/logp-test.npy run-b/logp-test.npy
"""
import json, sys

import numpy as np


def main():
    paths = sys.argv[1:]
    if not paths or paths[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if paths else 2)
    logps = [np.load(p).astype(np.float64).reshape(-1) for p in paths]
    n = len(logps[0])
    for p, l in zip(paths, logps):
        if len(l) != n:
            sys.exit(f"ensemble_nll: {p} has {len(l)} points, {paths[0]} has {n}: the runs do not share a split")
        if not np.all(np.isfinite(l)):
            sys.exit(f"ensemble_nll: {p} holds a non-finite log p")
    stacked = np.stack(logps)                      # (K, n)
    top = stacked.max(axis=0)
    mixture = top + np.log(np.exp(stacked - top).mean(axis=0))
    nll = -mixture
    print(json.dumps({"members": len(paths), "n": n, "nll": float(nll.mean()),
                      "nll_stderr": float(nll.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
                      "member_nll": [float(-l.mean()) for l in logps]}))


if __name__ == "__main__":
    main()
