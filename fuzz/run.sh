#!/usr/bin/env bash
# Runs each libFuzzer program for SECONDS (default 60) on its corpus: build/corpus/T, seeded from
# fuzz/seeds/T and fuzz/regressions/T. Inputs that crash, leak, time out or exhaust memory are
# written to fuzz/regressions/T/ (replayed by `make test`). Prints a table and writes
# BUILD/fuzz-summary.json; exits 1 when any program found something.
set -uo pipefail
build="$1"; seconds="${2:-60}"
root="$(cd "$(dirname "$0")" && pwd)"
summary="$build/fuzz-summary.json"
status=0
rows=()
printf '%-20s %12s %10s %8s %8s\n' target executions exec/s corpus findings
for t in npy idx checkpoint checkpoint_payload config pt; do
  corpus="$build/corpus/$t"; mkdir -p "$corpus" "$root/regressions/$t"
  log="$build/fuzz-$t.log"
  before=$(ls "$root/regressions/$t" | wc -l)
  dict=(); case "$t" in checkpoint|checkpoint_payload) dict=(-dict="$root/json.dict") ;; esac
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/fuzz/fuzz_$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$root/regressions/$t/" "$corpus" "$root/seeds/$t" "$root/regressions/$t" > "$log" 2>&1
  rc=$?
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  size=$(ls "$corpus" | wc -l)
  found=$(( $(ls "$root/regressions/$t" | wc -l) - before ))
  printf '%-20s %12s %10s %8s %8s\n' "$t" "${executions:-?}" "${rate:-?}" "$size" "$found"
  rows+=("{\"target\": \"$t\", \"seconds\": $seconds, \"executions\": ${executions:-0}, \"exec_per_s\": ${rate:-0}, \"corpus\": $size, \"new_findings\": $found, \"exit\": $rc}")
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then status=1; echo "  $t: see $log" >&2; fi
done
{ echo "["; for k in "${!rows[@]}"; do [ "$k" -gt 0 ] && echo ","; printf '  %s' "${rows[$k]}"; done; echo; echo "]"; } > "$summary"
echo "summary: $summary"
exit $status
