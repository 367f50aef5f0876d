"""`segdeploy build`: precision graphs and backend artifacts from a deploy directory.

Everything it needs (input names, shapes, dynamic axes, preprocessing) comes from the
manifest; everything it makes is recorded there with hashes and provenance. For each
precision: the precision graph (`precision.graphs`), then what the backend adds on top of
it (`backends.registry`: an engine, an optimized graph, or nothing). Each file is written
atomically and recorded only once complete, so a failure leaves no half-written artifact
(earlier, complete ones stay). See docs/design.md, "Following `segdeploy build`".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from segdeploy.backends.registry import BACKENDS, BackendSpec, BuildStep, backend
from segdeploy.backends.tensorrt.builder import EngineOptions
from segdeploy.data import default_calib_dir
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.faults import fault_point
from segdeploy.manifest import Manifest
from segdeploy.manifest.locking import deploy_lock, journal
from segdeploy.manifest.names import FP32_GRAPH, PRECISIONS
from segdeploy.precision.calibration import CalibrationSet, check_enough, check_readable, select_images
from segdeploy.precision.graphs import Int8Maker, QuantOptions, make_fp16
from segdeploy.precision.mixed import BudgetOptions, check_budget, make_within_budget


@dataclass
class BuildOptions:
    calib: Path | None = None
    calib_size: int = 100
    quant: QuantOptions = field(default_factory=QuantOptions)
    fp16_block_ops: list[str] = field(default_factory=list)
    graph_only: bool = False  # tensorrt: make the TensorRT-family graphs, build no engine
    ort_optimize: bool = False  # onnxruntime: also save graphs with CPU graph optimizations applied
    min_shapes: dict = field(default_factory=dict)
    opt_shapes: dict = field(default_factory=dict)
    max_shapes: dict = field(default_factory=dict)
    engine: EngineOptions = field(default_factory=EngineOptions)
    budget: BudgetOptions | None = None  # int8 within an mIoU budget (`precision.mixed`)
    device: str | None = None  # openvino: CPU (default), GPU, NPU, AUTO
    ov_cache: bool = False  # openvino: also store the model compiled for the device
    # openvino bf16/fp16 on a CPU: layers measured slower in the hint keep FP32 (`backends.openvino_layers`); None: on
    ov_fp32_where_faster: bool | None = None


@dataclass
class BuildResult:
    directory: Path
    artifacts: list[dict]  # {"name", "file", "precision", "backend", "kind", "new", "parity"?, ...}
    notes: list[str]


def build_artifacts(
    deploy_dir: str | Path,
    precisions: list[str],
    backend_name: str,
    options: BuildOptions,
    step: Callable[[str], None] = lambda _: None,
    on_batch: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] = warnings.warn,
) -> BuildResult:
    """Build `precisions` for `backend_name` into the deploy directory; returns what was recorded.

    Holds the directory's lock (a concurrent build waits, and then sees this one's artifacts) and
    journals the work, so an interrupted build leaves only complete, recorded artifacts
    (`manifest.locking`)."""
    precisions = _check_request(precisions, backend_name, options)
    target = backend(backend_name)
    manifest = Manifest.load(deploy_dir)  # a missing or foreign directory is refused before anything is created in it
    # the backend's checks (installed, device, precisions, profile) fail before the lock and journal: nothing to repair
    context = target.call("prepare", manifest, options, precisions) if target.prepare else None
    with deploy_lock(deploy_dir, "build"), journal(deploy_dir, "build"):
        return _build_locked(deploy_dir, precisions, target, options, context, step, on_batch, warn)


def _build_locked(deploy_dir, precisions, target: BackendSpec, options, context, step, on_batch, warn) -> BuildResult:
    manifest = Manifest.load(deploy_dir)  # read under the lock: includes what a build before this one recorded
    fault_point("build:loaded")
    manifest.verify(FP32_GRAPH.name)
    calib = _calibration_set(options, warn, required="int8" in precisions)
    if "int8" in precisions:  # before any graph is written
        check_enough(calib, options.quant.method_for(target.graph_target))
    notes: list[str] = []
    made: list[dict] = []
    int8 = Int8Maker(manifest, calib, options.quant, step, on_batch) if "int8" in precisions else None
    try:
        for precision in precisions:
            graph = _precision_graph(manifest, precision, target, options, calib, int8, step, warn)
            if all(item["name"] != graph for item in made):  # OpenVINO's fp32/fp16/bf16 share the FP32 graph
                made.append(_describe(manifest, graph, new=graph != FP32_GRAPH.name))
            fault_point("build:written")
            manifest.save()
            job = BuildStep(manifest, graph, precision, options, context, step, notes)
            artifact = target.call("build", job)
            if artifact:
                made.append(_describe(manifest, artifact, new=True))
                manifest.save()
    finally:
        if int8 is not None:
            int8.close()
    return BuildResult(manifest.directory, made, notes)


def _check_request(precisions: list[str], backend_name: str, options: BuildOptions) -> list[str]:
    if not precisions:
        raise UsageError("give at least one --precision (fp32, fp16, int8; bf16 with --backend openvino)")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise UsageError(f"unknown precision {', '.join(unknown)}; valid: {', '.join(PRECISIONS)}")
    _check_backend_options(backend(backend_name), precisions, options)
    check_budget(options.budget, precisions)
    if options.budget is not None and options.quant.method == "best":
        raise UsageError("--calib-method best and --miou-budget are two steps, not one build",
                         "run `--calib-method best` first, then --miou-budget with the method it picked")
    _check_bias_threshold(options.quant, backend(backend_name).graph_target)
    if backend_name != "onnxruntime" and options.ort_optimize:
        raise UsageError("--ort-optimize only applies to --backend onnxruntime")
    return list(dict.fromkeys(precisions))  # keep order, drop repeats


def _check_bias_threshold(quant, graph_target: str) -> None:
    threshold = quant.bias_correction_threshold
    if threshold is None:
        return
    if not threshold > 0:  # NaN too
        raise UsageError(f"--bias-correction-threshold must be above 0, got {threshold:g}",
                         "2 is NNCF's rule and the default; inf corrects every layer")
    if not quant.bias_correction_for(graph_target):
        raise UsageError(f"--bias-correction-threshold only applies with bias correction, which is off for {graph_target}",
                         "add --bias-correction, or drop the threshold")


def _check_backend_options(spec: BackendSpec, precisions: list[str], options: BuildOptions) -> None:
    """Precisions and options that belong to another backend are refused, never ignored."""
    foreign = [p for p in precisions if p not in spec.precisions]
    if foreign:
        owners = [b.name for b in BACKENDS.values() if set(foreign) <= set(b.precisions)]
        raise UsageError(f"--precision {', '.join(foreign)} only apply to --backend {' or '.join(owners)}")
    for owner, given in (("tensorrt", _tensorrt_options_given(options)), ("openvino", _openvino_options_given(options))):
        if given and spec.name != owner:
            raise UsageError(f"{', '.join(given)} only apply to --backend {owner}")


def _openvino_options_given(options: BuildOptions) -> list[str]:
    given = {"--device": options.device, "--ov-cache": options.ov_cache,
             "--ov-fp32-where-faster/--no-ov-fp32-where-faster": options.ov_fp32_where_faster is not None}
    return [name for name, value in given.items() if value]


def _tensorrt_options_given(options: BuildOptions) -> list[str]:
    engine = options.engine
    given = {
        "--min-shapes": options.min_shapes, "--opt-shapes": options.opt_shapes, "--max-shapes": options.max_shapes,
        "--workspace": engine.workspace_mib, "--timing-cache": engine.timing_cache,
        "--builder-optimization-level": engine.builder_optimization_level is not None,
        "--version-compatible": engine.version_compatible,
        "--hardware-compatibility-level": engine.hardware_compatibility_level,
        "--compute-capability": engine.compute_capabilities, "--graph-only": options.graph_only,
    }
    return [name for name, value in given.items() if value]


def _calibration_set(options: BuildOptions, warn, required: bool) -> CalibrationSet | None:
    """The calibration images (checked readable up front); for FP16 only, used for parity if at hand."""
    if not required:
        if options.calib is not None:  # given explicitly: its problems are the user's to hear about
            return select_images(options.calib, min(options.calib_size, 4), warn=lambda _: None)
        if not default_calib_dir().is_dir():
            return None
        try:
            return select_images(default_calib_dir(), min(options.calib_size, 4), warn=lambda _: None)
        except SegdeployError:
            return None
    notes: list[str] = []
    calib = select_images(options.calib, options.calib_size, warn=notes.append)
    check_readable(calib.images)  # an unreadable image is the one line to show, not after a warning
    for note in notes:
        warn(note)
    return calib


def _precision_graph(manifest, precision, target: BackendSpec, options, calib, int8, step, warn) -> str:
    if precision == "fp32" or precision in target.hinted:
        return FP32_GRAPH.name  # e.g. OpenVINO computes the FP32 graph in bf16/fp16 itself (its precision hint)
    if precision == "fp16":
        return make_fp16(manifest, options.fp16_block_ops, calib, step)
    _warn_if_checked_inexactly(options.quant.target_for(target.graph_target), warn)
    if options.quant.method == "best":  # every method calibrated and compared; the best one kept
        from segdeploy.precision.compare import make_best_int8

        return make_best_int8(int8, target.graph_target)
    if options.budget is not None:
        return make_within_budget(int8, target.graph_target, options.budget, step, warn)
    return int8.make(target.graph_target)


def _warn_if_checked_inexactly(quant_target, warn) -> None:
    """8-bit onnxruntime-family weights asked for on an x86 CPU without VNNI: the graph is for
    another CPU, but the build's own measurements (calibration choice, budget search, drift) run
    here, where onnxruntime's INT8 sums saturate (`backends.x86_int8`)."""
    from segdeploy.backends.x86_int8 import int8_dot_products_exact

    if quant_target.name != "onnxruntime" or quant_target.reduce_range:
        return
    exact, reason = int8_dot_products_exact("onnxruntime")
    if not exact:
        warn(f"--no-reduce-range on a CPU where {reason}: the INT8 graph is written for an ARM or VNNI CPU, but this "
             "build's measurements of it (calibration, budget, drift) run here with 16-bit sums that overflow; "
             "measure it again with `segdeploy bench` on the target CPU")


def _describe(manifest: Manifest, name: str, new: bool) -> dict:
    """An artifact as `build --json` lists it."""
    entry = manifest.artifact(name)
    described = {"name": name, "new": new, "file": entry.file, "kind": entry.kind, "precision": entry.precision,
                 "backend": entry.backend, "target": entry.target, "sha256": entry.sha256, "bytes": entry.bytes}
    for key in ("parity", "calibration", "bias_correction", "mixed_precision", "tensorrt", "openvino"):
        if getattr(entry, key) is not None:
            described[key] = getattr(entry, key).to_dict()
    for key in ("build_seconds", "weight_rounding"):
        if entry.settings and key in entry.settings:
            described[key] = entry.settings[key]
    return {k: v for k, v in described.items() if v is not None}
