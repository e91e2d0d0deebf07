#!/usr/bin/env bash
# The TorchCFM findings on the CPU protocol of ../shared/PROTOCOLS.md (3x64 SELU MLP, AdamW lr 1e-3,
# weight decay 1e-5, batch 512, sigma 0.1, 20 000 steps, seed 42, 1 thread per run):
#   N(0, I) -> 8gaussians: normalized path energy (NPE) of I-CFM vs OT-CFM;
#   8gaussians -> moons:   one-step Euler W2 of I-CFM vs OT-CFM.
# Trains each (task, coupling), evaluates it (flowmatch eval: W2 at 1/10/100 Euler steps,
# straightness, NPE) and copies the trajectory pictures to docs/img/couplings-<task>-<coupling>.png.
# Usage: bench/couplings.sh [steps] [couplings...]   (after `make build`; ~25 min on 2 cores with the
# defaults, the two couplings of a task running side by side)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWMATCH=./build/apps/flowmatch/flowmatch
STEPS=${1:-20000}
shift || true
COUPLINGS=("$@")
[ ${#COUPLINGS[@]} -eq 0 ] && COUPLINGS=(independent exact-ot)
OUT=runs/couplings
mkdir -p "$OUT" docs/img
declare -A SOURCE=([gaussian-8gaussians]=gaussian [8gaussians-moons]=8gaussians)
declare -A TARGET=([gaussian-8gaussians]=8gaussians [8gaussians-moons]=moons)
for task in gaussian-8gaussians 8gaussians-moons; do
  for c in "${COUPLINGS[@]}"; do
    run="$OUT/$task-$c"
    rm -rf "$run"
    ( "$FLOWMATCH" train --out "$run" --source "${SOURCE[$task]}" --target "${TARGET[$task]}" --coupling "$c" \
        --optimizer adamw --weight-decay 1e-5 --batch 512 --sigma 0.1 --steps "$STEPS" --seed 42 --threads 1 \
        --checkpoint-every 0 --quiet > "$run.log"
      "$FLOWMATCH" eval --run "$run" --threads 1 >> "$run.log"
      cp "$run/trajectories.png" "docs/img/couplings-$task-$c.png" ) &
  done
  wait
  for c in "${COUPLINGS[@]}"; do
    /usr/bin/python3 - "$OUT/$task-$c" "$task" "$c" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
rate = [json.loads(l)["it_per_s"] for l in open(sys.argv[1] + "/metrics.jsonl")]
print(json.dumps({"task": sys.argv[2], "coupling": sys.argv[3], "npe": round(m["npe"], 4),
                  "straightness": round(m["straightness"], 4), "w2_euler1": round(m["w2_euler1"], 4),
                  "w2_euler10": round(m["w2_euler10"], 4), "w2_euler100": round(m["w2_euler100"], 4),
                  "w2_floor": round(m["w2_floor"], 4), "train_it_per_s": round(sum(rate) / len(rate), 1)}))
PY
  done
done
