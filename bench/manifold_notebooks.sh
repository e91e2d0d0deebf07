#!/usr/bin/env bash
# flow_matching's Riemannian notebooks (examples/2d_riemannian_flow_matching_{sphere,flat_torus}.ipynb)
# with their protocol: the checkerboard wrapped onto the sphere and the torus, the wrapped-normal source,
# independent coupling, CondOT geodesic path, MLP 512 wide with 4 hidden SiLU (Swish) layers, Adam
# lr 1e-3, batch 4096, 5000 steps. Their printed loss is the mean over the batch *and* the coordinates
# (3 on the sphere, 2 on the torus); ours sums the coordinates, so we print ours divided by that number.
# usage: bench/manifold_notebooks.sh [STEPS] [THREADS]   (docs/MANIFOLDS.md has the table)
set -euo pipefail
steps=${1:-5000}
threads=${2:-1}
fm=${FLOWMATCH:-build/apps/flowmatch/flowmatch}
out=${OUT:-runs/bench-notebooks}
mkdir -p "$out"
for space in sphere torus; do
  run="$out/$space"
  rm -rf "$run"
  start=$(date +%s)
  "$fm" train --data "$space-checkerboard" --source wrapped-normal --coupling independent --width 512 --depth 4 \
    --activation silu --batch 4096 --lr 1e-3 --steps "$steps" --seed 42 --log-every 1000 --threads "$threads" \
    --out "$run" --quiet > /dev/null
  echo "$space: trained in $(( $(date +%s) - start )) s"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
for space, coords in (("sphere", 3), ("torus", 2)):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{space}/metrics.jsonl") if l.startswith("{")]
    print(space + ": " + "  ".join(f"step {r['step']}: {r['loss'] / coords:.3f}" for r in rows if "loss" in r))
PY
