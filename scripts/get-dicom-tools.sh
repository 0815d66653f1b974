#!/usr/bin/env bash
# Install Debian's DCMTK (echoscu, storescu, findscu: the modality) and Orthanc with its DICOMweb
# plugin (the hospital PACS) for the receiver's integration tests (tests/integration/receiver).
# Idempotent: does nothing when every tool is present. Needs root or sudo for apt-get.
set -euo pipefail

need=()
command -v storescu >/dev/null 2>&1 && command -v echoscu >/dev/null 2>&1 || need+=(dcmtk)
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
ls /usr/share/orthanc/plugins*/libOrthancDicomWeb.so >/dev/null 2>&1 || need+=(orthanc-dicomweb)
if [ "${#need[@]}" -eq 0 ]; then
  echo "dcmtk and orthanc already installed: $(command -v storescu) $(command -v Orthanc)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Orthanc's package starts a system service where one can; the tests run their own instance.
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
storescu --version 2>&1 | sed -n 1p
