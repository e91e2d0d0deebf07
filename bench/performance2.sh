#!/usr/bin/env bash
# Issue 26's ratios from one run on one machine: the plain-PyTorch references of ../shared/bench against
# flowmatch bench on the same work, alternating, at 1 thread.
#   bash bench/performance2.sh [REPEATS=3]      (after make; prints one JSON line per measurement)
set -euo pipefail
cd "$(dirname "$0")/.."
FM=./build/apps/flowmatch/flowmatch
REF=../shared/bench
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
/usr/bin/python3 "$REF/ref_likelihood_2d.py" --threads 1 --save-weights "$TMP/w.pt" > /dev/null
for r in $(seq "${1:-3}"); do
  /usr/bin/python3 "$REF/ref_likelihood_2d.py" --threads 1
  "$FM" bench --case likelihood-fixed --weights "$TMP/w.pt" --threads 1
  /usr/bin/python3 "$REF/ref_policy_latency.py" --threads 1
  "$FM" bench --case policy-latency --threads 1
done
"$FM" bench --case dopri5-norms --threads 1
