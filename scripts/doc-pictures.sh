#!/usr/bin/env bash
# Redraws the pictures in docs/img that a 2-core machine makes in about an hour, with the commands the docs
# give for them, and prints their figures (one JSON line each) to compare with the docs' tables:
#   paths-*.png (scripts/paths-figures.sh), reflow-*.png (bench/reflow.sh), couplings-*.png and
#   w2-vs-nfe-*.png (bench/couplings.sh + eval --solver-sweep), compare-8gaussians.png and compare-moons.png
#   (flowmatch compare), likelihood-checkerboard.png (the checkerboard likelihood run), in that order.
# The others take hours (Fashion-MNIST training, LJ13) and come from their own commands in docs/.
# usage: scripts/doc-pictures.sh [PART...]   PART: paths reflow couplings compare checkerboard (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWMATCH=./build/apps/flowmatch/flowmatch
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(paths reflow couplings compare checkerboard)
for part in "${parts[@]}"; do
  echo "== $part ($(date +%H:%M:%S))"
  case $part in
    paths) bash scripts/paths-figures.sh 6000 ;;
    reflow) bash bench/reflow.sh ;;
    couplings)
      bash bench/couplings.sh
      for c in independent exact-ot; do
        short=$([ "$c" = independent ] && echo icfm || echo otcfm)
        "$FLOWMATCH" eval --run "runs/couplings/8gaussians-moons-$c" --solver-sweep --threads 1 > /dev/null
        cp "runs/couplings/8gaussians-moons-$c/w2_vs_nfe.png" "docs/img/w2-vs-nfe-$short.png"
        /usr/bin/python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(json.dumps({k: round(v, 3) for k, v in m.items() if k.startswith('w2_') and isinstance(v, float)}))" \
          "runs/couplings/8gaussians-moons-$c/metrics.json"
      done ;;
    compare)
      for target in 8gaussians moons; do
        rm -rf "runs/cmp-$target"
        "$FLOWMATCH" compare --target "$target" --out "runs/cmp-$target" --threads 2 > "runs/cmp-$target.log"
        cp "runs/cmp-$target/compare.png" "docs/img/compare-$target.png"
        cat "runs/cmp-$target/compare.md"
      done ;;
    checkerboard)
      rm -rf runs/checker
      "$FLOWMATCH" train --out runs/checker --source gaussian --target checkerboard --coupling independent --sigma 0 \
        --width 128 --depth 4 --activation silu --time-encoding sinusoidal --batch 512 --lr 2e-3 \
        --lr-schedule cosine --ema 0.999 --steps 24000 --seed 42 --threads 1 --quiet > /dev/null
      "$FLOWMATCH" likelihood --run runs/checker --n 2000 --threads 1
      cp runs/checker/density.png docs/img/likelihood-checkerboard.png ;;
    *) echo "doc-pictures: unknown part '$part'" >&2; exit 2 ;;
  esac
done
