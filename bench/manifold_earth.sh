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
# MEMBERS=K: each seed's figure is an ensemble of K runs (seeds SEED, SEED+100, ...; all with --split-seed SEED,
# so they share the split): the mixture of their densities, by bench/ensemble_nll.py; train_s and eval_s are
# the members' sums (the budget a seed spends), and "member_nll" lists the members' own test NLLs.
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
members=${MEMBERS:-1}
for set in "${sets[@]}"; do
  for seed in "${seeds[@]}"; do
    train_s=0; eval_s=0; test_logps=(); val_logps=()
    for ((k = 0; k < members; ++k)); do
      run="$out/$set-$steps-$seed"
      member_flags=()
      if [ "$members" -gt 1 ]; then run="$run-m$k"; member_flags=(--split-seed "$seed"); fi
      rm -rf "$run"
      start=$(date +%s)
      "$fm" train --data "earth:$set" --data-dir "$data_dir" --out "$run" --steps "$steps" --seed $((seed + 100 * k)) --quiet --threads 1 \
        ${member_flags[@]+"${member_flags[@]}"} ${train_flags[@]+"${train_flags[@]}"} > /dev/null
      train_s=$(( train_s + $(date +%s) - start ))
      start=$(date +%s)
      "$fm" likelihood --run "$run" --atol "$tol" --rtol "$tol" --threads 1 --out "$run/logp-test.npy" \
        ${likelihood_flags[@]+"${likelihood_flags[@]}"} > /dev/null
      cp "$run/logp-test.json" "$run/likelihood.json"
      eval_s=$(( eval_s + $(date +%s) - start ))
      test_logps+=("$run/logp-test.npy")
      if [ "${VALIDATION:-0}" = 1 ]; then
        "$fm" likelihood --run "$run" --split validation --atol "$tol" --rtol "$tol" --threads 1 --out "$run/logp-validation.npy" \
          ${likelihood_flags[@]+"${likelihood_flags[@]}"} > /dev/null
        val_logps+=("$run/logp-validation.npy")
      fi
    done
    /usr/bin/python3 - "$set" "$seed" "$steps" "$train_s" "$eval_s" "$tol" "$run/likelihood.json" "${#test_logps[@]}" "${test_logps[@]}" ${val_logps[@]+"${val_logps[@]}"} <<'PY'
import json, subprocess, sys
s, seed, steps, train_s, eval_s, tol, last, k = sys.argv[1:9]
k = int(k)
test, val = sys.argv[9:9 + k], sys.argv[9 + k:]
ens = lambda files: json.loads(subprocess.check_output(["/usr/bin/python3", "bench/ensemble_nll.py", *files]))
m, t = json.load(open(last)), ens(test)
r = {"set": s, "seed": int(seed), "steps": int(steps), "train_s": int(train_s), "eval_s": int(eval_s), "nll": t["nll"],
     "nll_stderr": t["nll_stderr"], "nfe": m["nfe"], "n": t["n"], "tol": float(tol), "error_norm": m.get("error_norm", "sample")}
if k > 1:
    r.update({"members": k, "member_nll": t["member_nll"]})
if val:
    v = ens(val)
    r["val_nll"] = v["nll"]
    if k > 1:
        r["member_val_nll"] = v["member_nll"]
print(json.dumps(r))
PY
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
