#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for the review workstation's browser tests
# (tests/e2e/test_review_browser.py drives /usr/bin/chromium through /usr/bin/chromedriver with
# Selenium). Idempotent: does nothing when both already work. Needs root or sudo for apt-get.
set -euo pipefail

if /usr/bin/chromium --version >/dev/null 2>&1 && /usr/bin/chromedriver --version >/dev/null 2>&1; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>&1 | sed -n 1p)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install chromium" >&2; exit 1; }
  sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version 2>&1 | sed -n 1p
/usr/bin/chromedriver --version 2>&1 | sed -n 1p
