#!/usr/bin/env bash
# Install Debian's Tesseract OCR (with its English and OSD data: nothing is downloaded at run time)
# for deid's burned-in text detector (services/deid/src/sightline_deid/core/ocr.py), and the
# DejaVu fonts that benchmarks/bench_burned_in_ocr.py draws its test text with.
# Idempotent: does nothing when both are present. Needs root or sudo for apt-get.
set -euo pipefail

need=()
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr)
tessdata=$(ls -d /usr/share/tesseract-ocr/*/tessdata 2>/dev/null | head -n1 || true)
[ -n "$tessdata" ] && [ -f "$tessdata/eng.traineddata" ] || need+=(tesseract-ocr-eng)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf ] || need+=(fonts-dejavu-extra)
if [ "${#need[@]}" -eq 0 ]; then
  echo "tesseract already installed: $(command -v tesseract) ($(tesseract --version 2>&1 | sed -n 1p))"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
tesseract --version 2>&1 | sed -n 1p
