"""Measure what `segdeploy build` delivers on this machine (one run, medians).

For a model (default: torchvision deeplabv3_resnet50, random weights, 1x3x256x512):

* PyTorch eager latency, onnxruntime latency of the FP32, FP16 and INT8 (onnxruntime target)
  graphs, and INT8/FP16 argmax agreement with FP32 on the calibration images;
* calibration time for N images (default 100);
* TensorRT(-RTX) build times of the FP32, FP16 and INT8 engines.

    PYTHONPATH=. python scripts/measure_build.py [--calib DIR] [--calib-size 100] [--iterations 20]

The calibration images default to ../shared/camvid/val (read in place, never copied) when
present, else the project's calib/ folder. Prints a table and a JSON document. Numbers are
one run on a possibly shared CPU: read them as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segdeploy.backends.onnxruntime import OrtRunner  # noqa: E402
from segdeploy.build import BuildOptions, build_artifacts  # noqa: E402
from segdeploy.export import ExportRequest, export_model, parse_input_shape  # noqa: E402
from segdeploy.manifest import Manifest  # noqa: E402
from segdeploy.models import get_spec  # noqa: E402
from segdeploy.data import default_calib_dir  # noqa: E402


def median_ms(fn, warmup: int, iterations: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "iterations": iterations}


def torch_latency(name: str, shape, warmup: int, iterations: int, num_classes: int = 21) -> dict:
    model = get_spec(name).build(num_classes=num_classes).eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        return median_ms(lambda: model(x), warmup, iterations)


def ort_latency(path: Path, shape, threads: int, warmup: int, iterations: int) -> dict:
    x = {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    with OrtRunner(path, threads=threads) as runner:
        return median_ms(lambda: runner.infer(x), warmup, iterations)


def eval_agreement(manifest: Manifest, folder: Path, size: int) -> dict:
    from segdeploy.precision.calibration import batch_reader, select_images
    from segdeploy.precision.drift import compare_graphs

    batches = list(batch_reader(manifest, select_images(folder, size).images))
    names = ("onnx-fp16", "onnx-int8-ort")
    figures = compare_graphs(manifest, manifest.verify("onnx-fp32"), {n: manifest.verify(n) for n in names}, batches)
    return {name: figures[name]["argmax_agreement"] for name in names}


def default_calib() -> Path:
    camvid = REPO.parent / "shared" / "camvid" / "val"
    return camvid if camvid.is_dir() else default_calib_dir()


def environment(threads: int) -> dict:
    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "load_average_1m": os.getloadavg()[0],
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3_resnet50")
    parser.add_argument("--input-shape", default="1x3x256x512")
    parser.add_argument("--calib", type=Path, default=None)
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint for the model (default: random weights)")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--eval", type=Path, default=None, help="image folder for FP16/INT8 agreement (default: the calibration images)")
    parser.add_argument("--eval-size", type=int, default=20)
    parser.add_argument("--skip-tensorrt", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the deploy directory here")
    args = parser.parse_args()

    shape = parse_input_shape(args.input_shape)
    torch.set_num_threads(args.threads)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="segdeploy-measure-"))
    deploy = work / args.model
    calib = args.calib or default_calib()
    results: dict = {"model": args.model, "input_shape": list(shape), "calibration_images_from": str(calib),
                     "environment": environment(args.threads)}

    print(f"exporting {args.model} {args.input_shape} → {deploy}", file=sys.stderr)
    export_model(ExportRequest(source=args.model, out_dir=deploy, input_shape=shape, num_classes=args.num_classes,
                               weights=args.weights, force=True))
    options = BuildOptions(calib=calib, calib_size=args.calib_size)
    step = lambda s: print(f"  {s}", file=sys.stderr)  # noqa: E731
    built = build_artifacts(deploy, ["fp16", "int8"], "onnxruntime", options, step=step)
    manifest = Manifest.load(deploy)
    int8 = manifest.artifact("onnx-int8-ort")
    results["calibration"] = int8.calibration.to_dict()
    results["agreement_with_fp32"] = {a["name"]: a["parity"]["argmax_agreement"] for a in built.artifacts if "parity" in a}
    if args.eval:
        results["agreement_with_fp32"] = eval_agreement(manifest, args.eval, args.eval_size)
        results["agreement_images"] = f"{args.eval_size} images from {args.eval}"

    print("timing PyTorch eager and onnxruntime", file=sys.stderr)
    latency = {"pytorch-eager-fp32": torch_latency(args.model, shape, args.warmup, args.iterations, args.num_classes)}
    for name in ("onnx-fp32", "onnx-fp16", "onnx-int8-ort"):
        latency[f"onnxruntime:{name}"] = ort_latency(manifest.verify(name), shape, args.threads, args.warmup, args.iterations)
    eager = latency["pytorch-eager-fp32"]["median_ms"]
    for entry in latency.values():
        entry["relative_to_eager"] = entry["median_ms"] / eager
    results["latency"] = latency

    if not args.skip_tensorrt:
        trt = build_artifacts(deploy, ["fp32", "fp16", "int8"], "tensorrt", options, step=step)
        results["tensorrt_build_seconds"] = {a["name"]: a["build_seconds"] for a in trt.artifacts if a.get("kind") == "engine"}
        results["tensorrt"] = next((a["tensorrt"] for a in trt.artifacts if a.get("kind") == "engine"), None)
    print_table(results)
    print(json.dumps(results, indent=2, default=str))


def print_table(results: dict) -> None:
    env = results["environment"]
    print(f"\n{results['model']} {'x'.join(map(str, results['input_shape']))} on {env['cpu']} "
          f"({env['threads']} threads, load average {env['load_average_1m']:.1f} at start)")
    for name, entry in results["latency"].items():
        print(f"  {name:<28} median {entry['median_ms']:8.1f} ms  ×{entry['relative_to_eager']:.2f} of eager")
    calib = results["calibration"]
    print(f"  calibration ({calib['method']}, {calib['images']} images): {calib['seconds']} s")
    for name, value in results["agreement_with_fp32"].items():
        print(f"  {name} argmax agreement with FP32: {value:.4%}")
    for name, seconds in results.get("tensorrt_build_seconds", {}).items():
        print(f"  {name} build: {seconds:.1f} s ({results['tensorrt']['flavour']} {results['tensorrt']['version']})")


if __name__ == "__main__":
    main()
