#!/usr/bin/env bash
# Create .venv (if needed) and install segdeploy into it. Usage: scripts/setup.sh [extras]
#   scripts/setup.sh          runtime install
#   scripts/setup.sh dev      + test tools and tensorrt-rtx (CPU-only TensorRT builder)
# PyTorch is installed first, pinned to the CPU-usable build this project is tested with
# (pip takes it from the machine's local wheel cache where there is one). Where the venv
# already has a torch (e.g. a Jetson's JetPack wheel), it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
if [[ ",$extras," == *",dev,"* ]]; then
  # TensorRT 10 type stubs for the API check (tests/backends/test_tensorrt_api.py), kept out of
  # site-packages: their stub-only `tensorrt/` folder would import as an empty namespace package
  # and hide tensorrt_rtx, and their dependency (the full tensorrt wheel) is not installable here.
  # 10.8 is the oldest release of the stubs, the closest to JetPack 6's TensorRT 10.3.
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .venv/typestubs "tensorrt-stubs==10.13.0.35.1"
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .venv/typestubs-10.8 "tensorrt-stubs==10.8.0.43.1"
fi
