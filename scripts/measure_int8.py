#!/usr/bin/env python
"""INT8 accuracy by configuration: chosen on one set of frames, reported on another (issue 13).

    python scripts/measure_int8.py --work /tmp/int8 [--model camvid,demo,aspp,segnet]
        [--targets onnxruntime,tensorrt] [--methods minmax,entropy,percentile:99.99]
        [--bias off,weights,activations,weights:2] [--tail float,int8] [--rounding nearest,gptq] [--weight-bits 8,7]
        [--old-default] [--json rows.json]

Frames (`segdeploy.precision.heldout`): camvid — calibration = 100 CamVid train frames spread
evenly (exactly those `build --calib ../shared/camvid/train` reads), choice = the other 267 train
frames, confirmation = the 101 val frames. Models trained on calib/ (demo; aspp and segnet from
`scripts/train.py`, see scripts/measure_mixed.py) — calibration = calib/'s train split,
confirmation = its val split; nothing is chosen on them.

Bias correction: off, weights or activations (every layer corrected), weights:2 (a layer is left
alone when its shift reaches 2× its bias or its bias has a 0: NNCF's rule, `build`'s default).
Each configuration (target × calibration method × bias-correction mode × logits tail × weight
rounding × weight bits: 7 is `build --reduce-range`, onnxruntime's graph only) is made
exactly as `segdeploy build` makes it (`Int8Maker.quantize`), run in onnxruntime on the CPU and
scored per image against the labels; printed: ΔmIoU (INT8 − FP32, points) on each frame set with
the paired circular block-bootstrap standard error and 95 % interval (`evalset.paired_interval`).
`--old-default` adds main's former default (minmax, no bias correction, logits tail INT8).
Per-image counts are cached under --work, so a rerun measures only what is new. Then, per model
and target, the configuration best on the choice frames, and the paired effect of each change
(bias correction, float tail, GPTQ rounding) with everything else equal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from measure_mixed import export, models  # noqa: E402

from segdeploy.precision import heldout  # noqa: E402
from segdeploy.precision.evalset import miou_percent, paired_interval  # noqa: E402

BLOCK = 10  # consecutive frames resampled together (precision.confirm.SPLIT_BLOCK: video frames are alike)
OLD_DEFAULT = {"method": "minmax", "percentile": None, "bias": "off", "tail": "int8", "rounding": "nearest", "bits": 8}


def frame_sets(name: str, manifest, calib_size: int) -> tuple[tuple[Path, ...], dict]:
    """(calibration images, {set name: EvalSet}) for `name` (see the module docstring)."""
    from segdeploy.data import open_dataset

    if name == "camvid":
        root = REPO.parent / "shared" / "camvid"
        frames = heldout.split_frames(root, calib_size)
        return frames.calibration, {"choice": heldout.frame_set(manifest, root, "train", frames.choice, "choice"),
                                    "confirm": heldout.frame_set(manifest, root, "val", frames.confirmation, "confirmation")}
    root = REPO / "calib"
    calib = tuple(path for _, path, _ in open_dataset(root, split="train").items)
    val = [stem for stem, _, _ in open_dataset(root, split="val").items]
    return calib, {"confirm": heldout.frame_set(manifest, root, "val", val, "confirmation")}


def configurations(args) -> list[dict]:
    """Every target × method × bias × tail asked for (and the old default with --old-default)."""
    found = []
    for target in args.targets.split(","):
        variants = []
        for method in args.methods.split(","):
            name, _, percentile = method.partition(":")
            variants += [{"method": name, "percentile": float(percentile) if percentile else None, "bias": bias, "tail": tail,
                          "rounding": rounding, "bits": int(bits)}
                         for bias in args.bias.split(",") for tail in args.tail.split(",") for rounding in args.rounding.split(",")
                         for bits in args.weight_bits.split(",") if target == "onnxruntime" or bits == "8"]
        if args.old_default:
            variants.append(dict(OLD_DEFAULT))
        for variant in variants:
            pct = f"{variant['percentile']:g}" if variant["percentile"] else ""
            rounded = ".round-gptq" if variant["rounding"] == "gptq" else ""  # nearest: the keys of runs before GPTQ existed
            bits = ".w7" if variant["bits"] == 7 else ""  # 8: the keys of runs before --weight-bits existed
            found.append({"target": target, **variant,
                          "key": f"{target}.{variant['method']}{pct}.{variant['bias']}.tail-{variant['tail']}{rounded}{bits}"})
    return list({c["key"]: c for c in found}.values())


def make_graph(maker, config: dict, out: Path) -> None:
    """The graph `build` makes with this configuration's options."""
    options = maker.options
    options.percentile = config["percentile"]
    mode, _, threshold = config["bias"].partition(":")  # weights:2 — NNCF's threshold rule; weights: every layer
    options.bias_correction = mode != "off"
    options.bias_correction_mode = mode if mode != "off" else options.bias_correction_mode
    options.bias_correction_threshold = float(threshold) if threshold else float("inf")
    options.float_tail = config["tail"] == "float"
    options.weight_rounding = config["rounding"]
    options.reduce_range = config["bits"] == 7
    maker.quantize(config["target"], out, method=config["method"])


