#!/usr/bin/env python
"""segdeploy's INT8 graphs side by side with NVIDIA ModelOpt and Intel NNCF (issue 13).

    bash scripts/setup_peers.sh                       # once: .venv-peers with ModelOpt, NNCF, OpenVINO
    python scripts/compare_quantizers.py --work /tmp/compare [--calib-size 100] [--iterations 30]

Same model (the CamVid LR-ASPP of ../shared/models, 1×3×240×320), same calibration frames (100
CamVid train frames spread evenly: exactly those `segdeploy build --calib ../shared/camvid/train`
reads), same held-out frames (the 101 CamVid val frames, which neither calibration nor the choice
of any segdeploy default saw: `segdeploy.precision.heldout`), and segdeploy's preprocessing for
everyone: this venv writes the preprocessed calibration and evaluation batches as .npy, the peers
read those. The peers run only in .venv-peers (scripts/peers/modelopt_nncf.py, a subprocess).

Printed per INT8 graph: ΔmIoU vs FP32 on the held-out frames (± paired block-bootstrap s.e. [95 %
interval]), pixel agreement with FP32 (label resolution; OpenVINO graphs against OpenVINO's
FP32), whether TensorRT-RTX builds an engine from it (TensorRT-family graphs; ahead of time on
the CPU), and the latency ratio to FP32 in its runtime (medians, timed interleaved on one image;
onnxruntime for the Q/DQ ONNX graphs, OpenVINO for NNCF — its defaults, and the same with its
overflow fix off, which otherwise rounds the first layer's weights to 7 bits); then the mIoU of segdeploy's two
graphs minus each peer's, paired on the same frames (NNCF runs in OpenVINO, whose FP32 mIoU is
printed beside onnxruntime's). Peer-graph quirk handled here: ModelOpt's default graphs
(high_precision_dtype fp16) give Resize an FP16 roi/scales constant, which the ONNX spec
(scales: float) and onnxruntime refuse; the onnxruntime copy gets that constant as float32
(`float32_resize_constants`), nothing else changes. TensorRT-RTX is given ModelOpt's graphs as
written.
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

from measure_int8 import BLOCK, describe  # noqa: E402
from measure_mixed import export, models  # noqa: E402

from segdeploy.precision import heldout  # noqa: E402
from segdeploy.precision.evalset import miou_percent, paired_interval  # noqa: E402

MODELOPT = {"ModelOpt entropy (its default)": "modelopt-entropy", "ModelOpt max": "modelopt-max"}
NNCF = ("nncf", "nncf-8bit-first")  # its defaults; the same with its overflow fix (7-bit first layer) off


def build_segdeploy(deploy: Path, calib_size: int) -> dict[str, Path]:
    """`segdeploy build -p int8` for onnxruntime and `--backend tensorrt --graph-only`, defaults otherwise."""
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.manifest import Manifest

    for backend in ("onnxruntime", "tensorrt"):
        build_artifacts(deploy, ["int8"], backend, BuildOptions(calib=CAMVID / "train", calib_size=calib_size,
                                                                graph_only=backend == "tensorrt"),
                        step=lambda m: print(f"  {m}", flush=True))
    manifest = Manifest.load(deploy)
    return {"segdeploy ORT graph": manifest.verify("onnx-int8-ort"), "segdeploy TRT graph": manifest.verify("onnx-int8-trt")}


def write_batches(manifest, frames: heldout.Frames, held_out, work: Path) -> tuple[Path, Path]:
    """The calibration and held-out inputs, preprocessed by segdeploy, for the peers."""
    from segdeploy.precision.calibration import CalibrationSet, reader_for

    reader = reader_for(manifest, CalibrationSet(frames.calibration[0].parent, frames.calibration, len(frames.calibration)))
    calib_path, eval_path = work / "calib.npy", work / "eval.npy"
    np.save(calib_path, np.concatenate([reader.feed(i)[manifest.input.name] for i in range(len(reader))]))
    np.save(eval_path, np.concatenate([b.inputs for b in held_out.batches]).astype(np.float32))
    return calib_path, eval_path


def run_peers(fp32: Path, calib: Path, images: Path, out: Path, ort_int8: Path, iterations: int) -> None:
    if not PEERS_PYTHON.is_file():
        sys.exit(f"no {PEERS_PYTHON}: run `bash scripts/setup_peers.sh` first")
    subprocess.run([str(PEERS_PYTHON), str(REPO / "scripts" / "peers" / "modelopt_nncf.py"), "--fp32", str(fp32), "--calib", str(calib),
                    "--eval", str(images), "--out", str(out), "--openvino", f"segdeploy-ort-openvino={ort_int8}",
                    "--iterations", str(iterations)], check=True)


def float32_resize_constants(graph: Path, out: Path) -> Path:
    """A copy of `graph` whose FP16 constants read as Resize roi/scales are float32 (see the docstring)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    resize_inputs = {name for n in model.graph.node if n.op_type == "Resize" for name in n.input[1:3] if name}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in resize_inputs:
            value = node.attribute[0].t
            if value.data_type == onnx.TensorProto.FLOAT16:
                value.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(value).astype(np.float32), value.name))
    for init in model.graph.initializer:
        if init.name in resize_inputs and init.data_type == onnx.TensorProto.FLOAT16:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    onnx.save(model, str(out))
    return out


def trt_rtx_builds(graph: Path, work: Path) -> str:
    """'yes (N s)' or the reason TensorRT-RTX gives (ahead-of-time build on the CPU)."""
    from segdeploy.backends.tensorrt.builder import EngineOptions, build_engine
    from segdeploy.errors import SegdeployError

    try:
        record = build_engine(graph, work / f"{graph.stem}.engine", precision="int8", profile={}, options=EngineOptions())
    except SegdeployError as exc:
        return f"no: {str(exc)[:160]}"
    return f"yes ({record['build_seconds']:.0f} s)"


