#!/usr/bin/env bash
# Equivariant flow matching on DW4 and LJ13 (docs/MOLECULES.md, issue 23): the transport cost of the
# couplings over 1000 minibatches, then for each system and coupling `flowmatch train` and
# `flowmatch eval` (test NLL with exact divergence, ESS of dopri5 samples against exp(-U), path length).
# usage: bench/molecules.sh STEPS [DATA_DIR]    (env: BATCH_DW4=128 BATCH_LJ13=64 N_DW4=1000 N_LJ13=250,
#        SYSTEMS="dw4 lj13", THREADS=0 (LibTorch's default), COUPLING_BATCHES=1000,
#        FLOWMATCH=build/apps/flowmatch/flowmatch, BENCH=build/bench/bench_particle_couplings)
# Prints one JSON line per run (also in $OUT/results-STEPS.jsonl).
set -euo pipefail
steps=${1:-3000}
data_dir=${2:-../shared/data}
fm=${FLOWMATCH:-build/apps/flowmatch/flowmatch}
bench=${BENCH:-build/bench/bench_particle_couplings}
out=${OUT:-runs/bench-molecules}
mkdir -p "$out"
systems=${SYSTEMS:-dw4 lj13}
threads=${THREADS:-0}
if [ -x "$bench" ]; then
  for system in $systems; do "$bench" "$data_dir" "$system" 64 "${COUPLING_BATCHES:-1000}"; done | tee "$out/couplings.jsonl"
fi
run_one() {  # system coupling batch n
  local system=$1 coupling=$2 batch=$3 n=$4 run="$out/$1-$2-$steps"
  rm -rf "$run"
  local start=$(date +%s)
  "$fm" train --data "molecules:$system" --data-dir "$data_dir" --coupling "$coupling" --batch "$batch" --steps "$steps" \
    --out "$run" --threads "$threads" --quiet > /dev/null
  local train_s=$(( $(date +%s) - start ))
  start=$(date +%s)
  "$fm" eval --run "$run" --n "$n" --threads "$threads" > /dev/null
  local eval_s=$(( $(date +%s) - start ))
  python3 -c "import json; m=json.load(open('$run/metrics.json')); print(json.dumps({'system': '$system', 'coupling': '$coupling', 'steps': $steps, 'batch': $batch, 'train_s': $train_s, 'eval_s': $eval_s, **{k: m[k] for k in ('nll', 'nll_stderr', 'nll_without_normalizer', 'ess', 'path_length', 'n', 'energy_mean_samples', 'energy_mean_test')}}))"
}
for system in $systems; do
  if [ "$system" = dw4 ]; then
    for coupling in exact-ot equivariant-ot; do run_one dw4 "$coupling" "${BATCH_DW4:-128}" "${N_DW4:-1000}"; done
  else
    for coupling in independent exact-ot equivariant-ot; do run_one lj13 "$coupling" "${BATCH_LJ13:-64}" "${N_LJ13:-250}"; done
  fi
done | tee "$out/results-$steps.jsonl"
