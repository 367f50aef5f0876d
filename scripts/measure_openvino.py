#!/usr/bin/env python
"""OpenVINO vs onnxruntime vs PyTorch eager, side by side in ONE process: the issue #16 figures.

    python scripts/measure_openvino.py --work /tmp/ov-measure [--rounds 5] [--iterations 30] [--threads 2]
        [--calib-size 32] [--agree-frames 8] [--pairs 40] [--bn-frames 0] [--no-nncf]

torchvision deeplabv3_resnet50 with random weights (seed 0), 1×3×256×512, exported and built by
segdeploy under --work (reused when there): onnxruntime FP32 and INT8 (`model.int8-ort.onnx`),
OpenVINO `ov-fp32` / `ov-bf16` (the layers measured slower in bf16 kept in FP32, as `build` makes
it) / `ov-int8` (segdeploy's Q/DQ graph read as is), the FP32 graph compiled with the bf16 hint on
every layer (what `ov-bf16` was before build chose its layers), the symmetric
TensorRT-family Q/DQ graph (`model.int8-trt.onnx`) compiled by OpenVINO the same way (to choose
the graph OpenVINO reads), and NNCF's INT8 for OpenVINO: NNCF runs as a subprocess of
.venv-peers/bin/python (scripts/setup_peers.sh) on the same ONNX file and the same calibration
batches, written as .npy by segdeploy; its IR is compiled here, by the same OpenVINO version, with
the same settings as segdeploy's INT8 artifact, so all targets share one process and one timing
loop. Calibration: --calib-size CamVid train frames (calib/ when CamVid is absent).

Timing: `bench`'s interleaved rounds (order rotated each round), medians, as ratios to PyTorch
eager. Then segdeploy's `ov-int8` and NNCF's INT8 alone, call by call in pairs (--pairs), and the
median of the per-pair ratios with its 95 % interval (block bootstrap): on a loaded machine the
load drifts between rounds, and a pair shares it. --bn-frames N measures the model's BatchNorm
statistics on N CamVid train frames first: random initialisation leaves every folded bias 0,
which no trained network has. Agreement: argmax agreement with PyTorch eager on --agree-frames CamVid val frames (with
random weights the classes mean nothing; the figure says how far each graph is from eager).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"
SHAPE = (1, 3, 256, 512)
OURS = "openvino int8 (ov-int8: model.int8-ort.onnx)"
NNCF = "openvino int8 (NNCF, same settings)"

from segdeploy.manifest import Manifest  # noqa: E402


def image_folder(split: str) -> Path:
    camvid = SHARED / "camvid" / split / "images"
    return camvid if camvid.is_dir() else REPO / "calib"


def prepare(work: Path, calib_size: int, bn_frames: int) -> Path:
    """Export deeplabv3_resnet50 (random weights, seed 0; BatchNorm statistics from `bn_frames`
    CamVid train frames when > 0) and build every artifact measured here."""
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.models import get_spec

    deploy = work / "deeplabv3"
    if not Manifest.exists(deploy):
        torch.manual_seed(0)
        model = get_spec("deeplabv3_resnet50").build(num_classes=11)
        weights = work / "deeplabv3_resnet50_seed0.pth"
        torch.save(model.state_dict(), weights)
        request = dict(source="deeplabv3_resnet50", num_classes=11, input_shape=SHAPE)
        if bn_frames > 0:
            weights = work / f"deeplabv3_resnet50_seed0_bn{bn_frames}.pth"
            export_model(ExportRequest(out_dir=work / "bn-export", weights=work / "deeplabv3_resnet50_seed0.pth", **request))
            torch.save(batchnorm_statistics(model, work / "bn-export", bn_frames).state_dict(), weights)
        export_model(ExportRequest(out_dir=deploy, weights=weights, **request))
    options = BuildOptions(calib=image_folder("train"), calib_size=calib_size)
    have = dict(Manifest.load(deploy).artifacts)
    if "ov-bf16" in have and "fp32_where_faster" not in (have["ov-bf16"].settings or {}):
        del have["ov-bf16"]  # made before build chose bf16's layers: rebuild
    for backend, precisions, extra in (("onnxruntime", ["int8"], {}), ("tensorrt", ["int8"], {"graph_only": True}),
                                       ("openvino", ["fp32", "bf16", "int8"], {})):
        wanted = {"onnxruntime": ["onnx-int8-ort"], "tensorrt": ["onnx-int8-trt"]}.get(backend, [f"ov-{p}" for p in precisions])
        if not all(name in have for name in wanted):
            if backend == "openvino":  # each precision is its own artifact: only the missing ones
                precisions = [p for p, name in zip(precisions, wanted) if name not in have]
            print(f"building {backend} {', '.join(precisions)} …", flush=True)
            build_artifacts(deploy, precisions, backend, BuildOptions(**{**options.__dict__, **extra}))
    return deploy


def batchnorm_statistics(model: torch.nn.Module, exported: Path, frames: int) -> torch.nn.Module:
    """`model` with every BatchNorm's running mean and variance measured on `frames` CamVid train
    frames (a cumulative average, preprocessed as the exported graph reads them). Random
    initialisation leaves mean 0, variance 1, γ 1, β 0: every bias folded from BatchNorm is then
    exactly 0, which no trained network has. The frames are the last ones of the train folder
    (calibration spreads its picks over the whole folder)."""
    from segdeploy.data import find_images
    from segdeploy.precision.calibration import CalibrationSet, reader_for

    folder = image_folder("train")
    images = tuple(find_images(folder)[-frames:])
    reader = reader_for(Manifest.load(exported), CalibrationSet(folder=folder, images=images, requested=len(images)))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over every batch
    frames_in = np.concatenate([next(iter(reader.feed(i).values())) for i in range(len(reader))])
    model.train()
    with torch.no_grad():
        for start in range(0, len(frames_in), 8):  # batches of 8: the ASPP pooling branch's BatchNorm sees 1×1 maps
            model(torch.from_numpy(frames_in[start:start + 8]))
    return model.eval()


def nncf_model(deploy: Path, work: Path, calib_size: int) -> tuple[Path, dict]:
    """NNCF's INT8 IR of the FP32 graph, made in .venv-peers from segdeploy's calibration batches."""
    from segdeploy.precision.calibration import reader_for, select_images

    out = work / "nncf" / "model.nncf-int8.xml"
    record = work / "nncf" / "nncf.json"
    if out.is_file() and record.is_file():
        return out, json.loads(record.read_text())
    if not PEERS_PYTHON.is_file():
        sys.exit(f"{PEERS_PYTHON} not found: run `bash scripts/setup_peers.sh` first (or pass --no-nncf)")
    manifest = Manifest.load(deploy)
    batches = work / "nncf" / "calib"
    shutil.rmtree(batches, ignore_errors=True)
    batches.mkdir(parents=True)
    reader = reader_for(manifest, select_images(image_folder("train"), calib_size))  # the images segdeploy calibrated on
    for i in range(len(reader)):
        np.save(batches / f"batch_{i:04d}.npy", next(iter(reader.feed(i).values())))
    print("quantizing with NNCF in .venv-peers …", flush=True)
    done = subprocess.run([str(PEERS_PYTHON), str(REPO / "scripts" / "peers" / "nncf_openvino.py"),
                           str(manifest.verify("onnx-fp32")), str(batches), str(out)],
                          capture_output=True, text=True, check=True)
    record.write_text(done.stdout.strip().splitlines()[-1])
    return out, json.loads(record.read_text())


def runners(deploy: Path, nncf_xml: Path | None, threads: int) -> dict:
    """Every target as an inactive runner, PyTorch eager first (the ratios' denominator)."""
    from segdeploy.backends.onnxruntime import OrtRunner
    from segdeploy.backends.openvino import OpenVinoRunner
    from segdeploy.backends.select import make_runner
    from segdeploy.backends.torch import TorchRunner, reference_module

    manifest = Manifest.load(deploy)
    targets = {
        "pytorch eager": TorchRunner(reference_module(manifest), threads=threads),
        "onnxruntime fp32 (model.onnx)": OrtRunner(manifest.verify("onnx-fp32"), threads=threads),
        "onnxruntime int8 (model.int8-ort.onnx)": OrtRunner(manifest.verify("onnx-int8-ort"), threads=threads),
        "openvino fp32 (ov-fp32)": make_runner(manifest, "ov-fp32", threads=threads),
        "openvino bf16, every layer (model.onnx, hint bf16)": OpenVinoRunner(manifest.verify("onnx-fp32"), precision="bf16",
                                                                             threads=threads),
        "openvino bf16 (ov-bf16: layers slower in bf16 kept FP32)": make_runner(manifest, "ov-bf16", threads=threads),
        OURS: make_runner(manifest, "ov-int8", threads=threads),
        "openvino int8 (model.int8-trt.onnx)": OpenVinoRunner(manifest.verify("onnx-int8-trt"), precision="int8",
                                                              threads=threads),
    }
    if nncf_xml is not None:
        targets[NNCF] = OpenVinoRunner(nncf_xml, precision="int8", threads=threads)
    return targets


def agreement(active: dict, deploy: Path, frames: int) -> dict[str, float]:
    """Argmax agreement of each target with PyTorch eager on `frames` val frames."""
    from segdeploy.precision.calibration import reader_for, select_images

    if frames < 1:
        return {}
    reader = reader_for(Manifest.load(deploy), select_images(image_folder("val"), frames))
    batches = [reader.feed(i) for i in range(len(reader))]
    labels = {name: [next(iter(r.infer(b).values())).argmax(1) for b in batches] for name, r in active.items()}
    reference = labels["pytorch eager"]
    return {name: float(np.mean([np.mean(a == b) for a, b in zip(maps, reference)])) for name, maps in labels.items()}


def paired_ratio(ours, theirs, x: dict, pairs: int) -> dict | None:
    """Median and quartiles of ours/theirs latency over `pairs` back-to-back pairs (order alternating)."""
    if pairs < 1:
        return None
    ratios = []
    for i in range(pairs):
        times = {}
        for name, runner in ((("ours", ours), ("theirs", theirs)) if i % 2 == 0 else (("theirs", theirs), ("ours", ours))):
            start = time.perf_counter()
            runner.infer(x)
            times[name] = time.perf_counter() - start
        ratios.append(times["ours"] / times["theirs"])
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    low, high = median_interval(np.asarray(ratios))
    return {"pairs": pairs, "median": round(float(median), 3), "q1": round(float(q1), 3), "q3": round(float(q3), 3),
            "median_95": [round(low, 3), round(high, 3)]}


def median_interval(ratios: np.ndarray, block: int = 10, resamples: int = 2000) -> tuple[float, float]:
    """95 % interval of the median ratio: circular block bootstrap (blocks of `block` consecutive
    pairs, since the machine's load drifts slowly and neighbouring pairs share it)."""
    rng = np.random.default_rng(0)
    n = len(ratios)
    starts = rng.integers(0, n, size=(resamples, -(-n // block)))
    index = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :n] % n
    low, high = np.percentile(np.median(ratios[index], axis=1), [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ov-measure"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30, help="timed calls per target, split over the rounds")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-size", type=int, default=32)
    parser.add_argument("--agree-frames", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=40, help="ov-int8 vs NNCF, call by call")
    parser.add_argument("--no-nncf", action="store_true")
    parser.add_argument("--bn-frames", type=int, default=0, help="measure BatchNorm statistics on this many CamVid "
                        "train frames (nonzero folded biases, as in a trained model); 0: random initialisation")
    args = parser.parse_args()
    from contextlib import ExitStack

    import openvino

    from segdeploy.timing import summarize, time_interleaved

    args.work.mkdir(parents=True, exist_ok=True)
    deploy = prepare(args.work, args.calib_size, args.bn_frames)
    nncf_xml, nncf_record = (None, {}) if args.no_nncf else nncf_model(deploy, args.work, args.calib_size)
    x = {"input": np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)}
    with ExitStack() as stack:
        active = {name: stack.enter_context(r) for name, r in runners(deploy, nncf_xml, args.threads).items()}
        agree = agreement(active, deploy, args.agree_frames)
        print(f"timing {len(active)} targets: {args.rounds} interleaved rounds, {args.iterations} calls each …", flush=True)
        samples = time_interleaved({n: (lambda r=r: r.infer(x)) for n, r in active.items()}, rounds=args.rounds,
                                   warmup=args.warmup, iterations=args.iterations)
        precisions = {n: getattr(r, "runtime_precisions", {}) for n, r in active.items()}
        paired = None if nncf_xml is None else paired_ratio(active[OURS], active[NNCF], x, args.pairs)
    medians = {name: summarize(s).median for name, s in samples.items()}
    eager = medians["pytorch eager"]
    report = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": platform.processor() or platform.machine(),
              "threads": args.threads, "openvino": openvino.__version__, "torch": torch.__version__, "nncf": nncf_record,
              "paired_ov_int8_over_nncf": paired, "rows": [{"target": n, "median_ms": round(m, 2), "vs_eager": round(m / eager, 3),
                        "agreement_with_eager": agree.get(n), "runtime_precisions": precisions[n]} for n, m in medians.items()]}
    out = args.work / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n| target | median ms | × eager | agree % with eager | compute layers |\n|---|---|---|---|---|")
    for row in report["rows"]:
        share = "–" if row["agreement_with_eager"] is None else f"{100 * row['agreement_with_eager']:.2f}"
        layers = ", ".join(f"{p} {n}" for p, n in row["runtime_precisions"].items()) or "–"
        print(f"| {row['target']} | {row['median_ms']:.1f} | {row['vs_eager']:.3f} | {share} | {layers} |")
    if paired:
        print(f"\n{OURS} / {NNCF}, {paired['pairs']} calls each in pairs: median ratio {paired['median']:.3f} "
              f"(95 % interval {paired['median_95'][0]:.3f}–{paired['median_95'][1]:.3f}; quartiles {paired['q1']:.3f}–{paired['q3']:.3f})")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
