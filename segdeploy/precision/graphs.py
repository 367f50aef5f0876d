"""Precision graphs as deploy-directory artifacts: write the file, measure drift, record it.

Every precision graph goes through one sequence: quantize or convert (`Int8Maker.quantize`,
which also owns the calibration range cache), check against FP32 (`drift.graph_drift`),
record (`record_graph`). Each function returns the artifact name it recorded in the manifest
(the caller saves it).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from segdeploy.atomic import atomic_path
from segdeploy.errors import UsageError
from segdeploy.manifest import Manifest, tool_versions
from segdeploy.manifest.names import FP16_GRAPH, FP32_GRAPH, ONNX
from segdeploy.manifest.records import Artifact, BiasCorrectionRecord, CalibrationRecord, TensorInfo
from segdeploy.precision.bias_correction import DEFAULT_MODE as BIAS_MODE
from segdeploy.precision.bias_correction import correct_biases
from segdeploy.precision.calibration import CalibrationSet, reader_for
from segdeploy.precision.drift import check_batches, graph_drift
from segdeploy.precision.fp16 import fp16_block_list, write_fp16
from segdeploy.precision.quantize import (
    QuantTarget,
    cache_key,
    check_exclusions,
    graph_opset,
    prepare_graph,
    quantize_graph,
    target_for,
    weight_limits,
)

# INT8 defaults per target, each the best of its target on CamVid frames that neither calibrated
# the graphs nor reported them (README, "INT8 accuracy"; docs/design.md §5).
DEFAULT_METHOD = {"onnxruntime": "percentile", "tensorrt": "mean-minmax"}
DEFAULT_PERCENTILE = {"onnxruntime": 99.99, "tensorrt": 99.999}
DEFAULT_BIAS_CORRECTION = {"onnxruntime": True, "tensorrt": False}
DEFAULT_WEIGHT_ROUNDING = {"onnxruntime": "gptq", "tensorrt": "gptq"}
# bias correction leaves a layer alone when its shift is ≥ this many times its bias, or its bias is 0
# somewhere (NNCF's rule and value); measured: no mIoU change on the four trained models (README)
DEFAULT_BIAS_THRESHOLD = 2.0


@dataclass
class QuantOptions:
    method: str | None = None  # None: the target's default (DEFAULT_METHOD); or "best"
    percentile: float | None = None  # None: the target's default (DEFAULT_PERCENTILE)
    cache_dir: Path | None = None
    exclude_nodes: list[str] = field(default_factory=list)
    exclude_ops: list[str] = field(default_factory=list)
    # fold weight rounding's mean output shift into the bias (`precision.bias_correction`); None: the target's default
    bias_correction: bool | None = None
    bias_correction_mode: str = BIAS_MODE  # or "activations" (measured, not chosen: see the README)
    # leave a layer uncorrected when its shift reaches this multiple of its bias or its bias has a 0
    # (`correct_biases`); None: DEFAULT_BIAS_THRESHOLD; inf: correct every layer
    bias_correction_threshold: float | None = None
    float_tail: bool = True  # the logits' tail reads unrounded tensors (`precision.float_nodes`)
    # "gptq": Conv weights rounded for their layer's output (`precision.rounding`), "nearest": each
    # weight to its nearest step; None: the target's default
    weight_rounding: str | None = None
    # 7-bit weights in the onnxruntime-family graph, exact on x86 CPUs without VNNI (`quantize.target_for`);
    # None: the default (on); False: 8-bit weights
    reduce_range: bool | None = None

    def method_for(self, target_name: str) -> str:
        return self.method or DEFAULT_METHOD[target_name]

    def percentile_for(self, target_name: str) -> float:
        return self.percentile if self.percentile is not None else DEFAULT_PERCENTILE[target_name]

    def bias_correction_for(self, target_name: str) -> bool:
        return self.bias_correction if self.bias_correction is not None else DEFAULT_BIAS_CORRECTION[target_name]

    def bias_threshold(self) -> float | None:
        """The threshold `correct_biases` gets: None for every layer (`inf` asked for)."""
        threshold = DEFAULT_BIAS_THRESHOLD if self.bias_correction_threshold is None else self.bias_correction_threshold
        return None if math.isinf(threshold) else threshold

    def weight_rounding_for(self, target_name: str) -> str:
        return self.weight_rounding or DEFAULT_WEIGHT_ROUNDING[target_name]

    def target_for(self, target_name: str) -> QuantTarget:
        """The Q/DQ settings for `target_name` with these options (`reduce_range`)."""
        return target_for(target_name, self.reduce_range)


def record_graph(manifest: Manifest, name: str, filename: str, precision: str, target: str, **fields) -> Artifact:
    """Record a precision graph written into the deploy directory (the one writer of such entries)."""
    model = onnx.load(str(manifest.directory / filename), load_external_data=False)
    inputs, outputs = TensorInfo.graph_io(model)
    return manifest.add_artifact(
        name, filename, kind=ONNX, precision=precision, backend="onnxruntime", target=target, parent=FP32_GRAPH.name,
        opset=graph_opset(model), inputs=inputs, outputs=outputs,
        tool_versions=tool_versions("onnx", "onnxruntime", "onnxconverter_common"), **fields,
    )


def make_fp16(manifest: Manifest, extra_block_ops: list[str], calib: CalibrationSet | None, step: Callable) -> str:
    """model.fp16.onnx: float16 weights and activations, float32 I/O, blocked ops in FP32."""
    fp32 = manifest.verify(FP32_GRAPH.name)
    block_ops = fp16_block_list(extra_block_ops)
    step("converting to FP16")
    # The file appears under its final name only once converted and measured.
    with atomic_path(manifest.directory / FP16_GRAPH.file) as tmp:
        write_fp16(fp32, tmp, block_ops)
        step("measuring FP16 vs FP32 agreement")
        parity = graph_drift(manifest, tmp, *check_batches(manifest, calib))
    record_graph(manifest, FP16_GRAPH.name, FP16_GRAPH.file, "fp16", "any", parity=parity,
                 settings={"keep_io_types": True, "op_block_list": block_ops})
    return FP16_GRAPH.name


@dataclass(frozen=True)
class Quantized:
    """One quantization run: which ranges it used, whether it computed them, how long it took, and
    the accuracy steps applied (`bias_correction`: the record, None when off; `float_nodes`)."""

    method: str
    cache: Path
    fresh: bool
    seconds: float
    bias_correction: BiasCorrectionRecord | None = None
    float_nodes: dict = field(default_factory=dict)
    weight_rounding: dict = field(default_factory=dict)


class Int8Maker:
    """Makes INT8 Q/DQ graphs for one or more targets from one calibration pass per method."""

    def __init__(self, manifest: Manifest, calib: CalibrationSet, options: QuantOptions, step: Callable,
                 on_batch: Callable[[int, int], None] | None = None):
        self.manifest, self.calib, self.options, self.step, self.on_batch = manifest, calib, options, step, on_batch
        self._tmp = tempfile.TemporaryDirectory(prefix="segdeploy-quant-")
        self._prepared: Path | None = None
        self._calibrated: dict[Path, float] = {}  # range cache → seconds, for ranges this build computed

    def close(self) -> None:
        self._tmp.cleanup()

    def prepared(self) -> Path:
        if self._prepared is None:
            self.step("preparing the graph for Q/DQ (opset ≥ 13, shape inference, folding)")
            self._prepared = Path(self._tmp.name) / "prepared.onnx"
            prepare_graph(self.manifest.verify(FP32_GRAPH.name), self._prepared)
            check_exclusions(onnx.load(str(self._prepared)), self.options.exclude_nodes, self.options.exclude_ops)
        return self._prepared

    def scratch(self) -> Path:
        """A temporary folder that lives as long as this maker."""
        return Path(self._tmp.name)

    def target(self, target_name: str) -> QuantTarget:
        """The Q/DQ settings for `target_name` with these options (`QuantOptions.target_for`)."""
        return self.options.target_for(target_name)

    def percentile(self, target_name: str) -> float:
        """The percentile for `target_name`: the options', else that target's default."""
        return self.options.percentile_for(target_name)

    def cache_path(self, target_name: str, method: str | None = None) -> Path:
        """The range cache of `method` (default: the options' method) for these images and graph
        (the method and percentile, hence the cache, may differ per target)."""
        method = method or self.options.method_for(target_name)
        manifest = self.manifest
        key = cache_key(manifest.artifact(FP32_GRAPH.name).sha256, self.calib.fingerprint(), method,
                        self.percentile(target_name), manifest.input.shape, manifest.preprocess.to_dict())
        folder = Path(self.options.cache_dir) if self.options.cache_dir else self.manifest.directory
        return folder / f"calib-cache.{method}.{key[:16]}.json"

    def quantize(self, target_name: str, out: Path, *, method: str | None = None, keep_float=()) -> Quantized:
        """Quantize the prepared graph for `target_name` into `out` (calibrating unless `method`'s range
        cache exists), with the accuracy steps the options ask for: bias correction, then the nodes
        that stay float reading unrounded tensors (`float_nodes`); `keep_float`: more such nodes
        (a mixed graph, see `precision.mixed`), whose biases stay the FP32 graph's."""
        method = method or self.options.method_for(target_name)
        prepared, cache = self.prepared(), self.cache_path(target_name, method)
        fresh = not cache.is_file()
        self.step(f"calibrating on {len(self.calib.images)} images ({method})" if fresh else f"reusing calibration ranges {cache.name}")
        start = time.perf_counter()
        write = self._writer(self.target(target_name), cache, method)
        write(prepared, out)  # calibrates if needed; bias correction reads this graph's rounded weights
        write, rounding = self._round_weights(target_name, prepared, out, write, keep_float)
        bias = None
        if self.options.bias_correction_for(target_name):
            self.step(f"correcting biases ({target_name}) on {len(self.calib.images)} calibration images")
            bias = correct_biases(prepared, out, write, self._calibration_feeds(), self.options.bias_correction_mode, keep_float,
                                  self.options.bias_threshold())
        float_nodes = self._keep_float(prepared, out, keep_float)
        seconds = time.perf_counter() - start
        if fresh:  # later graphs of this build reuse the cache: remember that this build calibrated
            self._calibrated[cache] = seconds
        return Quantized(method, cache, fresh, seconds, bias, float_nodes, rounding)

    def _round_weights(self, target_name: str, prepared: Path, out: Path, write: Callable, keep_float) -> tuple[Callable, dict]:
        """GPTQ rounding of the Conv weights of `out` (when the options ask for it); returns the writer
        that re-applies it to every later re-quantization (bias correction) and the record."""
        how = self.options.weight_rounding_for(target_name)
        if how == "nearest":
            return write, {"method": "nearest"}
        from segdeploy.precision import rounding

        if how not in rounding.WEIGHT_ROUNDINGS:
            raise UsageError(f"--weight-rounding must be one of {', '.join(rounding.WEIGHT_ROUNDINGS)}, got {how!r}")

        images = min(rounding.IMAGES, len(self.calib.images))
        feeds = self._calibration_feeds(limit=rounding.IMAGES)
        self.step(f"rounding Conv weights for their outputs (GPTQ, {target_name}) on {images} calibration images")
        wide: list[str] = []
        start = time.perf_counter()
        rounded = rounding.round_weights(prepared, out, feeds, skip=keep_float, kept_nearest=wide,
                                         limits=weight_limits(self.target(target_name)))
        rounding.apply(out, rounded)

        def write_rounded(source: Path, dest: Path) -> None:
            write(source, dest)
            rounding.apply(dest, rounded)

        record = {"method": "gptq", "layers": len(rounded), "changed_weights": sum(r.changed for r in rounded.values()),
                  "weights": sum(r.values.size for r in rounded.values()), "images": images,
                  "kept_nearest": wide,  # wider than rounding.MAX_COLUMNS inputs: nearest rounding
                  "seconds": round(time.perf_counter() - start, 1)}
        return write_rounded, record

    def _writer(self, target: QuantTarget, cache: Path, method: str) -> Callable[[Path, Path], None]:
        """`write(source, dest)`: the Q/DQ graph of `source` for `target` from `method`'s ranges."""
        def write(source: Path, dest: Path) -> None:
            quantize_graph(source, dest, target, reader=reader_for(self.manifest, self.calib, self.on_batch),
                           cache_path=cache, method=method, percentile=self.percentile(target.name),
                           exclude_nodes=self.options.exclude_nodes, exclude_ops=self.options.exclude_ops)
        return write

    def _calibration_feeds(self, limit: int | None = None):
        """The calibration batches ({input: array}); with `limit`, at most that many spread evenly."""
        reader = reader_for(self.manifest, self.calib)
        count = len(reader)
        chosen = range(count) if limit is None or count <= limit else sorted({i * count // limit for i in range(limit)})
        return (reader.feed(i) for i in chosen)

    def _keep_float(self, prepared: Path, out: Path, keep_float) -> dict:
        """Nodes kept FP32 by structure, the logits' tail (with `float_tail`) and `keep_float` read
        unrounded tensors: one edit of the written graph. Returns the names by kind (the record)."""
        from segdeploy.precision.float_nodes import unrounded_nodes
        from segdeploy.precision.qdq_edit import keep_float as keep_nodes_float

        qdq, fp32 = onnx.load(str(out)), onnx.load(str(prepared))
        kinds = unrounded_nodes(qdq, fp32, tail=self.options.float_tail)
        names = list(dict.fromkeys([*kinds["kept_fp32"], *kinds["logits_tail"], *keep_float]))
        if names:
            onnx.save(keep_nodes_float(qdq, fp32, names), str(out))
        return kinds

    def calibration_record(self, target_name: str, method: str | None = None) -> CalibrationRecord:
        """The manifest's calibration record for graphs of `target_name` quantized with `method`'s ranges."""
        method = method or self.options.method_for(target_name)
        cache = self.cache_path(target_name, method)
        seconds = self._calibrated.get(cache)
        return CalibrationRecord(
            folder=str(self.calib.folder),
            images=len(self.calib.images),
            requested=self.calib.requested,
            method=method,
            percentile=self.percentile(target_name) if method == "percentile" else None,
            cache=relative_path(cache, self.manifest.directory),
            reused_cache=seconds is None,
            seconds=round(seconds, 2) if seconds is not None else None,
        )

    def record(self, target: QuantTarget, parity, calibration: CalibrationRecord, run: Quantized, keep_float=(),
               **fields) -> str:
        """Record the INT8 graph for `target` written into the deploy directory by `run`."""
        settings = {**target.settings(), "format": "QDQ", "why": target.why, "exclude_nodes": self.options.exclude_nodes,
                    "exclude_ops": self.options.exclude_ops, "keep_float_nodes": list(keep_float),
                    "float_nodes": run.float_nodes, "weight_rounding": run.weight_rounding}
        record_graph(self.manifest, target.artifact, target.filename, "int8", target.name, parity=parity,
                     calibration=calibration, bias_correction=run.bias_correction or BiasCorrectionRecord.off(),
                     settings=settings, **fields)
        return target.artifact

    def make(self, target_name: str, keep_float=(), record: dict | None = None) -> str:
        """Write, check and record the INT8 graph for `target_name` ('tensorrt' or 'onnxruntime').

        `record`: more fields of the artifact's record (the mixed-precision search's record).
        """
        target = self.target(target_name)
        with atomic_path(self.manifest.directory / target.filename) as tmp:
            run = self.quantize(target_name, tmp, keep_float=keep_float)
            self.step(f"measuring INT8 ({target_name}) vs FP32 agreement")
            parity = graph_drift(self.manifest, tmp, *check_batches(self.manifest, self.calib))
        return self.record(target, parity, self.calibration_record(target_name), run, keep_float, **(record or {}))


def relative_path(path: Path, directory: Path) -> str:
    """`path` relative to the deploy directory when inside it (the directory can move)."""
    try:
        return str(path.resolve().relative_to(directory.resolve()))
    except ValueError:
        return str(path)
