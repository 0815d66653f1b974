#!/usr/bin/env bash
# Install Debian's dicom3tools (dciodvfy) for the de-identification IOD validation tests
# (tests/unit/deid/test_deid_iod_valid.py). Idempotent: does nothing when dciodvfy is present.
# Needs root or sudo for apt-get.
set -euo pipefail

if command -v dciodvfy >/dev/null 2>&1; then
  echo "dciodvfy already installed: $(command -v dciodvfy)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install dicom3tools" >&2; exit 1; }
  sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends dicom3tools
command -v dciodvfy
