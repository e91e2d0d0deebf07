#!/usr/bin/python3
"""The exact-OT coupling of ../shared/bench/ref_cfm_2d.py (torch.cdist, scipy's
linear_sum_assignment, reindexing) on the minibatches bench_coupling wrote to DIR, timed the
same way (1 thread), with the cost in float64 so both solve the same matrices. Prints JSON lines
like bench_coupling's; equal "cost" figures mean both found an optimal assignment."""
import glob, json, os, sys, time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

torch.set_num_threads(1)
folder = sys.argv[1]
sizes = sorted({int(os.path.basename(p).split("-")[0]) for p in glob.glob(os.path.join(folder, "*-x0.npy"))})
for n in sizes:
    files = sorted(glob.glob(os.path.join(folder, "%d-*-x0.npy" % n)))
    total, cost = 0.0, 0.0
    for f in files:
        x0 = torch.from_numpy(np.load(f))
        x1 = torch.from_numpy(np.load(f.replace("-x0.npy", "-x1.npy")))
        start = time.perf_counter()
        c = torch.cdist(x0.double(), x1.double()).pow(2).numpy()
        rows, cols = linear_sum_assignment(c)
        paired = x1[torch.from_numpy(cols)]
        total += time.perf_counter() - start
        cost += float((x0.double() - paired.double()).pow(2).sum(1).mean()) / len(files)
    print(json.dumps({"impl": "scipy", "coupling": "exact-ot", "n": n, "reps": len(files),
                      "ms": round(1e3 * total / len(files), 3), "cost": round(cost, 9)}), flush=True)
