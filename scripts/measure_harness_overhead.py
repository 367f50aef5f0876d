"""How much the latency harness adds over a bare loop of the same runtime call.

Runs an onnxruntime runner of a small exported model N times in a bare
`for` loop (one perf_counter pair around the whole loop) and through
`segdeploy.timing.time_calls`, alternating, and prints the mean per-call time of
each and the relative overhead. Usage:

    .venv/bin/python scripts/measure_harness_overhead.py [--iterations 300] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from segdeploy.backends.onnxruntime import OrtRunner
    from segdeploy.export import ExportRequest, export_model

    with tempfile.TemporaryDirectory() as tmp:
        result = export_model(ExportRequest(source="unet", out_dir=Path(tmp) / "d", num_classes=5,
                                            model_kwargs={"width": 0.125}, input_shape=(1, 3, 96, 160)))
        feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 96, 160)).astype(np.float32)}
        with OrtRunner(result.onnx_path, threads=1) as runner:
            bare, harness = _compare(lambda: runner.infer(feed), args)
    b, h = statistics.median(bare), statistics.median(harness)
    print(f"bare loop      : {b:.4f} ms/call (median of {args.rounds} rounds x {args.iterations})")
    print(f"segdeploy timer: {h:.4f} ms/call")
    print(f"overhead       : {100 * (h - b) / b:+.2f} %")


def _compare(call, args) -> tuple[list[float], list[float]]:
    """Alternate a bare loop (one clock pair around it) and the harness, `args.rounds` times."""
    from segdeploy.timing import time_calls

    bare, harness = [], []
    for _ in range(args.rounds):
        for _ in range(20):
            call()
        start = time.perf_counter()
        for _ in range(args.iterations):
            call()
        bare.append((time.perf_counter() - start) * 1000 / args.iterations)
        samples = time_calls(call, warmup=20, iterations=args.iterations)
        harness.append(sum(samples) / len(samples))
    return bare, harness


if __name__ == "__main__":
    main()
