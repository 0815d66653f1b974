#!/usr/bin/env bash
# Install Debian's prometheus package (prometheus + promtool) for the rule tests and
# `sightline up --with-prometheus`. Idempotent: does nothing when promtool already works.
#
# The package's service is not started (no systemd in CI containers; we start prometheus
# ourselves on loopback when wanted). Needs root or sudo for apt-get.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && promtool --version >/dev/null 2>&1; then
  echo "promtool already installed: $(promtool --version 2>&1 | sed -n 1p)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install prometheus" >&2; exit 1; }
  sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d 101: do not start the daemon the package ships (harmless where there is no init).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get install -y -qq --no-install-recommends prometheus
promtool --version 2>&1 | sed -n 1p
