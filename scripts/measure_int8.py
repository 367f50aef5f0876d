#!/usr/bin/env python
"""INT8 accuracy by configuration, chosen on one set of frames and confirmed on another (issue #13).

    python scripts/measure_int8.py --work /tmp/int8 [--model camvid] [--targets onnxruntime,tensorrt]
        [--methods minmax,entropy,percentile:99.99] [--bias off,weights,activations] [--calib-size 100]

Frames (see `segdeploy.precision.heldout`): CamVid — calibration = 100 train frames spread evenly
(what `build --calib ../shared/camvid/train` picks), choice = the 267 other train frames,
confirmation = the 101 val frames. Models trained on the shipped calib/ (demo, aspp, segnet) —
calibration = calib/'s train split, confirmation = its val split (40); nothing is chosen on them.

For every target × calibration method × bias-correction mode the INT8 graph is made exactly as
`segdeploy build` makes it (`Int8Maker.quantize`), run in onnxruntime on the CPU, and scored per
image against the labels; the table gives ΔmIoU vs the FP32 graph on each frame set with its
paired bootstrap standard error and 95 % interval. Per-image counts are cached under --work, so
a rerun only measures what is new. `--pick` prints, per target, the configuration that is best on
the choice frames and its figure on the confirmation frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

from segdeploy.precision import heldout  # noqa: E402

MODELS = {
    "camvid": dict(source="lraspp_mobilenet_v3_large", weights=SHARED / "models" / "camvid_lraspp_mbv3.pth", num_classes=11,
                   shape=(1, 3, 240, 320), kwargs={}, classes=SHARED / "camvid" / "classes.json"),
    "demo": dict(source="unet", weights=REPO / "calib" / "demo" / "best.pth", num_classes=6, shape=(1, 3, 96, 128),
                 kwargs={"width": 0.125}, classes=REPO / "calib" / "classes.json"),
    "aspp": dict(source="aspp", weights=None, num_classes=6, shape=(1, 3, 96, 128), kwargs={"width": 0.5},
                 classes=REPO / "calib" / "classes.json"),
    "segnet": dict(source="segnet", weights=None, num_classes=6, shape=(1, 3, 96, 128), kwargs={"width": 0.25},
                   classes=REPO / "calib" / "classes.json"),
}


def export(name: str, spec: dict, work: Path, weights: Path | None) -> Path:
    from segdeploy.export import ExportRequest, export_model

    out = work / name / "deploy"
    if not (out / "manifest.json").is_file():
        export_model(ExportRequest(source=spec["source"], out_dir=out, weights=weights or spec["weights"],
                                   num_classes=spec["num_classes"], input_shape=spec["shape"], model_kwargs=spec["kwargs"],
                                   classes_file=spec["classes"]))
    return out


def frame_sets(name: str, calib_size: int):
    """(calibration images, {set name: (dataset root, split, stems)})."""
    from segdeploy.data import open_dataset

    if name == "camvid":
        frames = heldout.split_frames(SHARED / "camvid", calib_size)
        root = SHARED / "camvid"
        return frames.calibration, {"choice": (root, "train", frames.choice), "confirm": (root, "val", frames.confirmation)}
    root = REPO / "calib"
    train = open_dataset(root, split="train")
    calib = tuple(path for _, path, _ in train.items)
    confirm = tuple(stem for stem, _, _ in open_dataset(root, split="val").items)
    return calib, {"confirm": (root, "val", confirm)}


def configurations(args) -> list[dict]:
    out = []
    for target in args.targets.split(","):
        for method in args.methods.split(","):
            name, _, pct = method.partition(":")
            for bias in args.bias.split(","):
                for tail in args.tail.split(","):
                    out.append({"target": target, "method": name, "percentile": float(pct or 99.99), "bias": bias,
                                "tail": tail, "key": f"{target}.{method.replace(':', '')}.{bias}.tail-{tail}"})
    return out


def make_graph(maker, config: dict, out: Path) -> dict:
    """The graph `build` makes for this configuration; target "onnxruntime-7bit" is the onnxruntime
    target as a CPU without VNNI gets it (reduce_range: 7-bit weights)."""
    from dataclasses import replace

    from segdeploy.precision.quantize import target_for

    maker.options.percentile = config["percentile"]
    maker.options.bias_correction = config["bias"] != "off"
    maker.options.bias_correction_mode = config["bias"] if config["bias"] != "off" else "activations"
    maker.options.float_tail = config["tail"] == "float"
    name = config["target"].removesuffix("-7bit")
    target = replace(target_for(name), reduce_range=True) if config["target"].endswith("-7bit") else target_for(name)
    return maker.quantize(target, out, config["method"])


def measure(name: str, args) -> list[dict]:
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import CalibrationSet
    from segdeploy.precision.graphs import Int8Maker, QuantOptions

    weights = {"aspp": args.aspp_weights, "segnet": args.segnet_weights}.get(name)
    deploy = export(name, MODELS[name], args.work, Path(weights) if weights else None)
    manifest = Manifest.load(deploy)
    calib_images, sets = frame_sets(name, args.calib_size)
    calib = CalibrationSet(calib_images[0].parent, tuple(calib_images), len(calib_images))
    cache = args.work / name / "counts"
    cache.mkdir(parents=True, exist_ok=True)
    scorers: dict = {}

    def counts(set_name: str, key: str, graph: Path) -> np.ndarray:
        path = cache / f"{key}.{set_name}.npy"
        if not path.is_file():
            if set_name not in scorers:
                scorers[set_name] = heldout.FrameScorer(manifest, *sets[set_name])
            np.save(path, scorers[set_name].counts(graph))
        return np.load(path)

    fp32 = manifest.verify("onnx-fp32")
    reference = {s: counts(s, "fp32", fp32) for s in sets}
    maker = Int8Maker(manifest, calib, QuantOptions(cache_dir=args.work / name / "ranges"), step=lambda m: print(f"  {m}", flush=True))
    rows = []
    try:
        for config in configurations(args):
            graph = args.work / name / f"{config['key']}.onnx"
            if not all((cache / f"{config['key']}.{s}.npy").is_file() for s in sets):
                print(f"{name}: {config['key']}", flush=True)
                make_graph(maker, config, graph)
            row = {"model": name, **config, "fp32": {s: heldout.miou(reference[s]) for s in sets},
                   "counts": {s: str(cache / f"{config['key']}.{s}.npy") for s in sets}}
            for s in sets:
                row[s] = heldout.paired_delta(reference[s], counts(s, config["key"], graph), block=args.block)
            if "choice" in sets:  # CamVid train holds three sequences; val is one of them (0016E5)
                row["choice_by_sequence"] = by_sequence(sets["choice"][2], reference["choice"], counts("choice", config["key"], graph))
            graph.unlink(missing_ok=True)
            rows.append(row)
            print(table_row(row, sets), flush=True)
    finally:
        maker.close()
    return rows


def by_sequence(stems, reference: np.ndarray, candidate: np.ndarray) -> dict:
    """ΔmIoU per video sequence (the stem's prefix before '_')."""
    groups: dict[str, list[int]] = {}
    for index, stem in enumerate(stems):
        groups.setdefault(stem.split("_")[0], []).append(index)
    return {seq: heldout.paired_delta(reference[idx], candidate[idx], resamples=200) for seq, idx in groups.items()}


def table_row(row: dict, sets) -> str:
    cells = [row["model"], row["target"], row["method"] + (f" {row['percentile']:g}" if row["method"] == "percentile" else ""),
             row["bias"], row["tail"]] + [heldout.describe(row[s]) for s in sets]
    return "| " + " | ".join(cells) + " |"


def pick(rows: list[dict]) -> None:
    """Per model and target, the configuration best on the choice frames, and how it does on the confirmation frames."""
    for (model, target) in dict.fromkeys((r["model"], r["target"]) for r in rows):
        mine = [r for r in rows if r["model"] == model and r["target"] == target and "choice" in r]
        if not mine:
            continue
        best = max(mine, key=lambda r: r["choice"]["delta"])
        sequences = "; ".join(f"{seq} ({d['images']}) {heldout.describe(d)}" for seq, d in best["choice_by_sequence"].items())
        print(f"{model} {target}: best on choice frames = {best['method']} {best['percentile'] if best['method'] == 'percentile' else ''}"
              f" bias {best['bias']} tail {best['tail']}: choice {heldout.describe(best['choice'])}, confirmation {heldout.describe(best['confirm'])}\n"
              f"  choice frames by sequence: {sequences}")


def effects(rows: list[dict]) -> None:
    """Paired effect of one change with everything else equal: bias correction (weights vs off)
    and the float logits tail (float vs int8), per set of frames."""
    index = {(r["model"], r["target"], r["method"], r["percentile"], r["bias"], r["tail"]): r for r in rows}
    changes = {"bias correction weights − off": (4, "off", "weights"), "logits tail float − int8": (5, "int8", "float")}
    for label, (field, before, after) in changes.items():
        for key, row in index.items():
            if key[field] != before:
                continue
            other = index.get(key[:field] + (after,) + key[field + 1:])
            if other is None:
                continue
            cells = [f"{s} {heldout.describe(heldout.paired_delta(np.load(row['counts'][s]), np.load(other['counts'][s])))}"
                     for s in row["counts"]]
            print(f"{label}: {key[0]} {key[1]} {key[2]}{' ' + format(key[3], 'g') if key[2] == 'percentile' else ''}: {'; '.join(cells)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="camvid", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--targets", default="onnxruntime,tensorrt")
    parser.add_argument("--methods", default="minmax,entropy,percentile:99.9,percentile:99.99,percentile:99.999")
    parser.add_argument("--bias", default="off,weights,activations")
    parser.add_argument("--tail", default="float", help="logits tail: float (precision.float_nodes) and/or int8, comma-separated")
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--block", type=int, default=1, help="bootstrap block of consecutive frames")
    parser.add_argument("--aspp-weights", help="checkpoint from scripts/train.py --model aspp (see README)")
    parser.add_argument("--segnet-weights", help="checkpoint from scripts/train.py --model segnet (see README)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for name in args.model.split(","):
        sets = ["choice", "confirm"] if name == "camvid" else ["confirm"]
        print(f"| model | target | method | bias correction | logits tail | {' | '.join(f'ΔmIoU {s}' for s in sets)} |")
        rows += measure(name, args)
    pick(rows)
    effects(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
