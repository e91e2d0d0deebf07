#!/usr/bin/env bash
# make test-browser: opens run pages (RUN/index.html) in headless Chromium (Debian's `chromium`) and checks
# that every picture on them loads: the page's own script counts the pictures the browser could decode
# (body data-pictures="shown/all"). Trains a 2-D run and a discrete run first, with small budgets, and
# writes a screenshot of each page beside it. Opt-in (not part of make test): Chromium is a large package.
# usage: scripts/test-browser.sh FLOWMATCH_CLI [OUT_DIR]
set -euo pipefail
cli=$1
out=${2:-build/test-browser}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then echo "test-browser: chromium is not installed (scripts/install-deps.sh --browser)" >&2; exit 1; fi
rm -rf "$out"
mkdir -p "$out"
"$cli" train --out "$out/points" --steps 300 --threads 1 --quiet > /dev/null
"$cli" eval --run "$out/points" --n 500 --threads 1 > /dev/null
"$cli" sample --run "$out/points" --n 1000 --trajectories 50 --out "$out/points/samples.npy" --threads 1 > /dev/null
"$cli" train --data checkerboard-discrete --out "$out/tokens" --steps 200 --threads 1 --quiet > /dev/null
"$cli" eval --run "$out/tokens" --n 200 --threads 1 > /dev/null
pages=0 failed=0
for run in "$out"/points "$out"/tokens; do
  page=$(realpath "$run/index.html")
  expected=$(find "$run" -maxdepth 1 -name '*.png' | wc -l)
  dom=$(timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=10000 \
        --dump-dom "file://$page" 2> "$run/chromium.log" || true)
  shown=$(printf '%s' "$dom" | grep -o 'data-pictures="[0-9]*/[0-9]*"' | head -1 | grep -o '[0-9]*/[0-9]*' || true)
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
    --window-size=1000,2400 --screenshot="$(realpath "$run")/page.png" "file://$page" >> "$run/chromium.log" 2>&1 || true
  pages=$((pages + 1))
  if [ "$expected" -ge 1 ] && [ "$shown" = "$expected/$expected" ]; then
    echo "ok      $page: $shown pictures shown (screenshot $run/page.png)"
  else
    echo "FAILED  $page: pictures shown '${shown:-no count: the page script did not run}', expected $expected/$expected"
    failed=$((failed + 1))
  fi
done
echo "$((pages - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
