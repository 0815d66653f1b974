#!/usr/bin/env bash
# Install the CRD-schema validators pinned in tests/charts/crds (KEDA, Prometheus Operator) into
# .cache/crd-validators (git-ignored) for tests/charts/test_custom_resources.py. Needs node + npm;
# without them it says so and leaves the test to skip (or fail, under CI=true).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/tests/charts/crds"
dest="${CRD_MODELS:-$root/.cache/crd-validators}"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "get-crd-validators: node/npm not found; CRD validation in tests/charts will skip" >&2
  exit 0
fi
if [ -f "$dest/package-lock.json" ] && cmp -s "$src/package-lock.json" "$dest/package-lock.json" \
  && [ -d "$dest/node_modules/@kubernetes-models/keda" ]; then
  echo "CRD validators already at $dest"
  exit 0
fi
mkdir -p "$dest"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
echo "CRD validators installed at $dest"
