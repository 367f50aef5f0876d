#!/usr/bin/env python
"""How few calibration images each INT8 method tolerates: the evidence for `build`'s minimum.

    python scripts/measure_calib_size.py --work /tmp/int8 [--sizes 1,2,4,8,16,32,100] [--repeats 3]
        [--targets onnxruntime,tensorrt] [--methods default,minmax,entropy]

CamVid LR-ASPP (frames as in scripts/measure_int8.py): for each size n and repeat r, n of the 100
calibration frames (every 100/n-th, shifted by r·100/(n·repeats)) calibrate the INT8 graph of each
target with each method, everything else `build`'s defaults (bias correction, GPTQ rounding on
min(32, n) images). Each graph is scored on the 267 choice frames only — never on the val frames:
the minimum is a choice. Printed: ΔmIoU (INT8 − FP32) ± paired block-bootstrap s.e. per subset, and
the paired difference of the worst subset from the 100-frame graph. Per-image counts are cached
under --work, so a rerun measures only what is new.

Then, per target and method, the minimum `build` enforces (`precision.calibration.MIN_IMAGES`):
the smallest size from which every measured size's worst subset loses at most --tolerance mIoU
more than the 100-frame graph.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from measure_int8 import BLOCK, describe  # noqa: E402
from measure_mixed import export, models  # noqa: E402

from segdeploy.precision import heldout  # noqa: E402
from segdeploy.precision.evalset import paired_interval  # noqa: E402

CAMVID = REPO.parent / "shared" / "camvid"
POOL = 100  # the calibration frames `build --calib ../shared/camvid/train` reads


def subsets(images: tuple[Path, ...], size: int, repeats: int) -> list[tuple[Path, ...]]:
    """`repeats` disjoint-as-possible subsets of `size` frames, each spread evenly over `images`."""
    if size >= len(images):
        return [images]
    step = len(images) / size
    shifts = sorted({int(r * step / repeats) for r in range(repeats)})
    return [tuple(images[int(k * step + shift) % len(images)] for k in range(size)) for shift in shifts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--sizes", default="1,2,4,8,16,32,100")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--targets", default="onnxruntime,tensorrt")
    parser.add_argument("--methods", default="default", help="comma-separated: default (the target's), minmax, entropy, …")
    parser.add_argument("--tolerance", type=float, default=0.25, help="mIoU a worst subset may lose beyond 100 frames")
    args = parser.parse_args()
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import CalibrationSet
    from segdeploy.precision.graphs import Int8Maker, QuantOptions

    camvid = models(argparse.Namespace(aspp_weights="", segnet_weights=""))["camvid"]  # the other models' weights: unused
    manifest = Manifest.load(export("camvid", camvid, args.work))
    frames = heldout.split_frames(CAMVID, POOL)
    choice = heldout.frame_set(manifest, CAMVID, "train", frames.choice, "choice")
    reference = choice.reference_counts
    cache = args.work / "calib-size-counts"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"scored on {choice.images} choice frames; FP32 mIoU {choice.reference_miou:.2f}", flush=True)
    print("| target | method | images | ΔmIoU per subset (choice frames) | worst subset − 100 frames |\n|---|---|---|---|---|")
    minima = []
    for target in args.targets.split(","):
        for method in args.methods.split(","):
            found, losses = {}, {}
            for size in sorted(map(int, args.sizes.split(",")), reverse=True):
                found[size] = []
                for index, images in enumerate(subsets(frames.calibration, size, args.repeats)):
                    path = cache / f"{target}.{method}.{size}.{index}.npy"
                    if not path.is_file():
                        calib = CalibrationSet(images[0].parent, images, len(images))
                        options = QuantOptions(method=None if method == "default" else method,
                                               cache_dir=args.work / "calib-size-ranges")
                        maker = Int8Maker(manifest, calib, options, step=lambda _: None)
                        graph = args.work / "calib-size.onnx"
                        try:
                            maker.quantize(target, graph)
                        finally:
                            maker.close()
                        np.save(path, choice.counts(graph)[1])
                        graph.unlink()
                    found[size].append(np.load(path))
                drops = [paired_interval(reference, counts, BLOCK, evaluated=choice.evaluated) for counts in found[size]]
                worst = found[size][int(np.argmax([d["drop"] for d in drops]))]
                versus = "—"
                if size != max(found):  # the worst subset against the largest set (measured first)
                    loss = paired_interval(found[max(found)][0], worst, BLOCK, evaluated=choice.evaluated)
                    losses[size], versus = loss["drop"], describe(loss)
                print(f"| {target} | {method} | {size} | {' ; '.join(describe(d) for d in drops)} | {versus} |", flush=True)
            within = [size for size in sorted(losses) if all(losses[s] <= args.tolerance for s in losses if s >= size)]
            named = QuantOptions(method=None if method == "default" else method).method_for(target)
            minima.append(f"{target} {named}: {min(within) if within else max(found)} images "
                          f"(worst subset loses ≤ {args.tolerance:g} beyond {max(found)} frames from there up)")
    print("\nminimum calibration set:\n" + "\n".join(minima))


if __name__ == "__main__":
    main()
