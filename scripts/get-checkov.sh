#!/usr/bin/env bash
# Create .cache/checkov-venv (git-ignored) with checkov for the chart scan in tests/charts.
#
# checkov pins versions that conflict with requirements.lock, so it lives in its own venv; the
# tests call .cache/checkov-venv/bin/checkov when it exists (or $CHECKOV). Set CHECKOV_VERSION
# to pin a release.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-$root/.cache/checkov-venv}"
python="${PYTHON:-python3}"
spec="checkov${CHECKOV_VERSION:+==$CHECKOV_VERSION}"

if [ -x "$venv/bin/checkov" ]; then
  echo "checkov already at $venv/bin/checkov"
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "$spec"
"$venv/bin/checkov" --version
