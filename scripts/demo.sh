#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded default: the shipped demo U-Net on the
# shipped calib/ data, exported, built at FP32/FP16/INT8 for onnxruntime (and TensorRT where a
# flavour is installed), benched against PyTorch; ends in one table and deploy/demo/pareto.png.
# Extra arguments go to `segdeploy pipeline` (e.g. a config file of your own, or -o DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/segdeploy pipeline "$@"
