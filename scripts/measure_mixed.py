#!/usr/bin/env python
"""Naive INT8 vs INT8 within an mIoU budget, chosen on one part of the evaluation set and confirmed on another.

    python scripts/measure_mixed.py --work /tmp/mixed [--budgets 0.5,0.2,0.1] [--only camvid,demo]
        [--split-block 10] [--workers 2] [--time-ranking 1,2]

For each model: export (or reuse) a deploy directory under --work, then
`build --precision int8 --miou-budget B --accept-unconfirmed` for each budget (onnxruntime target;
accepted so that an unconfirmed graph is still measured and recorded), and print, on the choice
part: FP32 mIoU, naive ΔmIoU ± its standard error, the mixed graph's ΔmIoU; on the confirmation
part (images the choice never saw): naive ΔmIoU, the mixed graph's ΔmIoU with its 95% interval, and
whether the budget was confirmed; then the layers kept in float and onnxruntime latency (median ms,
one batch, FP32 / naive INT8 / mixed). Models:

* camvid — ../shared/models/camvid_lraspp_mbv3.pth, 240x320, calibrated on 100 CamVid train
  frames; all 101 val frames (one sequence) split by the build into choice and confirmation parts;
* demo — calib/demo (U-Net width 0.125, 96x128), calibrated on calib/, evaluated on calib/'s val split;
* aspp / segnet — checkpoints trained with scripts/train.py on calib/ (--aspp-weights, --segnet-weights).

`--time-ranking 1,2` also times the sensitivity ranking of the camvid model with each number of
worker processes, side by side in one run (same graphs, same batches), and checks the rankings agree.
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
                       calib=camvid / "train", eval=camvid / "val", limit=None),
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


def measure(name: str, spec: dict, deploy: Path, budget: float, args) -> dict:
    scratch = deploy.parent / f"{name}-{budget}"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(deploy, scratch)
    budget_options = BudgetOptions(budget, spec["eval"], spec["limit"], split_block=args.split_block,
                                   accept_unconfirmed=True, workers=args.workers)
    options = BuildOptions(calib=spec["calib"], calib_size=100, budget=budget_options)
    try:
        result = build_artifacts(scratch, ["int8"], "onnxruntime", options, warn=lambda m: print(f"  warning: {m}"))
    except SegdeployError as exc:
        return {"model": name, "budget": budget, "error": str(exc)}
    return {"model": name, "budget": budget, **result.artifacts[-1]["mixed_precision"]}


HEADER = ("| model | budget | choice: FP32 mIoU | choice: naive drop ± s.e. | choice: mixed drop "
          "| confirmation: naive drop | confirmation: mixed drop [95% interval] | confirmed | kept in float "
          "| ORT ms fp32 / naive / mixed |\n|---|---|---|---|---|---|---|---|---|---|")


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['budget']} | – | – | – | – | – | – | {r['error']} | – |"
    lat, c = r["latency_ms"], r["confirmation"]
    mixed = f"{lat['mixed_int8']:.2f}" if lat.get("mixed_int8") is not None else "(naive)"
    kept = ", ".join(_short(n) for n in r["kept_float"][:4]) + (" …" if len(r["kept_float"]) > 4 else "") or "none"
    count = f"{len(r['kept_float'])}/{r['quantized_nodes']}" if r["quantized_nodes"] else "0"
    se = r.get("drop_standard_error")
    se_text = f" ±{se:.2f}" if se is not None else ""
    low, high = c["interval"]
    verdict = "yes" if c["confirmed"] else "**no**"
    return (f"| {r['model']} | {r['budget']} | {r['fp32_miou']:.2f} | {r['naive']['drop']:+.2f}{se_text} "
            f"| {r['final']['drop']:+.2f} | {c['naive_drop']:+.2f} | {c['drop']:+.2f} [{low:+.2f}, {high:+.2f}] | {verdict} "
            f"| {count}: {kept} | {lat['fp32']:.2f} / {lat['naive_int8']:.2f} / {mixed} |")


def time_ranking(deploy: Path, spec: dict, workers: list[int]) -> list[str]:
    """The sensitivity ranking of `deploy`'s naive INT8 graph with each number of workers, timed one
    after the other on the same graphs and batches; the rankings must be identical."""
    import tempfile
    import time

    import onnx

    from segdeploy.graph_spec import GraphSpec
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import select_images
    from segdeploy.precision.drift import check_batches
    from segdeploy.precision.graphs import Int8Maker, QuantOptions
    from segdeploy.precision.sensitivity import rank_nodes

    manifest = Manifest.load(deploy)
    calib = select_images(spec["calib"], 100, warn=lambda _: None)
    maker = Int8Maker(manifest, calib, QuantOptions(), lambda _: None)
    with tempfile.TemporaryDirectory() as scratch:
        naive = Path(scratch) / "naive.onnx"
        maker.quantize("onnxruntime", naive)
        fp32, qdq = onnx.load(str(maker.prepared())), onnx.load(str(naive))
    maker.close()
    batches, _ = check_batches(manifest, calib)
    feeds = [GraphSpec.of(manifest).feed(b) for b in batches]
    rankings, seconds = {}, {}
    for n in workers:
        start = time.perf_counter()
        rankings[n] = rank_nodes(fp32, qdq, feeds, workers=n)
        seconds[n] = time.perf_counter() - start
        print(f"  ranking with {n} worker(s): {seconds[n]:.1f} s", flush=True)
    first = workers[0]
    lines = [f"| {n} | {len(rankings[n])} | {seconds[n]:.1f} | {seconds[first] / seconds[n]:.2f} |" for n in workers]
    same = all(r == rankings[first] for r in rankings.values())
    return lines + [f"rankings identical across worker counts: {same}"]


def _short(node: str) -> str:
    """/model/backbone/backbone.0/backbone.0.0/Conv → backbone.0.0/Conv (enough to find it)."""
    return "/".join(node.split("/")[-2:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--work", type=Path, default=Path("/tmp/segdeploy-mixed"))
    parser.add_argument("--budgets", default="0.5,0.2,0.1")
    parser.add_argument("--only", default="camvid")
    parser.add_argument("--aspp-weights", default="/work/runs/aspp/best.pth")
    parser.add_argument("--segnet-weights", default="/work/runs/segnet/best.pth")
    parser.add_argument("--split-block", type=int, default=None, help="build --split-block (default: the build's)")
    parser.add_argument("--workers", type=int, default=1, help="build --workers")
    parser.add_argument("--time-ranking", default=None, help="worker counts to time the camvid ranking with, e.g. 1,2")
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
            results.append(measure(name, spec, deploy, budget, args))
            print(row(results[-1]), flush=True)
    print("\n" + HEADER)
    for r in results:
        print(row(r))
    if results and "error" not in results[0]:
        print(f"\nsplit: {results[0]['split']['rule']}; choice {results[0]['split']['choice']}, "
              f"confirmation {results[0]['split']['confirmation']}")
    if args.time_ranking:
        print("\n| workers | layers ranked | seconds | speed-up |\n|---|---|---|---|")
        for line in time_ranking(export("camvid", specs["camvid"], args.work), specs["camvid"],
                                 [int(n) for n in args.time_ranking.split(",")]):
            print(line, flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"full records (every layer kept, the search trace): {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
