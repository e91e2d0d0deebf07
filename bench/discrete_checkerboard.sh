#!/usr/bin/env bash
# Discrete flow matching on flow_matching's discrete checkerboard (docs/DISCRETE.md, issue 22), the
# notebook's protocol: kappa = t^2, MLP 128 wide (SiLU), Adam 1e-3, batch 4096, t in [0, 0.999),
# then `flowmatch eval` (cells on the board at 8..128 CTMC steps, the generalized KL beside the true
# posterior's, -ELBO against the entropy ln 8192 = 9.011).
# usage: bench/discrete_checkerboard.sh [STEPS] [SOURCES...]   (default 30000 uniform mask)
set -euo pipefail
steps=${1:-30000}
shift $(( $# > 0 ? 1 : 0 )) || true
sources=("$@")
[ ${#sources[@]} -eq 0 ] && sources=(uniform mask)
fm=${FLOWMATCH:-build/apps/flowmatch/flowmatch}
out=${OUT:-runs/bench-discrete}
mkdir -p "$out"
for source in "${sources[@]}"; do
  run="$out/$source-$steps"
  rm -rf "$run"
  start=$(date +%s)
  "$fm" train --data checkerboard-discrete --discrete-source "$source" --steps "$steps" --batch 4096 --lr 1e-3 \
    --seed 42 --threads 1 --log-every 1000 --out "$run" --quiet > /dev/null
  train_s=$(( $(date +%s) - start ))
  "$fm" eval --run "$run" --n 20000 --threads 1 > /dev/null
  /usr/bin/python3 -c "
import json
m = json.load(open('$run/metrics.json'))
rows = [json.loads(l) for l in open('$run/metrics.jsonl') if l.startswith('{')]
print(json.dumps({'source': '$source', 'steps': $steps, 'train_s': $train_s, 'final_loss_mean_last_1000': rows[-1]['loss'],
                  'generalized_kl': m['generalized_kl'], 'generalized_kl_true_posterior': m['generalized_kl_true_posterior'],
                  'on_checkerboard_by_nfe': m['on_checkerboard_by_nfe'], 'nll': m['nll'], 'nll_stderr': m['nll_stderr'],
                  'entropy': m['entropy']}))"
done | tee "$out/results-$steps.jsonl"
