#!/usr/bin/env python
"""The peers' side of scripts/compare_quantizers.py: runs ONLY with .venv-peers/bin/python.

    .venv-peers/bin/python scripts/peers/modelopt_nncf.py --fp32 model.onnx --calib calib.npy --eval eval.npy \
        --out DIR [--openvino NAME=GRAPH.onnx ...] [--iterations 30]

Imports nothing from segdeploy (its venv pins other onnx/onnxruntime versions). It reads the FP32
ONNX graph and the calibration / evaluation batches that segdeploy's venv wrote (.npy, already
preprocessed exactly as segdeploy does), and writes into --out:

* modelopt-entropy.onnx, modelopt-max.onnx — NVIDIA ModelOpt ONNX PTQ
  (`modelopt.onnx.quantization.quantize`, INT8, its defaults: calibration_method "entropy" and
  high_precision_dtype "fp16"; "max" the other method; calibration runs on the CPU execution
  provider, the only one here). These are TensorRT graphs; compare_quantizers.py makes the one
  change onnxruntime needs to run them (float32 Resize constants);
* nncf.xml/.bin — Intel NNCF PTQ of the same ONNX graph read by OpenVINO, its defaults on every
  calibration image (`nncf_openvino.quantize`: PERFORMANCE preset, fast bias correction, overflow
  fix: 7-bit first-layer weights); nncf-8bit-first.xml/.bin — the same with the overflow fix off;
* maps-<name>.npy — argmax class maps (N×H×W uint8, model resolution) of every model run in
  OpenVINO here (float layers in f32, never BF16): nncf, the FP32 graph, and each --openvino NAME=GRAPH;
* openvino-latency.json — OpenVINO CPU median latency of each, timed interleaved;
* versions.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nncf_openvino import quantize as nncf_quantize  # noqa: E402  (the one NNCF call of the peers)


def modelopt_quantize(fp32: Path, calib: np.ndarray, out: Path, method: str) -> float:
    from modelopt.onnx.quantization import quantize

    start = time.perf_counter()
    quantize(str(fp32), quantize_mode="int8", calibration_data=calib, calibration_method=method,
             calibration_eps=["cpu"], output_path=str(out), log_level="ERROR")
    return time.perf_counter() - start


def openvino_maps(models: dict[str, Path], images: np.ndarray, out: Path, iterations: int) -> dict:
    """Class maps of each model on every image, then interleaved latency (single image, CPU).

    Compiled with INFERENCE_PRECISION_HINT f32: on a CPU with AVX512-BF16/AMX OpenVINO's default
    runs FP32 layers in BF16, which would make "fp32-openvino" a BF16 model and NNCF's float
    layers BF16 ones."""
    import openvino as ov

    core = ov.Core()
    compiled = {name: core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) for name, path in models.items()}
    for name, model in compiled.items():
        request = model.create_infer_request()
        maps = [np.asarray(request.infer({0: images[i : i + 1]})[model.outputs[0]]).argmax(axis=1)[0].astype(np.uint8)
                for i in range(len(images))]
        np.save(out / f"maps-{name}.npy", np.stack(maps))
    requests = {name: model.create_infer_request() for name, model in compiled.items()}
    feed = {0: images[:1]}
    samples: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(3):
        for request in requests.values():
            request.infer(feed)
    for round_ in range(iterations):
        order = list(requests)[round_ % len(requests):] + list(requests)[: round_ % len(requests)]
        for name in order:
            start = time.perf_counter()
            requests[name].infer(feed)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(s)) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--calib", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--openvino", action="append", default=[], help="NAME=GRAPH.onnx also run in OpenVINO")
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    calib, images = np.load(args.calib), np.load(args.eval, mmap_mode="r")
    seconds = {}  # steps whose output is already in --out are skipped (delete it to redo)
    for method in ("entropy", "max"):
        out = args.out / f"modelopt-{method}.onnx"
        if not out.is_file():
            seconds[out.stem] = modelopt_quantize(args.fp32, calib, out, method)
    for name, overflow_fix in (("nncf", True), ("nncf-8bit-first", False)):
        if not (args.out / f"{name}.xml").is_file():
            facts = nncf_quantize(args.fp32, [calib[i:i + 1] for i in range(len(calib))], args.out / f"{name}.xml", overflow_fix)
            seconds[name] = facts["quantize_seconds"]
            print(json.dumps(facts))
    models = {"nncf": args.out / "nncf.xml", "nncf-8bit-first": args.out / "nncf-8bit-first.xml", "fp32-openvino": args.fp32}
    models.update(dict(item.split("=", 1) for item in args.openvino))
    latency = openvino_maps({k: Path(v) for k, v in models.items()}, np.ascontiguousarray(images), args.out, args.iterations)
    (args.out / "openvino-latency.json").write_text(json.dumps({"median_ms": latency, "quantize_seconds": seconds}, indent=1))
    print(f"quantized in {json.dumps({k: round(v, 1) for k, v in seconds.items()})} s")
    import modelopt
    import nncf
    import onnxruntime
    import openvino

    (args.out / "versions.json").write_text(json.dumps({"modelopt": modelopt.__version__, "nncf": nncf.__version__,
                                                        "openvino": openvino.__version__,
                                                        "onnxruntime (peers venv)": onnxruntime.__version__}))


if __name__ == "__main__":
    main()
