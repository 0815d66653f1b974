#!/usr/bin/env bash
# The GPU suite of issue 15, in one command: in-process torch (fp32, bf16/fp16 autocast,
# channels-last, CUDA graphs) vs the bundled tritonserver (python backend running torch on the GPU,
# DLPack), ONNX Runtime CUDA/TensorRT if present, Grad-CAM vs forward, AMP training, a same-run CPU
# row, each beside % of the card's peak. Writes benchmarks/results/gpu-<card>.{json,md}; ends within
# 8 minutes (sections time out on their own; `timeout` bounds the whole).
#
#   benchmarks/gpu_suite.sh --dry-run   # here, no GPU: CPU, tiny sizes, every path (tests/ runs it)
#   benchmarks/gpu_suite.sh --pack      # here, once: .whl/tritonserver-bundle.tar.xz (27 MB) from
#                                       # the venv's nvidia-pytriton (server, python backend, 3.12 stub)
#   benchmarks/gpu_suite.sh             # on a CUDA machine
#
# On the lent GPU machine (the device tool), after --pack here. Its image has torch, numpy and
# onnxruntime under python3 but no nvidia-pytriton, and the 55 MB wheel plus the repository would
# pass the 64 MiB carry, hence the trimmed bundle (with the ~13 MB tree: ~40 MB); nothing is
# installed from a registry there (the suite is estimated at 4-5 minutes; not yet run on a GPU):
#   run(command="benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=540)
# The results come back through $OUT (the suite copies them there); commit them from files_at.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.whl/tritonserver-bundle.tar.xz

if [[ "${1:-}" == "--pack" ]]; then
  site=$(.venv/bin/python -c 'import pytriton, os; print(os.path.dirname(os.path.dirname(pytriton.__file__)))')
  here=$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  stubs=pytriton/tritonserver/python_backend_stubs
  mkdir -p .whl
  # The 3.12 stub matches the GPU image's python3, this venv's lets the bundle be tried here;
  # libpython3.13 (32 MB) serves only the 3.13 stub.
  tar -C "$site" -cf - pytriton/__init__.py pytriton/tritonserver/bin pytriton/tritonserver/backends/python \
      "$stubs/3.12" "$stubs/$here" --exclude='libpython3-*' nvidia_pytriton.libs \
    | xz -T2 -6 > "$BUNDLE.tmp"
  mv "$BUNDLE.tmp" "$BUNDLE"
  ls -l "$BUNDLE"
  exit 0
fi

PY=python3
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD:$PWD/src:$PWD/services/common/src:$PWD/services/explain/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pytriton") is None)'; then
  if [[ -f "$BUNDLE" ]]; then
    dest=$(mktemp -d /tmp/gpu-suite-pytriton-XXXX)
    trap 'rm -rf "$dest"' EXIT
    # Python's tarfile (lzma is in the standard library): the GPU image need not have xz.
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' "$BUNDLE" "$dest"
    export PYTHONPATH="$PYTHONPATH:$dest"
  else
    echo "[gpu-suite] no nvidia-pytriton and no $BUNDLE: the Triton section will report an error" >&2
  fi
fi
"$PY" -c 'import torch, sys; print(f"[gpu-suite] {sys.executable} torch {torch.__version__} cuda {torch.cuda.is_available()}")'
# 450 s for the sections, then writing; 470 s hard stop, 480 s kill: under 8 minutes in all.
timeout -k 10 470 "$PY" -m benchmarks.gpu --deadline-s 450 "$@"
