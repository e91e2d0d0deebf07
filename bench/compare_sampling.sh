#!/usr/bin/env bash
# Euler-100 sampling speed side by side, read through this machine's run-to-run noise: ROUNDS rounds,
# each running the reference script (../shared/bench/ref_cfm_2d.py, its own setting: a model trained
# 2000 steps, then one timed Euler-100 run at batch 10 000) and then flowmatch on the same work
# (`flowmatch bench --case sample-euler100`: a model trained 2050 steps, one timed run after a warm-up).
# Both sides train first because ATen's SELU skips its exponential when 8 neighbouring inputs are all
# positive, so the reference samples faster from a trained model than from a fresh one (10k against 23k
# samples/s here); flowmatch's kernel has no such branch. Prints every round and the ratio of the medians;
# writes runs/compare-sampling/compare.json.
# Usage: bench/compare_sampling.sh [rounds]   (after `make build`; THREADS=1 by default; ~12 s per round)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWMATCH=./build/apps/flowmatch/flowmatch
REF=${REF:-../shared/bench/ref_cfm_2d.py}
ROUNDS=${1:-5}
THREADS=${THREADS:-1}
OUT=runs/compare-sampling
rm -rf "$OUT"; mkdir -p "$OUT"
[ -f "$REF" ] || { echo "compare_sampling: reference script $REF not found (set REF=path)" >&2; exit 1; }
for round in $(seq 1 "$ROUNDS"); do
  /usr/bin/python3 "$REF" --coupling independent --steps 2000 --threads "$THREADS" > "$OUT/ref-$round.json"
  "$FLOWMATCH" bench --case train-independent --case sample-euler100 --train-steps 2000 --repeats 1 \
    --threads "$THREADS" > "$OUT/fm-$round.json"
done
/usr/bin/python3 - "$OUT" "$ROUNDS" "$THREADS" <<'PY'
import json, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ref = [json.load(open(f"{out}/ref-{r}.json"))["sample_euler100_per_s"] for r in range(1, rounds + 1)]
fm = []
for r in range(1, rounds + 1):
    cases = [json.loads(line) for line in open(f"{out}/fm-{r}.json")]
    fm.append(next(c for c in cases if c["case"] == "sample-euler100")["samples_per_s"])
for r, (a, b) in enumerate(zip(ref, fm), 1):
    print(f"round {r}: reference {a:8.0f}  flowmatch {b:8.0f}  ratio {b / a:.2f}")
ratio = statistics.median(fm) / statistics.median(ref)
print(f"median over {rounds} rounds ({threads} thread(s)): reference {statistics.median(ref):.0f}, "
      f"flowmatch {statistics.median(fm):.0f} samples/s, ratio {ratio:.2f}")
json.dump({"threads": threads, "reference": ref, "flowmatch": fm, "median_ratio": ratio},
          open(f"{out}/compare.json", "w"), indent=1)
PY
