#!/usr/bin/env bash
# Every benchmark behind the README's measured table, one after another, each one's output kept,
# so that the table's rows come from one run on one machine:
#
#     bash benchmarks/run_all.sh [out-dir]      # default benchmarks/results/run-<UTC date>
#
# About 10 minutes on this 2-core machine. Run it on a quiet machine (nothing else busy: the
# figures are throughput and latency); it prints progress and each benchmark's last lines, and
# writes <out-dir>/<name>.txt (plus profile_stack's flame graphs into benchmarks/results/profiles).
# Figures only: no benchmark fails on a number.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/run-$(date -u +%Y%m%d)}
mkdir -p "$out"
py=.venv/bin/python
steps=(
  "deid|benchmarks.bench_deid 20 5"
  "burned_in_ocr|benchmarks.bench_burned_in_ocr 60 100"
  "model|benchmarks.bench_model"
  "inference|benchmarks.bench_inference"
  "explain|benchmarks.bench_explain"
  "explain_service|benchmarks.bench_explain_service --requests 64 --rounds 3"
  "gateway|benchmarks.bench_gateway --requests 40 --json $out/gateway.json"
  "profile_stack|benchmarks.profile_stack --seconds 60"
)
{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (uncommitted changes)')"
  echo "date $(date -u +%FT%TZ); $(nproc) CPUs; $(uname -m)"
} > "$out/machine.txt"
total=${#steps[@]}
i=0
for step in "${steps[@]}"; do
  i=$((i + 1))
  name=${step%%|*}
  args=${step#*|}
  echo "[$i/$total] $name: python -m $args" >&2
  began=$(date +%s)
  # shellcheck disable=SC2086 # the arguments are split on purpose
  $py -m $args > "$out/$name.txt" 2>&1 || echo "[$i/$total] $name exited with $?" >&2
  tail -n 4 "$out/$name.txt" >&2
  echo "[$i/$total] $name: $(($(date +%s) - began)) s" >&2
done
echo "outputs in $out" >&2
