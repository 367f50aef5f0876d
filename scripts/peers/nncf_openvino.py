"""Peer: NNCF post-training INT8 for OpenVINO, run ONLY with .venv-peers/bin/python (scripts/setup_peers.sh).

    .venv-peers/bin/python scripts/peers/nncf_openvino.py MODEL.onnx CALIB_DIR OUT.xml

Reads the FP32 ONNX graph segdeploy exported and the calibration batches it wrote as .npy files
(already preprocessed exactly as segdeploy calibrates), quantizes with NNCF's defaults for
OpenVINO (`preset=PERFORMANCE`: symmetric INT8, FakeQuantize placed by NNCF's own rules, fast
bias correction) and saves the IR with uncompressed weights. Prints one JSON line (timings,
versions, FakeQuantize count) for the caller.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nncf
import numpy as np
import openvino as ov


def quantize(onnx_path: str, batches: list, out_xml: str, overflow_fix: bool = True) -> dict:
    """NNCF's defaults on every batch; the IR saved with uncompressed weights. Returns the facts printed.

    `overflow_fix=False` turns off NNCF's one default that changes rounding: its "overflow fix",
    which rounds the first layer's weights to 7 bits (half the INT8 range) so that U8×S8 products
    cannot saturate 16-bit sums on x86 CPUs without VNNI."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = ov.Core().read_model(str(onnx_path))
    start = time.perf_counter()
    advanced = None if overflow_fix else AdvancedQuantizationParameters(overflow_fix=OverflowFix.DISABLE)
    quantized = nncf.quantize(model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(batches), advanced_parameters=advanced)
    seconds = time.perf_counter() - start
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    return {"nncf": nncf.__version__, "openvino": ov.__version__, "calibration_batches": len(batches),
            "quantize_seconds": round(seconds, 1), "fake_quantize_nodes": fake_quantize}


def main(onnx_path: str, calib_dir: str, out_xml: str) -> None:
    batches = [np.load(path) for path in sorted(Path(calib_dir).glob("*.npy"))]
    if not batches:
        sys.exit(f"no .npy calibration batches in {calib_dir}")
    print(json.dumps(quantize(onnx_path, batches, out_xml)))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
