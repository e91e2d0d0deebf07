#!/usr/bin/env bash
# Side by side with the plain-PyTorch reference (../shared/bench/ref_cfm_2d.py, Debian's python3-torch):
# the same setting (8gaussians -> moons, MLP 3x64 SELU, Adam 1e-3, batch 256, sigma 0.1, STEPS steps),
# run one after the other on this machine with 1 and 2 threads, for the independent and exact-OT
# couplings. flowmatch's figures: training it/s from `flowmatch train` (metrics.jsonl, first report
# left out), Euler-100 samples/s from `flowmatch bench --case sample-euler100` (batch 10 000), W2 at 1, 10
# and 100 Euler steps from `flowmatch eval` (n = 2000, as the reference). Prints a table and writes
# runs/compare-2d/compare.json.
# Usage: bench/compare_2d.sh [steps]   (after `make build`; about 4 minutes at 2000 steps on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWMATCH=./build/apps/flowmatch/flowmatch
REF=${REF:-../shared/bench/ref_cfm_2d.py}
STEPS=${1:-2000}
OUT=runs/compare-2d
rm -rf "$OUT"; mkdir -p "$OUT"
[ -f "$REF" ] || { echo "compare_2d: reference script $REF not found (set REF=path)" >&2; exit 1; }
for threads in 1 2; do
  for coupling in independent exact-ot; do
    tag="$coupling-t$threads"
    /usr/bin/python3 "$REF" --coupling "$coupling" --steps "$STEPS" --threads "$threads" > "$OUT/ref-$tag.json"
    "$FLOWMATCH" train --out "$OUT/fm-$tag" --source 8gaussians --target moons --coupling "$coupling" --steps "$STEPS" \
      --batch 256 --lr 1e-3 --sigma 0.1 --width 64 --depth 3 --activation selu --threads "$threads" --log-every 100 \
      --checkpoint-every 0 --quiet > /dev/null
    "$FLOWMATCH" eval --run "$OUT/fm-$tag" --threads "$threads" > /dev/null
    # One timed run after a warm-up, like the reference (its W2 evaluations run first).
    "$FLOWMATCH" bench --case sample-euler100 --train-steps 1 --repeats 1 --threads "$threads" > "$OUT/fm-$tag-sample.json"
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = []
print(f"{'threads':>7} {'coupling':>11} | {'ref it/s':>8} {'fm it/s':>8} {'ratio':>5} | {'ref smp/s':>9} {'fm smp/s':>9} {'ratio':>5} | "
      f"{'W2 1/10/100 ref':>17} | {'W2 1/10/100 fm':>17}")
for threads in (1, 2):
    for coupling in ("independent", "exact-ot"):
        tag = f"{coupling}-t{threads}"
        ref = json.load(open(f"{out}/ref-{tag}.json"))
        lines = [json.loads(l) for l in open(f"{out}/fm-{tag}/metrics.jsonl")][1:]
        fm_it = sum(l["it_per_s"] for l in lines) / len(lines)
        fm_sample = json.loads(open(f"{out}/fm-{tag}-sample.json").readline())["samples_per_s"]
        m = json.load(open(f"{out}/fm-{tag}/metrics.json"))
        row = {"threads": threads, "coupling": coupling, "ref_it_per_s": ref["train_it_per_s"], "fm_it_per_s": fm_it,
               "train_ratio": fm_it / ref["train_it_per_s"], "ref_samples_per_s": ref["sample_euler100_per_s"],
               "fm_samples_per_s": fm_sample, "sample_ratio": fm_sample / ref["sample_euler100_per_s"],
               **{f"ref_w2_euler{k}": ref[f"w2_euler{k}"] for k in (1, 10, 100)},
               **{f"fm_w2_euler{k}": m[f"w2_euler{k}"] for k in (1, 10, 100)}, "fm_w2_floor": m.get("w2_floor")}
        rows.append(row)
        w = lambda p: "/".join(f"{row[f'{p}_w2_euler{k}']:.2f}" for k in (1, 10, 100))
        print(f"{threads:>7} {coupling:>11} | {row['ref_it_per_s']:8.0f} {fm_it:8.0f} {row['train_ratio']:5.2f} | "
              f"{row['ref_samples_per_s']:9.0f} {fm_sample:9.0f} {row['sample_ratio']:5.2f} | {w('ref'):>17} | {w('fm'):>17}")
json.dump(rows, open(f"{out}/compare.json", "w"), indent=1)
print(f"(W2 floor of n = 2000 target samples: {rows[0]['fm_w2_floor']:.3f}; {out}/compare.json)")
PY
