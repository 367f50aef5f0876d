"""Precision graphs as deploy-directory artifacts: write the file, measure drift, record it.

Each function returns the artifact name it recorded in the manifest (the caller saves it).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from segdeploy.atomic import atomic_path
from segdeploy.export.simplify import graph_io
from segdeploy.graph_spec import GraphSpec
from segdeploy.manifest import Manifest, tool_versions
from segdeploy.precision.calibration import CalibrationSet, reader_for
from segdeploy.precision.fp16 import fp16_block_list, write_fp16
from segdeploy.precision.parity import graph_parity, random_batches
from segdeploy.precision.quantize import (
    target_for,
    cache_key,
    check_exclusions,
    graph_opset,
    prepare_graph,
    quantize_graph,
)

FP32 = "onnx-fp32"
FP16 = "onnx-fp16"
FP16_FILE = "model.fp16.onnx"
PARITY_BATCHES = 4  # images compared against FP32 after each conversion


@dataclass
class QuantOptions:
    method: str = "minmax"
    percentile: float = 99.99
    cache_dir: Path | None = None
    exclude_nodes: list[str] = field(default_factory=list)
    exclude_ops: list[str] = field(default_factory=list)


def _record_graph(manifest: Manifest, name: str, filename: str, precision: str, target: str, **fields) -> dict:
    model = onnx.load(str(manifest.directory / filename), load_external_data=False)
    io = graph_io(model)
    return manifest.add_artifact(
        name, filename, kind="onnx", precision=precision, backend="onnxruntime", target=target, parent=FP32,
        opset=graph_opset(model), inputs=io["inputs"], outputs=io["outputs"],
        tool_versions=tool_versions("onnx", "onnxruntime", "onnxconverter_common"), **fields,
    )


def parity_batches(manifest: Manifest, calib: CalibrationSet | None) -> tuple[list[dict], str]:
    """A few real images (preprocessed as recorded) when there are some, else seeded noise."""
    if calib is not None:
        reader = reader_for(manifest, calib)
        count = min(PARITY_BATCHES, len(reader))
        return [reader.load_batch(i) for i in range(count)], f"{count} calibration batch(es) from {calib.folder}"
    spec = GraphSpec.of(manifest)
    kind = "uint8 pixel" if spec.fused_preprocess else "N(0,1)"
    return random_batches(spec), f"2 random {kind} inputs (no calibration images at hand)"


def make_fp16(manifest: Manifest, extra_block_ops: list[str], calib: CalibrationSet | None, step: Callable) -> str:
    """model.fp16.onnx: float16 weights and activations, float32 I/O, blocked ops in FP32."""
    fp32 = manifest.verify(FP32)
    block_ops = fp16_block_list(extra_block_ops)
    step("converting to FP16")
    # The file appears under its final name only once converted and measured.
    with atomic_path(manifest.directory / FP16_FILE) as tmp:
        write_fp16(fp32, tmp, block_ops)
        step("measuring FP16 vs FP32 agreement")
        batches, described = parity_batches(manifest, calib)
        parity = graph_parity(fp32, tmp, batches, described)
    _record_graph(manifest, FP16, FP16_FILE, "fp16", "any", parity=parity,
                  settings={"keep_io_types": True, "op_block_list": block_ops})
    return FP16


class Int8Maker:
    """Makes INT8 Q/DQ graphs for one or more targets from one calibration pass."""

    def __init__(self, manifest: Manifest, calib: CalibrationSet, options: QuantOptions, step: Callable,
                 on_batch: Callable[[int, int], None] | None = None):
        self.manifest, self.calib, self.options, self.step, self.on_batch = manifest, calib, options, step, on_batch
        self._tmp = tempfile.TemporaryDirectory(prefix="segdeploy-quant-")
        self._prepared: Path | None = None
        self._calibration: dict | None = None

    def close(self) -> None:
        self._tmp.cleanup()

    def prepared(self) -> Path:
        if self._prepared is None:
            self.step("preparing the graph for Q/DQ (opset ≥ 13, shape inference, folding)")
            self._prepared = Path(self._tmp.name) / "prepared.onnx"
            prepare_graph(self.manifest.verify(FP32), self._prepared)
            check_exclusions(onnx.load(str(self._prepared)), self.options.exclude_nodes, self.options.exclude_ops)
        return self._prepared

    def scratch(self) -> Path:
        """A temporary folder that lives as long as this maker."""
        return Path(self._tmp.name)

    def cache_path(self, method: str | None = None) -> Path:
        """The range cache of `method` (default: the options' method) for these images and graph."""
        method = method or self.options.method
        data = self.manifest.data
        key = cache_key(self.manifest.artifact(FP32)["sha256"], self.calib.fingerprint(), method,
                        self.options.percentile, data["input"]["shape"], data["preprocess"])
        folder = Path(self.options.cache_dir) if self.options.cache_dir else self.manifest.directory
        return folder / f"calib-cache.{method}.{key[:16]}.json"

    def quantize_to(self, target_name: str, out: Path) -> bool:
        """Quantize the prepared graph for `target_name` into `out`; True when cached ranges were reused."""
        reader = reader_for(self.manifest, self.calib, self.on_batch)
        fresh, start = not self.cache_path().is_file(), time.perf_counter()
        reused = quantize_graph(self.prepared(), out, target_for(target_name), reader=reader, cache_path=self.cache_path(),
                                method=self.options.method, percentile=self.options.percentile,
                                exclude_nodes=self.options.exclude_nodes, exclude_ops=self.options.exclude_ops)
        if fresh:  # make() will find the cache: remember that this build calibrated
            self._calibration = self._calibration_record(self.cache_path(), True, time.perf_counter() - start)
        return reused

    def make(self, target_name: str, keep_float: list[str] = (), record: dict | None = None) -> str:
        """Write and record the INT8 graph for `target_name` ('tensorrt' or 'onnxruntime').

        `keep_float`: nodes that read float inputs (a mixed graph, see `precision.mixed`);
        `record`: extra manifest fields for the artifact (the mixed-precision search's record).
        """
        target = target_for(target_name)
        prepared, cache = self.prepared(), self.cache_path()
        reader = reader_for(self.manifest, self.calib, self.on_batch)
        fresh = not cache.is_file()
        self.step(f"calibrating on {len(self.calib.images)} images ({self.options.method})" if fresh
                  else f"reusing calibration ranges {cache.name}")
        start = time.perf_counter()
        with atomic_path(self.manifest.directory / target.filename) as tmp:
            quantize_graph(prepared, tmp, target, reader=reader, cache_path=cache, method=self.options.method,
                           percentile=self.options.percentile, exclude_nodes=self.options.exclude_nodes,
                           exclude_ops=self.options.exclude_ops)
            if keep_float:
                from segdeploy.precision.qdq_edit import keep_float as keep_nodes_float

                onnx.save(keep_nodes_float(onnx.load(str(tmp)), onnx.load(str(prepared)), keep_float), str(tmp))
            if self._calibration is None or fresh:
                self._calibration = self._calibration_record(cache, fresh, time.perf_counter() - start)
            self.step(f"measuring INT8 ({target_name}) vs FP32 agreement")
            batches, described = parity_batches(self.manifest, self.calib)
            parity = graph_parity(self.manifest.verify(FP32), tmp, batches, described)
        _record_graph(self.manifest, target.artifact, target.filename, "int8", target_name, parity=parity,
                      calibration=self._calibration,
                      settings={**target.settings(), "format": "QDQ", "why": target.why,
                                "exclude_nodes": self.options.exclude_nodes, "exclude_ops": self.options.exclude_ops,
                                "keep_float_nodes": list(keep_float)},
                      **(record or {}))
        return target.artifact

    def _calibration_record(self, cache: Path, fresh: bool, seconds: float) -> dict:
        return {
            "folder": str(self.calib.folder),
            "images": len(self.calib.images),
            "requested": self.calib.requested,
            "method": self.options.method,
            "percentile": self.options.percentile if self.options.method == "percentile" else None,
            "cache": _relative(cache, self.manifest.directory),
            "reused_cache": not fresh,
            "seconds": round(seconds, 2) if fresh else None,
        }


def _relative(path: Path, directory: Path) -> str:
    """`path` relative to the deploy directory when inside it (the directory can move)."""
    try:
        return str(path.resolve().relative_to(directory.resolve()))
    except ValueError:
        return str(path)
