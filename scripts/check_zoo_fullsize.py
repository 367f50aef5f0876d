#!/usr/bin/env python3
"""Export every zoo architecture at full width through the real pipeline (slow).

For each model: conditioned random weights (see `segdeploy.models.conditioning`) saved
as a local checkpoint, then `export_model` at opset 11, static and (where the registry
says so) dynamic height/width, with the strict parity proof (relative error ≤ 1e-4,
argmax agreement ≥ 99.9%); optionally a tensorrt_rtx parse + engine build. Also runs
the export rewrites eagerly in PyTorch and says whether they reproduce the model bit for
bit. Prints one line per export and exits 1 if any failed.

SegNet at full width is float32-sensitive: its rewrites are bit-exact, but unpooling
moves a value by a pixel when a near-tied pooling window resolves differently under
another rounding, and PyTorch's own float32 run is such a rounding. The parity proof's
float64 arbiter then decides (see `segdeploy/export/proof.py`); its figures are printed.

    python scripts/check_zoo_fullsize.py                       # every zoo model, 1x3x256x384
    python scripts/check_zoo_fullsize.py pspnet segnet --input-shape 1x3x473x473 --trt
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
from pathlib import Path

import torch

from segdeploy.errors import SegdeployError
from segdeploy.export import ExportRequest, export_model, parse_input_shape
from segdeploy.export.proof import ParityThresholds
from segdeploy.export.rewrites import export_rewrites
from segdeploy.models import get_spec, list_specs
from segdeploy.models.conditioning import condition

STRICT = ParityThresholds(min_agreement=0.999, max_rel_error=1e-4)


def zoo_names() -> list[str]:
    return [s.name for s in list_specs() if "width" in inspect.signature(s.builder).parameters]


def fit(shape, multiple: int):
    n, c, h, w = shape
    return (n, c, max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple))


def make_weights(name: str, shape, classes: int, folder: Path) -> tuple[Path, str]:
    """Conditioned weights saved as a checkpoint, and whether the function-level export
    rewrites (pooling indices, unpooling), run eagerly in PyTorch, reproduce the model bit for
    bit (isolates them from runtime rounding; operator-level ones act only inside the exporter)."""
    model = get_spec(name).build(num_classes=classes)
    condition(model, torch.randn(*shape, generator=torch.Generator().manual_seed(1)))
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    sample = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(sample)
        with export_rewrites():
            rewritten = model(sample)
    same = "identical" if torch.equal(plain, rewritten) else f"max diff {float((plain - rewritten).abs().max()):.2e}"
    return path, f"rewrites in eager PyTorch: {same}"


def trt_build(onnx_path: Path, shape, dynamic: bool) -> str:
    try:
        import tensorrt_rtx as trt
    except ImportError:
        return "tensorrt_rtx not installed"
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        return "parse failed: " + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    n, c, h, w = shape
    low, high = ((n, c, h // 2, w // 2), (n, c, h * 2, w * 2)) if dynamic else (shape, shape)
    profile.set_shape(network.get_input(0).name, low, shape, high)
    config.add_optimization_profile(profile)
    return "engine built" if builder.build_serialized_network(network, config) is not None else "build failed"


def check(name: str, shape, classes: int, folder: Path, with_trt: bool) -> bool:
    spec = get_spec(name)
    shape = fit(shape, spec.size_multiple)
    weights, eager = make_weights(name, shape, classes, folder)
    print(f"{name:24s} {eager}", flush=True)
    ok = True
    for dynamic in [set()] + ([{"height", "width"}] if spec.dynamic_hw else []):
        label = f"{name:24s} {'x'.join(map(str, shape)):14s} {'dynamic' if dynamic else 'static ':8s}"
        start = time.perf_counter()
        try:
            result = export_model(ExportRequest(source=name, out_dir=folder / f"{name}-{len(dynamic)}", input_shape=shape,
                                                dynamic=dynamic, num_classes=classes, weights=weights, thresholds=STRICT))  # fmt: skip
        except SegdeployError as exc:
            print(f"{label} FAIL {exc}", flush=True)
            ok = False
            continue
        p = result.parity
        line = f"{label} ok {time.perf_counter() - start:6.1f}s  agreement {p['min_argmax_agreement']:.4%}  rel err {p['max_rel_error']:.1e}"
        line += "".join(f"\n{'':24s}   {c['note']}" for c in p["checks"] if "note" in c)
        if with_trt:
            line += f"  trt: {trt_build(result.onnx_path, shape, bool(dynamic))}"
        print(line, flush=True)
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="registry names [default: every zoo model]")
    parser.add_argument("--input-shape", default="1x3x256x384", help="NxCxHxW, rounded down to each model's size multiple")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--trt", action="store_true", help="also parse and build each graph with tensorrt_rtx")
    args = parser.parse_args(argv)
    shape = parse_input_shape(args.input_shape)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models or zoo_names():
            results.append(check(name, shape, args.num_classes, Path(tmp), args.trt))
    print(f"{sum(results)}/{len(results)} models passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
