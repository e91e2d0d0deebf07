#!/usr/bin/env bash
# Trains the same data (N(0, I) -> moons, same network, seeds and budget) on each path, writes
# trajectory pictures to docs/img/paths-<path>.png and prints W2 per path (docs/PATHS.md).
# Usage: scripts/paths-figures.sh [steps] [paths...]   (run `make build` first)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWMATCH=./build/apps/flowmatch/flowmatch
STEPS=${1:-6000}
shift || true
PATHS=("$@")
[ ${#PATHS[@]} -eq 0 ] && PATHS=(condot cosine vp linear-vp polynomial ve)
OUT=runs/paths
mkdir -p docs/img
for p in "${PATHS[@]}"; do
  rm -rf "$OUT/$p"
  "$FLOWMATCH" train --out "$OUT/$p" --path "$p" --sigma 0 --source gaussian --target moons --steps "$STEPS" \
    --coupling independent --lr 2e-3 --lr-schedule cosine --ema 0.999 --checkpoint-every 0 --threads 2 --quiet > /dev/null
  "$FLOWMATCH" eval --run "$OUT/$p" --threads 2 > /dev/null
  "$FLOWMATCH" sample --run "$OUT/$p" --n 2000 --trajectories 150 --out "$OUT/$p/samples.npy" --threads 2 > /dev/null
  cp "$OUT/$p/samples-trajectories.png" "docs/img/paths-$p.png"
  printf '%-10s %s\n' "$p" "$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("W2 euler1 %.3f  euler10 %.3f  euler100 %.3f  (floor %.3f)" % (m["w2_euler1"], m["w2_euler10"], m["w2_euler100"], m["w2_floor"]))' "$OUT/$p/metrics.json")"
done
