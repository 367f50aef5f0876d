#!/usr/bin/env python
"""Naive INT8 vs INT8 within an mIoU budget, on real trained models: the issue #8 figures.

    python scripts/measure_mixed.py --work /tmp/mixed [--budgets 0.5,0.1] [--only demo,camvid,aspp]
        [--aspp-weights /work/runs/aspp/best.pth] [--camvid-limit 50]

For each model: export (or reuse) a deploy directory under --work, then
`build --precision int8 --miou-budget B` for each budget (onnxruntime target), and print
naive ΔmIoU, the mixed graph's ΔmIoU, the layers kept in float and onnxruntime latency
(median ms, one batch, FP32 / naive INT8 / mixed). Models:

* camvid — ../shared/models/camvid_lraspp_mbv3.pth, 240x320, calibrated on 100 CamVid train
  frames, evaluated on the first --camvid-limit val frames (labels);
* demo — calib/demo (U-Net width 0.125, 96x128), calibrated on calib/, evaluated on calib/'s val split;
* aspp — a checkpoint trained with scripts/train.py on calib/ (see --aspp-weights):
  `--model aspp --model-kwargs '{"width": 0.5}' --input 96x128 --epochs 25`;
* segnet — likewise (see --segnet-weights):
  `--model segnet --model-kwargs '{"width": 0.25}' --input 96x128 --epochs 25 --threads 2`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

from segdeploy.build import BuildOptions, build_artifacts  # noqa: E402
from segdeploy.errors import SegdeployError  # noqa: E402
from segdeploy.precision.mixed import BudgetOptions  # noqa: E402


def models(args) -> dict:
    calib = REPO / "calib"
    camvid = SHARED / "camvid"
    return {
        "camvid": dict(source="lraspp_mobilenet_v3_large", weights=SHARED / "models" / "camvid_lraspp_mbv3.pth",
                       num_classes=11, shape=(1, 3, 240, 320), kwargs={}, classes=camvid / "classes.json",
                       calib=camvid / "train", eval=camvid / "val", limit=args.camvid_limit),
        "demo": dict(source="unet", weights=calib / "demo" / "best.pth", num_classes=6, shape=(1, 3, 96, 128),
                     kwargs={"width": 0.125}, classes=calib / "classes.json", calib=calib, eval=None, limit=None),
        "aspp": dict(source="aspp", weights=Path(args.aspp_weights), num_classes=6, shape=(1, 3, 96, 128),
                     kwargs={"width": 0.5}, classes=calib / "classes.json", calib=calib, eval=None, limit=None),
        "segnet": dict(source="segnet", weights=Path(args.segnet_weights), num_classes=6, shape=(1, 3, 96, 128),
                       kwargs={"width": 0.25}, classes=calib / "classes.json", calib=calib, eval=None, limit=None),
    }


def export(name: str, spec: dict, work: Path) -> Path:
    from segdeploy.export import ExportRequest, export_model

    out = work / name
    if not (out / "manifest.json").is_file():
        export_model(ExportRequest(source=spec["source"], out_dir=out, weights=spec["weights"], num_classes=spec["num_classes"],
                                   input_shape=spec["shape"], model_kwargs=spec["kwargs"], classes_file=spec["classes"]))
    return out


def measure(name: str, spec: dict, deploy: Path, budget: float) -> dict:
    scratch = deploy.parent / f"{name}-{budget}"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(deploy, scratch)
    options = BuildOptions(calib=spec["calib"], calib_size=100,
                           budget=BudgetOptions(budget, spec["eval"], spec["limit"]))
    try:
        result = build_artifacts(scratch, ["int8"], "onnxruntime", options, warn=lambda m: print(f"  warning: {m}"))
    except SegdeployError as exc:
        return {"model": name, "budget": budget, "error": str(exc)}
    return {"model": name, "budget": budget, **result.artifacts[-1]["mixed_precision"]}


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['budget']} | – | – | – | {r['error']} |"
    lat = r["latency_ms"]
    mixed = f"{lat['mixed_int8']:.2f}" if lat.get("mixed_int8") is not None else "(naive)"
    kept = ", ".join(_short(n) for n in r["kept_float"][:4]) + (" …" if len(r["kept_float"]) > 4 else "") or "none"
    count = f"{len(r['kept_float'])}/{r['quantized_nodes']}" if r["quantized_nodes"] else "0"
    se = r.get("drop_standard_error")
    se_text = f" ±{se:.2f}" if se is not None else ""
    return (f"| {r['model']} | {r['budget']} | {r['fp32_miou']:.2f} | {r['naive']['drop']:+.2f}{se_text} | {r['final']['drop']:+.2f} "
            f"| {count}: {kept} | {lat['fp32']:.2f} / {lat['naive_int8']:.2f} / {mixed} | {r['eval']['description']} |")


def held_out(name: str, spec: dict, work: Path, budgets: list[float]) -> list[str]:
    """The chosen graphs on the evaluation frames the search did not see (after --camvid-limit):
    does the layer choice generalise, or was it fitted to the evaluation set's noise?"""
    import tempfile

    from segdeploy.data import open_dataset
    from segdeploy.manifest import Manifest
    from segdeploy.precision import evalset as ev
    from segdeploy.precision.calibration import select_images
    from segdeploy.precision.graphs import Int8Maker, QuantOptions

    dataset = open_dataset(spec["eval"])
    dataset.items = dataset.items[spec["limit"]:]
    lines = []
    for budget in budgets:
        manifest = Manifest.load(work / f"{name}-{budget}")
        if "onnx-int8-ort" not in manifest.artifacts:
            continue
        evalset = ev.EvalSet.from_dataset(manifest, dataset, "held out")
        evalset.reference(manifest.verify("onnx-fp32"))
        maker = Int8Maker(manifest, select_images(spec["calib"], 100, warn=lambda _: None), QuantOptions(), lambda _: None)
        with tempfile.TemporaryDirectory() as scratch:
            naive = Path(scratch) / "naive.onnx"
            maker.quantize("onnxruntime", naive)  # the cached ranges: the same naive graph as the build's
            _, naive_drop, se = evalset.drop_with_noise(naive)
        maker.close()
        _, mixed_drop = evalset.drop(manifest.verify("onnx-int8-ort"))
        lines.append(f"| {name} | {budget} | {evalset.images} held-out frames | {naive_drop:+.2f} ±{se:.2f} | {mixed_drop:+.2f} |")
    return lines


