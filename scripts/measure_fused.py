"""Segmenter per-frame time, unfused vs fused export of the same model (onnxruntime, CPU).

    python scripts/measure_fused.py DEPLOY_PLAIN DEPLOY_FUSED [--artifact onnx-fp32] [--calls 200]

Median of `--calls` calls on the first calib/ image, the two Segmenters interleaved call by call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from segdeploy import Segmenter
from segdeploy.images import read_rgb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("plain")
    parser.add_argument("fused")
    parser.add_argument("--artifact", default="onnx-fp32")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    image = read_rgb(sorted((Path(__file__).resolve().parents[1] / "calib" / "images").iterdir())[0])
    times: dict[str, list[float]] = {"plain": [], "fused": []}
    with Segmenter(args.plain, artifact=args.artifact, threads=1) as plain, \
            Segmenter(args.fused, artifact=args.artifact, threads=1) as fused:
        segs = {"plain": plain, "fused": fused}
        for seg in segs.values():
            for _ in range(10):
                seg(image)
        for _ in range(args.calls):
            for name, seg in segs.items():
                start = time.perf_counter()
                seg(image)
                times[name].append((time.perf_counter() - start) * 1000)
        agree = float(np.mean(plain(image) == fused(image)))
    print(f"image {image.shape[1]}x{image.shape[0]}, artifact {args.artifact}, {args.calls} calls, 1 thread")
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.3f} ms")
    print(f"class-map agreement: {agree:.4%}")


if __name__ == "__main__":
    main()
