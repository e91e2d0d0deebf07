#!/usr/bin/env bash
# Test NLL on the Earth-science data sets (docs/MANIFOLDS.md, issue 21): seeds 0-4, seeded 80/10/10
# splits, `flowmatch train` then `flowmatch eval` (dopri5, exact divergence, the test split).
# usage: bench/manifold_earth.sh STEPS [DATA_DIR] [SETS...]   (prints one JSON line per run, then a table)
set -euo pipefail
steps=${1:-20000}
data_dir=${2:-../shared/data}
shift $(( $# > 2 ? 2 : $# )) || true
sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(quakes flood fire volcano)
fm=${FLOWMATCH:-build/apps/flowmatch/flowmatch}
out=${OUT:-runs/bench-earth}
mkdir -p "$out"
for set in "${sets[@]}"; do
  for seed in 0 1 2 3 4; do
    run="$out/$set-$steps-$seed"
    rm -rf "$run"
    start=$(date +%s)
    "$fm" train --data "earth:$set" --data-dir "$data_dir" --out "$run" --steps "$steps" --seed "$seed" --quiet --threads 1 > /dev/null
    train_s=$(( $(date +%s) - start ))
    "$fm" eval --run "$run" --threads 1 > /dev/null
    /usr/bin/python3 -c "import json,sys; m=json.load(open('$run/metrics.json')); print(json.dumps({'set': '$set', 'seed': $seed, 'steps': $steps, 'train_s': $train_s, 'nll': m['nll'], 'nll_stderr': m['nll_stderr'], 'n': m['n']}))"
  done
done | tee "$out/results-$steps.jsonl"
/usr/bin/python3 - "$out/results-$steps.jsonl" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
for s in dict.fromkeys(r['set'] for r in rows):
    v = [r['nll'] for r in rows if r['set'] == s]
    t = [r['train_s'] for r in rows if r['set'] == s]
    print(f"{s}: test NLL {st.mean(v):.3f} ± {st.stdev(v) if len(v) > 1 else 0:.3f} over {len(v)} seeds; training {st.mean(t):.0f} s per seed")
PY
