#!/usr/bin/env bash
# Character-level text on the KJV (docs/DISCRETE.md, issue 22): discrete flow matching (mask and
# uniform sources) against the autoregressive baseline, the same transformer (width 128, 4 blocks,
# 4 heads, rotary positions, windows of 64 characters), the same steps, batch and lr schedule, one
# thread each; then `flowmatch eval` (held-out bits per character on 2000 windows: -ELBO for the
# flows, exact for the baseline; samples at 8..128 CTMC steps judged by a Kneser-Ney 5-gram).
# The n-gram baseline itself: bench_kjv_ngram (cmake -DFLOWMATCH_BUILD_BENCH=ON).
# usage: bench/kjv_text.sh [STEPS] [VARIANTS...]   (default 3000 mask uniform ar)
set -euo pipefail
steps=${1:-3000}
shift $(( $# > 0 ? 1 : 0 )) || true
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(mask uniform ar)
fm=${FLOWMATCH:-build/apps/flowmatch/flowmatch}
out=${OUT:-runs/bench-kjv}
mkdir -p "$out"
common=(--data kjv --model transformer --width 128 --depth 4 --heads 4 --sequence-length 64 --batch 64
        --steps "$steps" --lr 1e-3 --lr-schedule cosine --warmup 100 --threads 1 --quiet)
for v in "${variants[@]}"; do
  case $v in
    mask) extra=(--discrete-source mask) ;;
    uniform) extra=(--discrete-source uniform) ;;
    ar) extra=(--objective autoregressive) ;;
    *) echo "unknown variant $v (mask, uniform or ar)" >&2; exit 2 ;;
  esac
  run="$out/$v-$steps"
  rm -rf "$run"
  start=$(date +%s)
  "$fm" train "${common[@]}" "${extra[@]}" --out "$run" > /dev/null
  echo "$v: trained $steps steps in $(( $(date +%s) - start )) s"
  "$fm" eval --run "$run" --n 2000 --threads 1
  head -4 "$run/eval-samples.txt"
done