def _short(node: str) -> str:
    """/model/backbone/backbone.0/backbone.0.0/Conv → backbone.0.0/Conv (enough to find it)."""
    return "/".join(node.split("/")[-2:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/segdeploy-mixed"))
    parser.add_argument("--budgets", default="0.5,0.1")
    parser.add_argument("--only", default="demo,aspp,segnet,camvid")
    parser.add_argument("--aspp-weights", default="/work/runs/aspp/best.pth")
    parser.add_argument("--segnet-weights", default="/work/runs/segnet/best.pth")
    parser.add_argument("--camvid-limit", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for export")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    specs = models(args)
    results = []
    for name in args.only.split(","):
        spec = specs[name]
        if not Path(spec["weights"]).is_file():
            print(f"skipping {name}: {spec['weights']} not found")
            continue
        deploy = export(name, spec, args.work)
        for budget in (float(b) for b in args.budgets.split(",")):
            results.append(measure(name, spec, deploy, budget))
            print(row(results[-1]), flush=True)
    print("\n| model | budget | FP32 mIoU | naive drop ± s.e. | mixed drop | kept in float | ORT ms fp32 / naive / mixed | eval |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))
    if "camvid" in args.only.split(",") and specs["camvid"]["limit"]:
        print("\n| model | budget | evaluated on | naive drop ± s.e. | mixed drop |\n|---|---|---|---|---|")
        for line in held_out("camvid", specs["camvid"], args.work, [float(b) for b in args.budgets.split(",")]):
            print(line)
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"full records (every layer kept, the search trace): {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
