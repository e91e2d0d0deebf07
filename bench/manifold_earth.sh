#!/usr/bin/env bash
# Test NLL on the Earth-science data sets (docs/MANIFOLDS.md, issue 21): seeds 0-4, seeded 80/10/10
# splits, `flowmatch train` then `flowmatch likelihood` (the test split, dopri5 at TOL, default 1e-4,
# exact divergence; 1e-5 moves the NLL by about 1e-4 nats at 5 times the NFE: docs/BENCHMARKS.md).
# usage: bench/manifold_earth.sh STEPS [DATA_DIR] [SETS...]   (prints one JSON line per run, then a table)
# TRAIN_FLAGS: more `flowmatch train` flags (e.g. "--width 256 --fourier-features 128 --fourier-scale 2");
# SEEDS: the seeds (default "0 1 2 3 4"); OUT: the folder of the runs; RESULTS: the JSON lines file
# (default OUT/results-STEPS.jsonl); FLOWMATCH: the binary; VALIDATION=1: also the NLL of the validation
# split ("val_nll", by `flowmatch likelihood --split validation`), for choosing settings without the test split.
# LIKELIHOOD_FLAGS: more `flowmatch likelihood` flags (e.g. "--error-norm batch": Dopri5's RMS over the batch).
set -euo pipefail
steps=${1:-20000}
data_dir=${2:-../shared/data}
shift $(( $# > 2 ? 2 : $# )) || true
sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(quakes flood fire volcano)
fm=${FLOWMATCH:-build/apps/flowmatch/flowmatch}
out=${OUT:-runs/bench-earth}
read -r -a train_flags <<< "${TRAIN_FLAGS:-}"
read -r -a seeds <<< "${SEEDS:-0 1 2 3 4}"
read -r -a likelihood_flags <<< "${LIKELIHOOD_FLAGS:-}"
tol=${TOL:-1e-4}
mkdir -p "$out"
results=${RESULTS:-$out/results-$steps.jsonl}
for set in "${sets[@]}"; do
  for seed in "${seeds[@]}"; do
    run="$out/$set-$steps-$seed"
    rm -rf "$run"
    start=$(date +%s)
    "$fm" train --data "earth:$set" --data-dir "$data_dir" --out "$run" --steps "$steps" --seed "$seed" --quiet --threads 1 \
      ${train_flags[@]+"${train_flags[@]}"} > /dev/null
    train_s=$(( $(date +%s) - start ))
    start=$(date +%s)
    "$fm" likelihood --run "$run" --atol "$tol" --rtol "$tol" --threads 1 \
      ${likelihood_flags[@]+"${likelihood_flags[@]}"} > /dev/null
    eval_s=$(( $(date +%s) - start ))
    if [ "${VALIDATION:-0}" = 1 ]; then
      "$fm" likelihood --run "$run" --split validation --atol "$tol" --rtol "$tol" --threads 1 --out "$run/likelihood-validation.json" \
        ${likelihood_flags[@]+"${likelihood_flags[@]}"} > /dev/null
    fi
    /usr/bin/python3 -c "import json,os; m=json.load(open('$run/likelihood.json')); v='$run/likelihood-validation.json'; r={'set': '$set', 'seed': $seed, 'steps': $steps, 'train_s': $train_s, 'eval_s': $eval_s, 'nll': m['nll'], 'nll_stderr': m['nll_stderr'], 'nfe': m['nfe'], 'n': m['n'], 'tol': $tol, 'error_norm': m.get('error_norm', 'sample')}; r.update({'val_nll': json.load(open(v))['nll']} if os.path.exists(v) else {}); print(json.dumps(r))"
  done
done | tee "$results"
/usr/bin/python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
for s in dict.fromkeys(r['set'] for r in rows):
    v = [r['nll'] for r in rows if r['set'] == s]
    t = [r['train_s'] for r in rows if r['set'] == s]
    print(f"{s}: test NLL {st.mean(v):.3f} ± {st.stdev(v) if len(v) > 1 else 0:.3f} over {len(v)} seeds; training {st.mean(t):.0f} s per seed")
PY
