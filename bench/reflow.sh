#!/usr/bin/env bash
# Rectified flow on 8gaussians -> moons (docs/BENCHMARKS.md): the 1-rectified flow is I-CFM with the demo's
# settings (configs/demo.toml: 3x64 SELU, batch 256, sigma 0.1, 20 000 steps, EMA, cosine lr); two reflow
# rounds on 50 000 of the previous model's pairs (RK4, 25 steps), 10 000 training steps each from the parent's
# weights; one-step distillation of the 2-rectified flow on its own 50 000 pairs. Each is evaluated by
# `flowmatch eval` (W2 at 1/2/4/10/100 Euler steps, n = 2000; straightness along Euler 100) and its trajectory
# picture is copied to docs/img/reflow-<name>.png. Prints one JSON line per model.
# Usage: bench/reflow.sh [train-steps-per-round]   (after `make build`; about a minute on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWMATCH=./build/apps/flowmatch/flowmatch
STEPS=${1:-10000}
OUT=runs/reflow
rm -rf "$OUT"
mkdir -p "$OUT" docs/img
"$FLOWMATCH" train --out "$OUT/rectified-1" --config configs/demo.toml --coupling independent --threads 2 --quiet
"$FLOWMATCH" reflow --run "$OUT/rectified-1" --out "$OUT/rf" --rounds 2 --pairs 50000 --solver rk4 --steps 25 \
  --train-steps "$STEPS" --threads 2 --quiet
"$FLOWMATCH" distill --run "$OUT/rf/rectified-2" --out "$OUT/distilled" --pairs 50000 --solver rk4 --steps 25 \
  --train-steps "$STEPS" --threads 2 --quiet
for run in "$OUT/rectified-1" "$OUT/rf/rectified-2" "$OUT/rf/rectified-3" "$OUT/distilled"; do
  "$FLOWMATCH" eval --run "$run" --threads 2 > /dev/null
  name=$(basename "$run")
  cp "$run/trajectories.png" "docs/img/reflow-$name.png"
  /usr/bin/python3 - "$run" "$name" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
print(json.dumps({"model": sys.argv[2], "straightness": round(m["straightness"], 4),
                  **{k: round(m[k], 4) for k in ("w2_euler1", "w2_euler2", "w2_euler4", "w2_euler10", "w2_euler100", "w2_floor")}}))
PY
done
