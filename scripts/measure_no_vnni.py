#!/usr/bin/env python
"""INT8 OpenVINO models on x86 CPUs with and without VNNI, emulated on this one (README, *INT8 on x86 CPUs without VNNI*).

    python scripts/measure_no_vnni.py --reference FP32.xml NAME=MODEL.xml [NAME=MODEL.xml …]
        [--frames 8] [--isas AVX512_CORE_VNNI,AVX512_CORE,AVX2]

oneDNN's ONEDNN_MAX_CPU_ISA, which OpenVINO's CPU plugin honours, limits its kernels to an older
instruction set: AVX2 and AVX512_CORE have no VNNI, so their INT8 kernels add pairs of U8×S8
products in saturating 16-bit lanes. Each model runs in its own process per instruction set (the
variable is read at start-up) on --frames CamVid val frames (calib/ val images without CamVid),
preprocessed as the reference's deploy directory says; the FP32 reference runs on this CPU's own
instruction set. Printed per model and instruction set: the mean absolute logit error against
FP32, argmax agreement with FP32, and the largest logit change against the same model on this
CPU's own instruction set (0: bit-identical).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

RUN = r"""
import sys
import numpy as np
from segdeploy.backends.openvino import compile_config, core
model, inputs, out = sys.argv[1:4]
compiled = core().compile_model(model, "CPU", compile_config("int8", threads=2))  # as an INT8 artifact: FP32 hint
np.save(out, np.stack([compiled(x[None])[0] for x in np.load(inputs)]))
"""


def frames(reference: Path, count: int, scratch: Path) -> Path:
    """`count` val frames preprocessed for the model whose deploy directory holds `reference` (.npy)."""
    from segdeploy.manifest import Manifest
    from segdeploy.precision.calibration import reader_for, select_images

    camvid = SHARED / "camvid" / "val" / "images"
    folder = camvid if camvid.is_dir() else REPO / "calib"
    reader = reader_for(Manifest.load(reference.parent), select_images(folder, count))
    path = scratch / "inputs.npy"
    np.save(path, np.concatenate([next(iter(reader.feed(i).values())) for i in range(len(reader))]))
    return path


def run(model: Path, inputs: Path, scratch: Path, isa: str | None) -> np.ndarray:
    out = scratch / "out.npy"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"} | {"PYTHONPATH": str(REPO)} \
        | ({"ONEDNN_MAX_CPU_ISA": isa} if isa else {})
    subprocess.run([sys.executable, "-c", RUN, str(model), str(inputs), str(out)], env=env, check=True)
    return np.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="the FP32 IR (model.fp32.ov.xml of a deploy directory)")
    parser.add_argument("models", nargs="+", help="NAME=PATH of an INT8 IR or ONNX graph")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--isas", default="AVX512_CORE_VNNI,AVX512_CORE,AVX2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="no-vnni-") as tmp:
        scratch = Path(tmp)
        inputs = frames(args.reference, args.frames, scratch)
        reference = run(args.reference, inputs, scratch, None)
        print(f"| model | instruction set | mean abs logit error vs FP32 | argmax agreement with FP32 % | max logit change vs this CPU's own |")
        print("|---|---|---|---|---|")
        for item in args.models:
            name, _, path = item.partition("=")
            native = run(Path(path), inputs, scratch, None)
            for isa in [None, *args.isas.split(",")]:
                out = native if isa is None else run(Path(path), inputs, scratch, isa)
                agree = 100 * float(np.mean(out.argmax(-3) == reference.argmax(-3)))
                print(f"| {name} | {isa or 'native'} | {np.abs(out - reference).mean():.4f} | {agree:.2f} | "
                      f"{np.abs(out - native).max():.4f} |", flush=True)


if __name__ == "__main__":
    main()
