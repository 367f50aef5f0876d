"""Explicit INT8 (Q/DQ) graphs from one set of calibration ranges, per target family.

`prepare_graph` brings the FP32 graph to opset ≥ 13 (per-channel Q/DQ needs it) and runs
onnxruntime's quantization pre-processing; `quantize_graph` calibrates (or reuses the cached
ranges) and inserts Q/DQ with the target's settings. The same cached ranges serve both
targets: symmetry is applied when scales are computed, not when ranges are collected.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import onnx

from segdeploy.atomic import atomic_path
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.precision import trt_placement
from segdeploy.precision.index_math import kept_fp32_nodes
from segdeploy.precision.ranges import calibrate

QDQ_MIN_OPSET = 13
PREPARE_VERSION = "prep-v1"  # bump when prepare_graph changes what it produces (invalidates caches)


@dataclass(frozen=True)
class QuantTarget:
    """Q/DQ settings for one family of runtimes."""

    name: str
    artifact: str
    filename: str
    activation_type: str  # onnxruntime.quantization.QuantType member name
    weight_type: str
    per_channel: bool
    reduce_range: bool
    extra_options: dict = field(default_factory=dict)
    why: str = ""
    # "onnxruntime": its quantizer's own placement; "tensorrt": TensorRT's rules (`precision.trt_placement`)
    placement: str = "onnxruntime"

    def settings(self) -> dict:
        return {
            "activation_type": self.activation_type,
            "weight_type": self.weight_type,
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "extra_options": dict(self.extra_options),
            "placement": self.placement,
        }


TARGETS = {
    # TensorRT: zero points must be 0 (symmetric INT8 everywhere), per-channel weights, and
    # biases left in float: its ONNX parser rejects INT32 bias dequantization.
    "tensorrt": QuantTarget(
        "tensorrt", "onnx-int8-trt", "model.int8-trt.onnx", "QInt8", "QInt8", per_channel=True, reduce_range=False,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        why="symmetric S8 activations and weights, per-channel weights, float biases; Q/DQ on the inputs of "
            "Conv/ConvTranspose/Gemm/MatMul weights, residual Adds and max pools only (TensorRT placement rules)",
        placement="tensorrt",
    ),
    # x86 onnxruntime: U8 activations × S8 weights hit the fast VNNI/AVX2 kernels (measured 2×
    # faster than symmetric S8 activations); INT32 biases let Conv fuse into QLinearConv. 7-bit
    # weights (`reduce_range`): exact on every x86 CPU (see `target_for`), at no measured cost in
    # mIoU (README, "INT8 on x86 CPUs without VNNI"); `--no-reduce-range` gives 8-bit weights.
    "onnxruntime": QuantTarget(
        "onnxruntime", "onnx-int8-ort", "model.int8-ort.onnx", "QUInt8", "QInt8", per_channel=True, reduce_range=True,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        why="asymmetric U8 activations, symmetric per-channel S8 weights (onnxruntime x86 fast path) in 7 bits "
            "(reduce_range: exact on x86 CPUs with or without VNNI)",
    ),
}

def target_for(name: str, reduce_range: bool | None = None) -> QuantTarget:
    """The settings for `name`; `reduce_range`: 7-bit (True) or 8-bit (False) weights in the
    onnxruntime-family graph (None: the target's default, 7-bit).

    Without VNNI, x86 U8×S8 kernels (onnxruntime's and OpenVINO's) add pairs of products in
    saturating 16-bit lanes (255·127·2 > 32767), so 8-bit weights give wrong sums there; 7-bit
    weights (255·64·2 < 32767) keep them exact on every x86 CPU, so the graph can be built on one
    machine and run on any. ARM, VNNI CPUs and TensorRT (32-bit accumulation; its graph is always
    8-bit) do not need them (`backends.x86_int8` refuses an 8-bit graph where it would saturate).
    """
    target = TARGETS[name]
    if name != "onnxruntime" or reduce_range is None or reduce_range == target.reduce_range:
        return target
    return replace(target, reduce_range=False, why="asymmetric U8 activations, symmetric per-channel S8 weights "
                   "(onnxruntime x86 fast path) in 8 bits (--no-reduce-range: exact on ARM and x86 CPUs with VNNI only)")


def weight_limits(target: QuantTarget) -> tuple[int, int]:
    """The integer range of `target`'s weights, as onnxruntime's quantizer writes them."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    low, high = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=target.reduce_range, symmetric=True)
    return int(low), int(high)


METHODS = {"minmax": "MinMax", "mean-minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}  # → onnxruntime's


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """onnxruntime.quantization logs advice and prints histogram chatter; keep stdout clean."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def prepare_graph(fp32_path: Path, out_path: Path) -> None:
    """Opset ≥ 13 copy of the FP32 graph, pre-processed for quantization (shape inference, folding)."""
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32_path))
    opset = graph_opset(model)
    if opset < QDQ_MIN_OPSET:
        try:
            model = version_converter.convert_version(model, QDQ_MIN_OPSET)
        except Exception as exc:  # the converter raises several types for unsupported adapters
            raise SegdeployError(f"cannot upgrade the graph from opset {opset} to {QDQ_MIN_OPSET} for Q/DQ: {str(exc)[:300]}",
                                 "re-export with --opset 13") from None
    # quant_pre_process is given a file: handed a ModelProto it spills constants to external
    # data that its own onnxruntime pass then cannot read (seen with Resize scales).
    with tempfile.TemporaryDirectory(prefix="segdeploy-prep-") as scratch, atomic_path(out_path) as tmp, quiet_quantization():
        upgraded = Path(scratch) / "upgraded.onnx"
        onnx.save(model, str(upgraded))
        quant_pre_process(str(upgraded), str(tmp), skip_symbolic_shape=True)


def graph_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def cache_key(source_sha256: str, calib_fingerprint: str, method: str, percentile: float, input_shape, preprocess: dict) -> str:
    """Ranges depend on the graph, the images, the method and how images become tensors."""
    payload = {
        "graph": source_sha256,
        "prepare": PREPARE_VERSION,
        "calib": calib_fingerprint,
        "method": method,
        "percentile": percentile if method == "percentile" else None,
        "input_shape": list(input_shape),
        "preprocess": preprocess,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_exclusions(model: onnx.ModelProto, nodes: list[str], ops: list[str]) -> None:
    """Names the user wants kept in float must exist, or the exclusion silently does nothing."""
    names = {n.name for n in model.graph.node}
    types = {n.op_type for n in model.graph.node}
    missing = [n for n in nodes if n not in names]
    if missing:
        raise UsageError(f"--exclude-nodes: no node named {', '.join(missing[:5])} in the graph",
                         "node names are those of the exported model.onnx (see Netron)")
    unknown = [o for o in ops if o not in types]
    if unknown:
        raise UsageError(f"--exclude-ops: the graph has no {', '.join(unknown)} operator; it has: {', '.join(sorted(types))}")


def ops_to_quantize(exclude_ops: list[str]) -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - set(exclude_ops))


def quantize_graph(
    prepared: Path,
    out_path: Path,
    target: QuantTarget,
    *,
    reader,
    cache_path: Path,
    method: str,
    percentile: float = 99.99,
    exclude_nodes: list[str] = (),
    exclude_ops: list[str] = (),
) -> bool:
    """Write the Q/DQ graph for `target`; returns True when cached ranges were reused.

    `reader` is a CalibrationDataReader or any sequence of named batches; it is only consumed when
    `cache_path` does not exist yet; the ranges computed from it (`ranges.calibrate`) are saved
    there (atomically) for the next build.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise UsageError(f"--calib-method must be one of {', '.join(METHODS)}, got {method!r}")
    from segdeploy.precision.calibration import as_reader

    reader = as_reader(reader)
    reused = cache_path.is_file()
    model = onnx.load(str(prepared))
    chosen, placement = _placement(target, model, exclude_nodes, exclude_ops)  # before calibrating: fail fast
    _check_percentile(method, percentile)
    extra = dict(target.extra_options)
    if target.placement == "tensorrt":
        extra.update(trt_placement.ort_options(model, placement))
    with atomic_path(out_path) as tmp, quiet_quantization():
        if not reused:  # onnxruntime's calibrators, run by `ranges` (see there why), into the cache quantize_static reads
            calibrate(prepared, reader, method, percentile, chosen["op_types_to_quantize"], cache_path)
        quantize_static(
            str(prepared),
            str(tmp),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=target.per_channel,
            reduce_range=target.reduce_range,
            activation_type=QuantType[target.activation_type],
            weight_type=QuantType[target.weight_type],
            calibrate_method=CalibrationMethod[METHODS[method]],
            extra_options=extra,
            calibration_cache_path=str(cache_path),
            **chosen,
        )
        if target.placement == "tensorrt":
            onnx.save(trt_placement.finish(onnx.load(str(tmp)), model, placement), str(tmp))
    return reused


def _placement(target: QuantTarget, model: onnx.ModelProto, exclude_nodes, exclude_ops) -> tuple[dict, "trt_placement.Placement"]:
    """quantize_static's arguments that decide where Q/DQ goes, and the TensorRT placement.

    Every target calibrates the same op types, so one range cache fits both; the TensorRT
    placement then narrows quantization to its chosen nodes. A graph in which that placement
    finds nothing (no weighted layer left in float) has nothing INT8 pays off for, whatever the target.
    """
    excluded = list(dict.fromkeys([*exclude_nodes, *kept_fp32_nodes(model)]))
    placement = trt_placement.choose(model, set(excluded), set(exclude_ops))
    if not placement.nodes:
        raise SegdeployError(nothing_quantizable(exclude_nodes, exclude_ops), "build --precision fp16 instead")
    chosen: dict = {"op_types_to_quantize": ops_to_quantize(list(exclude_ops)), "nodes_to_exclude": excluded}
    if target.placement == "tensorrt":
        chosen["nodes_to_quantize"] = placement.nodes
    return chosen, placement


def nothing_quantizable(exclude_nodes, exclude_ops) -> str:
    """The one line for a graph without a layer INT8 can speed up."""
    what = "the graph has no Conv, ConvTranspose, Gemm or MatMul with constant weights"
    if exclude_nodes or exclude_ops:
        what += " left after --exclude-nodes/--exclude-ops"
    return f"nothing to quantize to INT8: {what} (INT8 only pays off for those layers)"


def _check_percentile(method: str, percentile: float) -> None:
    if method == "percentile" and not 0 < percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {percentile}")