def measure(name: str, spec: dict, args) -> list[dict]:
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import CalibrationSet
    from segdeploy.precision.graphs import Int8Maker, QuantOptions

    manifest = Manifest.load(export(name, spec, args.work))
    calib_images, sets = frame_sets(name, manifest, args.calib_size)
    calib = CalibrationSet(calib_images[0].parent, tuple(calib_images), len(calib_images))
    cache = args.work / f"{name}-counts"
    cache.mkdir(parents=True, exist_ok=True)
    reference = {s: part.reference_counts for s, part in sets.items()}
    print(f"{name}: FP32 mIoU " + ", ".join(f"{s} {part.reference_miou:.2f} ({part.images} frames)" for s, part in sets.items()),
          flush=True)
    maker = Int8Maker(manifest, calib, QuantOptions(cache_dir=args.work / f"{name}-ranges"),
                      step=lambda m: print(f"  {m}", flush=True))
    rows = []
    try:
        for config in configurations(args):
            paths = {s: cache / f"{config['key']}.{s}.npy" for s in sets}
            if not all(p.is_file() for p in paths.values()):
                print(f"{name}: {config['key']}", flush=True)
                graph = args.work / f"{name}-{config['key']}.onnx"
                make_graph(maker, config, graph)
                for s, part in sets.items():
                    np.save(paths[s], part.counts(graph)[1])
                graph.unlink()
            row = {"model": name, **config, "counts": {s: str(p) for s, p in paths.items()},
                   "fp32_miou": {s: miou_percent(reference[s].sum(axis=0), sets[s].evaluated) for s in sets}}
            for s in sets:
                row[s] = paired_interval(reference[s], np.load(paths[s]), args.block, evaluated=sets[s].evaluated)
            rows.append(row)
            print(table_row(row, list(sets)), flush=True)
    finally:
        maker.close()
    return rows


def describe(found: dict) -> str:
    """ΔmIoU (INT8 − FP32) ± s.e. [95 % interval], from a drop interval."""
    return f"{-found['drop']:+.2f} ± {found['standard_error']:.2f} [{-found['high']:+.2f}, {-found['low']:+.2f}]"


def _method(row: dict) -> str:
    return row["method"] + (f" {row['percentile']:g}" if row["percentile"] else "")


def table_row(row: dict, sets: list[str]) -> str:
    rounding = row["rounding"] + (", 7-bit" if row.get("bits") == 7 else "")
    cells = [row["model"], row["target"], _method(row), row["bias"], row["tail"], rounding, *(describe(row[s]) for s in sets)]
    return "| " + " | ".join(cells) + " |"


def pick(rows: list[dict]) -> None:
    """Per model and target: the configuration best on the choice frames, and its confirmation figure."""
    for model, target in dict.fromkeys((r["model"], r["target"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["target"]) == (model, target) and "choice" in r]
        if mine:
            best = min(mine, key=lambda r: r["choice"]["drop"])
            print(f"{model} {target}: best on the choice frames = {_method(best)}, bias {best['bias']}, tail {best['tail']}, "
                  f"rounding {best['rounding']}, {best.get('bits', 8)}-bit weights: "
                  f"choice {describe(best['choice'])}; confirmation {describe(best['confirm'])}")


def effects(rows: list[dict], block: int) -> None:
    """The paired effect of one change (bias correction, float tail, GPTQ rounding) with everything else equal."""
    index = {(r["model"], r["target"], r["method"], r["percentile"], r["bias"], r["tail"], r["rounding"], r.get("bits", 8)): r
             for r in rows}
    changes = {"bias weights − off": (4, "off", "weights"), "bias activations − off": (4, "off", "activations"),
               "bias weights:2 − weights": (4, "weights", "weights:2"),
               "tail float − int8": (5, "int8", "float"), "rounding gptq − nearest": (6, "nearest", "gptq"),
               "weights 7 − 8 bits": (7, 8, 7)}
    for label, (field, before, after) in changes.items():
        for key, row in index.items():
            other = index.get(key[:field] + (after,) + key[field + 1:]) if key[field] == before else None
            if other is None:
                continue
            cells = [f"{s} {describe(paired_interval(np.load(row['counts'][s]), np.load(other['counts'][s]), block))}"
                     for s in row["counts"]]
            print(f"{label}: {key[0]} {key[1]} {_method(row)} {'/'.join(map(str, key[4:8]))}: {'; '.join(cells)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="camvid", help="comma-separated: camvid, demo, aspp, segnet")
    parser.add_argument("--targets", default="onnxruntime,tensorrt")
    parser.add_argument("--methods", default="minmax,entropy,percentile:99.9,percentile:99.99,percentile:99.999")
    parser.add_argument("--bias", default="off,weights,activations")
    parser.add_argument("--tail", default="float", help="logits tail: float and/or int8")
    parser.add_argument("--rounding", default="nearest,gptq", help="weight rounding: nearest and/or gptq")
    parser.add_argument("--weight-bits", default="8", help="8 and/or 7 (build --reduce-range; onnxruntime's graph only)")
    parser.add_argument("--old-default", action="store_true", help="also main's former default (minmax, no correction, tail INT8)")
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--block", type=int, default=BLOCK, help="bootstrap block of consecutive frames")
    parser.add_argument("--aspp-weights", default="/tmp/m-int8acc/runs/aspp/best.pth")
    parser.add_argument("--segnet-weights", default="/tmp/m-int8acc/runs/segnet/best.pth")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    specs = models(args)
    rows = []
    for name in args.model.split(","):
        sets = "choice | confirmation" if name == "camvid" else "confirmation"
        print(f"| model | target | method | bias correction | logits tail | weight rounding | ΔmIoU {sets} |")
        rows += measure(name, specs[name], args)
    pick(rows)
    effects(rows, args.block)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