def ort_latency(graphs: dict[str, Path], feed: dict, iterations: int) -> dict[str, float]:
    """Median ms of one inference of each graph in onnxruntime, timed interleaved."""
    from segdeploy.backends.onnxruntime import OrtRunner
    from segdeploy.timing import summarize, time_interleaved

    with contextlib.ExitStack() as stack:
        runners = {name: stack.enter_context(OrtRunner(path)) for name, path in graphs.items()}
        samples = time_interleaved({n: (lambda r=r: r.infer(feed)) for n, r in runners.items()}, rounds=5, warmup=5,
                                   iterations=iterations)
    return {name: summarize(s).median for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per graph (interleaved)")
    parser.add_argument("--skip-peers", action="store_true", help="reuse the peers' outputs already in --work/peers[-choice]")
    parser.add_argument("--frames", choices=("val", "choice"), default="val",
                        help="score on the held-out val frames (default) or on the 267 choice frames (train frames "
                             "calibration did not use: where segdeploy's defaults were chosen)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from segdeploy.manifest import Manifest

    args.aspp_weights = args.segnet_weights = ""  # models() names them; only camvid is used here
    deploy = export("camvid", models(args)["camvid"], args.work)
    manifest = Manifest.load(deploy)
    frames = heldout.split_frames(CAMVID, args.calib_size)
    held_out = (heldout.frame_set(manifest, CAMVID, "val", frames.confirmation, "held-out") if args.frames == "val"
                else heldout.frame_set(manifest, CAMVID, "train", frames.choice, "choice"))
    graphs = {"FP32": manifest.verify("onnx-fp32"), **build_segdeploy(deploy, args.calib_size)}
    peers = args.work / ("peers" if args.frames == "val" else "peers-choice")
    if not args.skip_peers:
        calib, images = write_batches(manifest, frames, held_out, args.work)
        run_peers(graphs["FP32"], calib, images, peers, graphs["segdeploy ORT graph"], args.iterations)
    builds = {name: peers / f"{stem}.onnx" for name, stem in MODELOPT.items()}
    graphs.update({name: float32_resize_constants(path, args.work / f"{path.stem}-ort.onnx") for name, path in builds.items()})
    builds["segdeploy TRT graph"] = graphs["segdeploy TRT graph"]
    print_table(manifest, graphs, held_out, peers, builds, args)


def print_table(manifest, graphs: dict[str, Path], held_out, peers: Path, builds: dict[str, Path], args) -> None:
    """The side-by-side table (see the module docstring)."""
    from segdeploy.backends.onnxruntime import OrtRunner
    from segdeploy.evaluation.engine import graph_predictor

    with contextlib.ExitStack() as stack:
        runners = {name: stack.enter_context(OrtRunner(path)) for name, path in graphs.items()}
        scored = heldout.score(held_out, {n: graph_predictor(r, held_out.spec) for n, r in runners.items()}, reference="FP32")
    ov_maps = {name: np.load(peers / f"maps-{name}.npy") for name in ("fp32-openvino", *NNCF, "segdeploy-ort-openvino")}
    scored.update(heldout.score(held_out, {n: heldout.maps_predictor(m) for n, m in ov_maps.items()}, reference="fp32-openvino"))
    ort_ms = ort_latency(graphs, held_out.feed(0), args.iterations)
    ov_ms = json.loads((peers / "openvino-latency.json").read_text())["median_ms"]
    rows = [("segdeploy ORT graph", "onnxruntime", ort_ms), ("segdeploy TRT graph", "onnxruntime", ort_ms),
            *((name, "onnxruntime", ort_ms) for name in MODELOPT), *((name, "OpenVINO", ov_ms) for name in NNCF),
            ("segdeploy-ort-openvino", "OpenVINO", ov_ms)]
    fp32_ort, fp32_ov = (miou_percent(scored[n][0].sum(axis=0), held_out.evaluated) for n in ("FP32", "fp32-openvino"))
    print(f"\n{held_out.description}: {held_out.images} frames; FP32 mIoU {fp32_ort:.2f} (onnxruntime), {fp32_ov:.2f} (OpenVINO)\n")
    print("| INT8 graph | runs in | ΔmIoU ± s.e. [95 % interval] | agreement with FP32 % | TensorRT-RTX builds | latency / FP32 |")
    print("|---|---|---|---|---|---|")
    for name, runtime, latency in rows:
        reference = "FP32" if runtime == "onnxruntime" else "fp32-openvino"
        delta = describe(paired_interval(scored[reference][0], scored[name][0], BLOCK, evaluated=held_out.evaluated))
        built = trt_rtx_builds(builds[name], args.work) if name in builds else "–"
        print(f"| {name} | {runtime} | {delta} | {scored[name][1]:.2f} | {built} | {latency[name] / latency[reference]:.2f}× |")
    peer_counts = {name: scored[name][0] for name in (*MODELOPT, *NNCF)}
    for ours in ("segdeploy ORT graph", "segdeploy TRT graph"):  # paired: ours − peer, on the same frames
        cells = [f"{peer} {describe(paired_interval(counts, scored[ours][0], BLOCK, evaluated=held_out.evaluated))}"
                 for peer, counts in peer_counts.items()]
        print(f"{ours} − peer (mIoU, paired): " + "; ".join(cells))
    print(f"\nmedian ms: onnxruntime {json.dumps({k: round(v, 2) for k, v in ort_ms.items()})}; "
          f"OpenVINO {json.dumps({k: round(v, 2) for k, v in ov_ms.items()})}")
    print(f"versions: {(peers / 'versions.json').read_text()}")


if __name__ == "__main__":
    main()
