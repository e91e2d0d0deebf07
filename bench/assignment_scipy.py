#!/usr/bin/python3
"""scipy.optimize.linear_sum_assignment on the same minibatches as bench/assignment_timing.cpp
(8gaussians -> moons from ../shared/bench/ref_cfm_2d.py, squared Euclidean cost, float64)."""
import importlib.util, json, os, sys, time

import torch
from scipy.optimize import linear_sum_assignment

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("ref", os.path.join(here, "..", "..", "shared", "bench", "ref_cfm_2d.py"))
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
max_n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
for n in (256, 1024, 2000):
    if n > max_n:
        break
    reps = 200 if n == 256 else 5
    total = 0.0
    for _ in range(reps):
        cost = torch.cdist(ref.eight_gaussians(n, g).double(), ref.moons(n, g).double()).pow(2).numpy()
        start = time.perf_counter()
        linear_sum_assignment(cost)
        total += time.perf_counter() - start
    print(json.dumps({"impl": "scipy", "n": n, "ms": round(1e3 * total / reps, 3)}))
