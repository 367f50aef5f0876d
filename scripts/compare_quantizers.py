#!/usr/bin/env python
"""segdeploy's INT8 graphs side by side with NVIDIA ModelOpt and Intel NNCF (issue #13).

    bash scripts/setup_peers.sh                       # once: .venv-peers with ModelOpt, NNCF, OpenVINO
    python scripts/compare_quantizers.py --work /tmp/compare [--calib-size 100] [--iterations 30]

Same model (the CamVid LR-ASPP in ../shared/models, 1×3×240×320), same calibration frames (100
CamVid train frames spread evenly, exactly those `segdeploy build --calib ../shared/camvid/train`
reads), same held-out frames (the 101 CamVid val frames: no calibration and no choice of any
default saw them) and segdeploy's preprocessing for everyone: this venv writes the preprocessed
calibration and evaluation batches as .npy, and the peers read those. The peers run only as a
subprocess of .venv-peers/bin/python (scripts/peer_quantizers.py), never imported here.

Printed per INT8 graph: ΔmIoU vs FP32 on the held-out frames (± paired bootstrap s.e. [95 %
interval]), pixel agreement with FP32, whether TensorRT-RTX builds an engine from it (TensorRT
graphs; a CPU-only ahead-of-time build), and the latency ratio to FP32 in its runtime (medians,
timed interleaved; onnxruntime for the Q/DQ ONNX graphs, OpenVINO for NNCF).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
CAMVID = REPO.parent / "shared" / "camvid"
PEERS_PYTHON = REPO / ".venv-peers" / "bin" / "python"

from measure_int8 import MODELS, export  # noqa: E402

from segdeploy.precision import heldout  # noqa: E402


def build_segdeploy(deploy: Path, calib_size: int) -> dict[str, Path]:
    """`segdeploy build -p int8` for onnxruntime and `--backend tensorrt --graph-only`, defaults otherwise."""
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.manifest import Manifest

    for backend, graph_only in (("onnxruntime", False), ("tensorrt", True)):
        build_artifacts(deploy, ["int8"], backend, BuildOptions(calib=CAMVID / "train", calib_size=calib_size, graph_only=graph_only),
                        step=lambda m: print(f"  {m}", flush=True))
    manifest = Manifest.load(deploy)
    return {"segdeploy ORT graph": manifest.verify("onnx-int8-ort"), "segdeploy TRT graph": manifest.verify("onnx-int8-trt")}


def write_batches(deploy: Path, frames: heldout.Frames, scorer: heldout.FrameScorer, work: Path) -> tuple[Path, Path]:
    """The calibration and held-out batches, preprocessed by segdeploy, for the peers."""
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import CalibrationSet, reader_for

    calib = CalibrationSet(frames.calibration[0].parent, frames.calibration, len(frames.calibration))
    reader = reader_for(Manifest.load(deploy), calib)
    calib_path, eval_path = work / "calib.npy", work / "eval.npy"
    np.save(calib_path, np.concatenate([reader.load_batch(i)[reader.input_name] for i in range(len(reader))]))
    np.save(eval_path, np.concatenate([b.inputs for b in scorer.batches]).astype(np.float32))
    return calib_path, eval_path


def run_peers(fp32: Path, calib: Path, images: Path, out: Path, ort_int8: Path, iterations: int) -> None:
    if not PEERS_PYTHON.is_file():
        sys.exit(f"no {PEERS_PYTHON}: run `bash scripts/setup_peers.sh` first")
    command = [str(PEERS_PYTHON), str(REPO / "scripts" / "peer_quantizers.py"), "--fp32", str(fp32), "--calib", str(calib),
               "--eval", str(images), "--out", str(out), "--openvino", f"segdeploy-ort-openvino={ort_int8}",
               "--iterations", str(iterations)]
    subprocess.run(command, check=True)


def trt_rtx_builds(graph: Path, work: Path) -> str:
    """'yes (N s)' or the reason TensorRT-RTX gives (CPU-only ahead-of-time build)."""
    from segdeploy.backends.tensorrt.builder import EngineOptions, build_engine
    from segdeploy.errors import SegdeployError

    try:
        record = build_engine(graph, work / f"{graph.stem}.engine", precision="int8", profile={}, options=EngineOptions())
    except SegdeployError as exc:
        return f"no: {str(exc)[:160]}"
    return f"yes ({record['build_seconds']:.1f} s)"


def ort_latency(graphs: dict[str, Path], feed: dict, iterations: int) -> dict[str, float]:
    from segdeploy.backends.onnxruntime import OrtRunner
    from segdeploy.bench.latency import summarize, time_interleaved

    with contextlib.ExitStack() as stack:
        runners = {name: stack.enter_context(OrtRunner(path)) for name, path in graphs.items()}
        samples = time_interleaved({n: (lambda r=r: r.infer(feed)) for n, r in runners.items()}, rounds=5, warmup=3,
                                   iterations=iterations)
    return {name: summarize(s).median for name, s in samples.items()}


def agreement(maps: list[np.ndarray], reference: list[np.ndarray]) -> float:
    equal = sum(int((a == b).sum()) for a, b in zip(maps, reference))
    return 100.0 * equal / sum(m.size for m in maps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per graph (interleaved)")
    parser.add_argument("--skip-peers", action="store_true", help="reuse the peers' outputs already in --work/peers")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    deploy = export("camvid", MODELS["camvid"], args.work, None)
    frames = heldout.split_frames(CAMVID, args.calib_size)
    from segdeploy.manifest import Manifest

    manifest = Manifest.load(deploy)
    scorer = heldout.FrameScorer(manifest, CAMVID, "val", frames.confirmation)
    graphs = {"FP32": manifest.verify("onnx-fp32"), **build_segdeploy(deploy, args.calib_size)}
    peers = args.work / "peers"
    if not args.skip_peers:
        calib, images = write_batches(deploy, frames, scorer, args.work)
        run_peers(graphs["FP32"], calib, images, peers, graphs["segdeploy ORT graph"], args.iterations)
    graphs.update({"ModelOpt entropy (default)": peers / "modelopt-entropy-fp32.onnx", "ModelOpt max": peers / "modelopt-max-fp32.onnx"})
    builds = {name: peers / f"{stem}.onnx" for name, stem in (("ModelOpt entropy (default)", "modelopt-entropy"),
                                                             ("ModelOpt max", "modelopt-max"))}
    print_table(graphs, scorer, peers, args, builds)


def print_table(graphs: dict[str, Path], scorer: heldout.FrameScorer, peers: Path, args, builds: dict[str, Path]) -> None:
    """The side-by-side table. ModelOpt's rows are measured on its FP32-high-precision graphs
    (onnxruntime refuses its default FP16 ones); `builds` names the graphs TensorRT-RTX is given:
    ModelOpt's defaults (FP16 high precision) and segdeploy's own TensorRT graph."""
    maps = {name: scorer.maps(path) for name, path in graphs.items()}
    for name in ("nncf", "fp32-openvino", "segdeploy-ort-openvino"):
        maps[name] = scorer.maps_from_argmax(np.load(peers / f"maps-{name}.npy"))
    counts = {name: scorer.counts_of(m) for name, m in maps.items()}
    feed = {scorer.input_name: scorer.batches[0].inputs.astype(np.float32)}
    ort_ms = ort_latency(graphs, feed, args.iterations)
    ov = json.loads((peers / "openvino-latency.json").read_text())["median_ms"]
    rows = [("segdeploy ORT graph", "onnxruntime", "-", ort_ms), ("segdeploy TRT graph", "onnxruntime", "trt", ort_ms),
            ("ModelOpt entropy (default)", "onnxruntime", "trt", ort_ms), ("ModelOpt max", "onnxruntime", "trt", ort_ms),
            ("nncf", "OpenVINO", "-", ov), ("segdeploy-ort-openvino", "OpenVINO", "-", ov)]
    print(f"\nheld-out: {len(scorer.batches)} CamVid val frames; FP32 mIoU {heldout.miou(counts['FP32']):.2f} (onnxruntime), "
          f"{heldout.miou(counts['fp32-openvino']):.2f} (OpenVINO)\n")
    print("| INT8 graph | runs in | ΔmIoU ± s.e. [95 % CI] | agreement with FP32 % | TensorRT-RTX builds | latency / FP32 |")
    print("|---|---|---|---|---|---|")
    for name, runtime, trt, latency in rows:
        fp32_name = "FP32" if runtime == "onnxruntime" else "fp32-openvino"
        delta = heldout.describe(heldout.paired_delta(counts[fp32_name], counts[name]))
        built = trt_rtx_builds(builds.get(name, graphs[name]), args.work) if trt == "trt" else "–"
        ratio = latency[name] / latency[fp32_name]
        print(f"| {name} | {runtime} | {delta} | {agreement(maps[name], maps[fp32_name]):.2f} | {built} | {ratio:.2f}× |")
    print(f"\nmedian ms: onnxruntime {json.dumps({k: round(v, 2) for k, v in ort_ms.items()})}; "
          f"OpenVINO {json.dumps({k: round(v, 2) for k, v in ov.items()})}")
    print(f"versions: {(peers / 'versions.json').read_text()}")


if __name__ == "__main__":
    main()
