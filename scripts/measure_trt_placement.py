#!/usr/bin/env python
"""TensorRT INT8 graphs, old placement (onnxruntime's) vs new (TensorRT's rules): accuracy and builds.

    python scripts/measure_trt_placement.py DEPLOY_DIR... [--calib DIR] [--calib-size 100]
        [--eval DIR] [--eval-limit N] [--method minmax] [--no-trt] [--json OUT]
    python scripts/measure_trt_placement.py --export-zoo /tmp/zoo [--width 0.125] [--shape 1x3x96x128]

For each exported deploy directory: calibrate once (the ranges are cached and shared), make the
TensorRT-target INT8 graph with onnxruntime's placement (what segdeploy made before) and with the
TensorRT-rule placement (`precision.trt_placement`), run both and the FP32 graph in onnxruntime
on evaluation images that calibration did not use, and print the argmax agreement with FP32
(and mIoU against labels when --eval is a labelled dataset), plus whether TensorRT-RTX builds
an engine from each graph. Evaluation images: --eval (first --eval-limit images), else the
calibration folder's val images not used for calibration (`precision.compare.evaluation_set`).
`--export-zoo DIR` exports every registry model at a small width and input into DIR first
(random weights, seed 0) and measures those.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segdeploy.errors import SegdeployError  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deploy_dirs", nargs="*", type=Path)
    parser.add_argument("--calib", type=Path, default=REPO / "calib")
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--eval", type=Path, help="evaluation images or labelled dataset (default: held-out calib val)")
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--method", default="minmax")
    parser.add_argument("--no-trt", action="store_true", help="skip the TensorRT-RTX builds")
    parser.add_argument("--no-labels", action="store_true", help="agreement only (untrained models: mIoU means nothing)")
    parser.add_argument("--export-zoo", type=Path, help="export every registry model here first")
    parser.add_argument("--width", type=float, default=0.125, help="width multiplier of exported zoo models")
    parser.add_argument("--shape", default="1x3x96x128", help="input shape of exported zoo models")
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--json", type=Path, help="write the rows here too")
    return parser.parse_args(argv)


def export_zoo(root: Path, width: float, shape: tuple[int, ...], num_classes: int) -> list[Path]:
    """Every registry model (zoo builders at `width`, torchvision's as they are), exported once."""
    import inspect

    from segdeploy.export import ExportRequest, export_model
    from segdeploy.models import list_specs

    dirs = []
    for spec in list_specs():
        out = root / spec.name
        if not (out / "manifest.json").is_file():
            kwargs = {"width": width} if "width" in inspect.signature(spec.builder).parameters else {}
            print(f"exporting {spec.name}", file=sys.stderr)
            export_model(ExportRequest(source=spec.name, out_dir=out, model_kwargs=kwargs, num_classes=num_classes,
                                       input_shape=shape, force=True))
        dirs.append(out)
    return dirs


def eval_batches(manifest, calib, args):
    """(evaluation batches, description), never the calibration images."""
    from segdeploy.precision.calibration import batch_reader
    from segdeploy.precision.compare import evaluation_set

    if args.eval is None:
        chosen, described = evaluation_set(calib)
        images = chosen.images
    else:
        from segdeploy.data import find_images

        images = tuple(p for p in find_images(args.eval) if p not in set(calib.images))[: args.eval_limit]
        described = f"{len(images)} images of {args.eval}"
    return list(batch_reader(manifest, images, "evaluation images")), described


def label_miou(manifest, graphs: dict[str, Path], fp32: Path, args) -> dict[str, float]:
    """mIoU against labels, and the bootstrap standard error of each drop, when --eval is labelled."""
    from segdeploy.precision.evalset import EvalSet

    if args.no_labels or args.eval is None or not (args.eval / "labels").is_dir():
        return {}
    if args.eval.resolve() == args.calib.resolve():  # EvalSet reads the first images, calibration ones included
        raise SegdeployError(f"--eval {args.eval} is the calibration folder: label mIoU would not be held out",
                             "evaluate on another folder (e.g. CamVid val when calibrating on train)")
    evalset = EvalSet.open(manifest, args.eval, args.eval_limit, None)
    scores = {"miou_fp32": evalset.reference(fp32)}
    for name, path in graphs.items():
        miou, _, error = evalset.drop_with_noise(path)
        scores.update({f"miou_{name}": miou, f"drop_se_{name}": error})
    return scores


def trt_builds(graph: Path, scratch: Path) -> str:
    from segdeploy.backends.tensorrt.builder import EngineOptions, build_engine

    try:
        build_engine(graph, scratch / f"{graph.stem}.engine", precision="int8", profile={}, options=EngineOptions())
        return "yes"
    except SegdeployError as exc:
        return f"no: {exc.message[:160]}"


def measure(directory: Path, args) -> dict:
    from segdeploy.manifest import Manifest
    from segdeploy.manifest.names import FP32_GRAPH
    from segdeploy.precision.calibration import reader_for, select_images
    from segdeploy.precision.drift import compare_graphs
    from segdeploy.precision.graphs import Int8Maker, QuantOptions
    from segdeploy.precision.quantize import quantize_graph, target_for

    manifest = Manifest.load(directory)
    calib = select_images(args.calib, args.calib_size, warn=lambda m: print(m, file=sys.stderr))
    maker = Int8Maker(manifest, calib, QuantOptions(method=args.method), step=lambda m: print(f"  {m}", file=sys.stderr))
    new = target_for("tensorrt")
    targets = {"old": dataclasses.replace(new, placement="onnxruntime"), "new": new}
    try:
        graphs = {}
        for name, target in targets.items():
            graphs[name] = maker.scratch() / f"{name}.int8-trt.onnx"
            quantize_graph(maker.prepared(), graphs[name], target, reader=reader_for(manifest, calib),
                           cache_path=maker.cache_path(), method=args.method)
        fp32 = manifest.verify(FP32_GRAPH.name)
        batches, described = eval_batches(manifest, calib, args)
        scores = compare_graphs(manifest, fp32, graphs, batches)
        row = {"model": directory.name, "eval": described, "calibration": f"{len(calib.images)} images of {args.calib}",
               **{f"agreement_{n}": round(100 * s["argmax_agreement"], 2) for n, s in scores.items()},
               **{k: round(v, 2) for k, v in label_miou(manifest, graphs, fp32, args).items() if v is not None}}
        if not args.no_trt:
            row.update({f"trt_{n}": trt_builds(path, maker.scratch()) for n, path in graphs.items()})
        return row
    finally:
        maker.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    dirs = list(args.deploy_dirs)
    if args.export_zoo:
        dirs += export_zoo(args.export_zoo, args.width, tuple(int(d) for d in args.shape.split("x")), args.num_classes)
    rows = []
    for directory in dirs:
        print(f"{directory}", file=sys.stderr)
        try:
            rows.append(measure(directory, args))
        except SegdeployError as exc:
            rows.append({"model": directory.name, "error": str(exc)})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    keys = ["model", "trt_old", "trt_new", "agreement_old", "agreement_new", "miou_fp32", "miou_old", "miou_new"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(k, "–"))[:40] for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
