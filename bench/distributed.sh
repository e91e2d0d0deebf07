#!/usr/bin/env bash
# Data-parallel throughput on this machine (docs/BENCHMARKS.md): the same per-process work (batch B,
# the demo's 3x64 SELU MLP, independent or exact-OT coupling) trained by one process with 1 and with
# 2 threads, and by `flowmatch launch --nproc 2` (1 thread each, global batch 2B). Reports steps/s,
# samples/s (steps/s x global batch) and rank 0's all-reduce time per step (which includes waiting for
# the slower rank) from metrics.jsonl. Prints one JSON line per case.
# Usage: bench/distributed.sh [steps] [batch] [width]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWMATCH=./build/apps/flowmatch/flowmatch
STEPS=${1:-3000}; BATCH=${2:-256}; WIDTH=${3:-64}
OUT=runs/bench-distributed
rm -rf "$OUT"; mkdir -p "$OUT"
for coupling in independent exact-ot; do
  flags="--steps $STEPS --batch $BATCH --width $WIDTH --coupling $coupling --log-every 100 --checkpoint-every 0 --quiet"
  for case in "1proc-1thread" "1proc-2threads" "2procs-1thread"; do
    run="$OUT/$coupling-$case"
    start=$(date +%s.%N)
    case $case in
      1proc-1thread) "$FLOWMATCH" train --out "$run" $flags --threads 1 > /dev/null ;;
      1proc-2threads) "$FLOWMATCH" train --out "$run" $flags --threads 2 > /dev/null ;;
      2procs-1thread) OMP_NUM_THREADS=1 "$FLOWMATCH" launch --nproc 2 --master-port 0 -- train --out "$run" $flags > /dev/null ;;
    esac
    end=$(date +%s.%N)
    /usr/bin/python3 - "$run" "$case" "$coupling" "$start" "$end" "$BATCH" "$WIDTH" <<'PY'
import json, sys
run, case, coupling, start, end, batch, width = sys.argv[1:]
lines = [json.loads(l) for l in open(run + "/metrics.jsonl")][1:]  # the first report includes start-up
world = 2 if case.startswith("2procs") else 1
steps_per_s = sum(l["it_per_s"] for l in lines) / len(lines)
row = {"coupling": coupling, "case": case, "width": int(width), "batch_per_process": int(batch), "global_batch": int(batch) * world,
       "steps_per_s": round(steps_per_s, 1), "samples_per_s": round(steps_per_s * int(batch) * world),
       "wall_s": round(float(end) - float(start), 1)}
if world > 1:
    row["allreduce_ms_per_step"] = round(sum(l["communication_ms"] for l in lines) / len(lines), 3)
print(json.dumps(row))
PY
  done
done
