#!/usr/bin/env bash
# Create .venv-peers: the quantizers segdeploy is compared against (NVIDIA ModelOpt's ONNX PTQ and
# Intel NNCF with OpenVINO), kept apart from segdeploy's own venv because they pin other versions of
# onnx/onnxruntime (ModelOpt: onnx 1.21, onnxruntime-gpu 1.24) and pull CUDA packages. Comparison
# scripts run them in this venv on ONNX files segdeploy wrote; nothing of it is a segdeploy dependency.
# Usage: scripts/setup_peers.sh   (idempotent; PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv-peers/bin/python ]; then
  "$python" -m venv .venv-peers
fi
if ! .venv-peers/bin/python -c "import modelopt.onnx.quantization, nncf, openvino" 2>/dev/null; then
  .venv-peers/bin/python -m pip install -q --upgrade pip
  .venv-peers/bin/python -m pip install -q "nvidia-modelopt[onnx]" nncf openvino pillow
fi
.venv-peers/bin/python -c "import modelopt, nncf, openvino; print('peers:', 'modelopt', modelopt.__version__, '| nncf', nncf.__version__, '| openvino', openvino.__version__)"
