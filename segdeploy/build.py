"""`segdeploy build`: precision graphs and backend artifacts from a deploy directory.

Everything it needs (input names, shapes, dynamic axes, preprocessing) comes from the
manifest; everything it makes is recorded there with hashes and provenance. Each file is
written atomically and recorded only once complete, so a failure leaves no half-written
artifact (earlier, complete ones stay).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from segdeploy.backends import BACKENDS
from segdeploy.backends.tensorrt.builder import EngineOptions
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.graph_spec import GraphSpec
from segdeploy.manifest import Manifest, tool_versions
from segdeploy.precision.calibration import CalibrationSet, check_readable, default_calib_dir, select_images
from segdeploy.precision.graphs import FP32, Int8Maker, QuantOptions, make_fp16
from segdeploy.precision.mixed import BudgetOptions, check_budget, make_within_budget

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


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


@dataclass
class BuildResult:
    directory: Path
    artifacts: list[dict]  # {"name", "file", "precision", "backend", "kind", "new", "parity"?}
    notes: list[str]


def build_artifacts(
    deploy_dir: str | Path,
    precisions: list[str],
    backend: str,
    options: BuildOptions,
    step: Callable[[str], None] = lambda _: None,
    on_batch: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] = warnings.warn,
) -> BuildResult:
    """Build `precisions` for `backend` into the deploy directory; returns what was recorded."""
    precisions = _check_request(precisions, backend, options)
    manifest = Manifest.load(deploy_dir)
    manifest.verify(FP32)
    flavour, profile = _tensorrt_setup(manifest, backend, options)  # fail before any long step
    calib = _calibration_set(options, warn, required="int8" in precisions)
    notes: list[str] = []
    made: list[dict] = []
    int8 = Int8Maker(manifest, calib, options.quant, step, on_batch) if "int8" in precisions else None
    try:
        for precision in precisions:
            graph = _precision_graph(manifest, precision, backend, options, calib, int8, step, warn)
            if all(item["name"] != graph for item in made):  # OpenVINO's fp32/bf16/fp16 share one graph
                made.append(_describe(manifest, graph, new=graph != FP32))
            manifest.save()
            artifact = _backend_artifact(manifest, graph, precision, backend, options, flavour, profile, step, notes)
            if artifact:
                made.append(_describe(manifest, artifact, new=True))
                manifest.save()
    finally:
        if int8 is not None:
            int8.close()
    return BuildResult(manifest.directory, made, notes)


def _check_request(precisions: list[str], backend: str, options: BuildOptions) -> list[str]:
    if not precisions:
        raise UsageError("give at least one --precision (fp32, fp16, int8; bf16 with --backend openvino)")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise UsageError(f"unknown precision {', '.join(unknown)}; valid: {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    trt_only = _tensorrt_options_given(options)
    if backend != "tensorrt" and trt_only:
        raise UsageError(f"{', '.join(trt_only)} only apply to --backend tensorrt")
    check_budget(options.budget, precisions)
    if options.budget is not None and options.quant.method == "best":
        raise UsageError("--calib-method best and --max-miou-drop are two steps, not one build",
                         "run `--calib-method best` first, then --max-miou-drop with the method it picked")
    if backend != "onnxruntime" and options.ort_optimize:
        raise UsageError("--ort-optimize only applies to --backend onnxruntime")
    if backend != "openvino" and (options.device or options.ov_cache or "bf16" in precisions):
        raise UsageError("--device, --ov-cache and --precision bf16 only apply to --backend openvino")
    if backend == "openvino":  # installed, device present, precisions supported: before any long step
        from segdeploy.backends.openvino import preflight

        preflight(precisions, options.device, options.ov_cache)
    return list(dict.fromkeys(precisions))  # keep order, drop repeats


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


def _tensorrt_setup(manifest: Manifest, backend: str, options: BuildOptions):
    if backend != "tensorrt":
        return None, {}
    from segdeploy.backends.tensorrt.profiles import resolve_profile

    entry = manifest.artifact(FP32)
    spec = GraphSpec.of(manifest)
    export_shapes = {spec.input_name: list(spec.input_shape)}
    profile = resolve_profile(entry["inputs"], export_shapes, options.min_shapes, options.opt_shapes, options.max_shapes)
    if options.graph_only:
        return None, profile
    from segdeploy.backends.tensorrt.flavour import load_tensorrt

    return load_tensorrt(), profile


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
    calib = select_images(options.calib, options.calib_size, warn=warn)
    check_readable(calib.images)
    return calib


def _precision_graph(manifest, precision, backend, options, calib, int8, step, warn) -> str:
    if precision == "fp32" or (backend == "openvino" and precision != "int8"):
        return FP32  # OpenVINO computes an FP32 graph in bf16/fp16 itself (its precision hint)
    backend = _graph_target(backend)
    if precision == "fp16":
        return make_fp16(manifest, options.fp16_block_ops, calib, step)
    if options.quant.method == "best":  # every method calibrated and compared; the best one kept
        from segdeploy.precision.compare import make_best_int8

        return make_best_int8(int8, backend)
    if options.budget is not None:
        return make_within_budget(int8, backend, options.budget, step, warn)
    return int8.make(backend)


def _graph_target(backend: str) -> str:
    """The INT8 graph family a backend reads (OpenVINO reads one of segdeploy's Q/DQ graphs as is)."""
    if backend == "openvino":
        from segdeploy.backends.openvino import QDQ_TARGET

        return QDQ_TARGET
    return backend


def _backend_artifact(manifest, graph, precision, backend, options, flavour, profile, step, notes) -> str | None:
    if backend == "openvino":
        from segdeploy.backends.openvino import build_artifact

        name, note = build_artifact(manifest, graph, precision, device=options.device, cache=options.ov_cache, step=step)
        notes.append(note)
        return name
    if backend == "onnxruntime":
        return _ort_artifact(manifest, graph, precision, options, step)
    if options.graph_only:
        notes.append(f"{graph}: TensorRT-family graph made; no engine built (--graph-only)")
        return None
    name = build_engine_artifact(manifest, graph, precision, profile, options.engine, flavour, step)
    notes.extend(f"{name}: {note}" for note in manifest.artifact(name)["settings"].get("notes", []))
    return name


def _ort_artifact(manifest: Manifest, graph: str, precision: str, options: BuildOptions, step) -> str | None:
    if not options.ort_optimize:
        return None  # the precision graph is the onnxruntime artifact
    from segdeploy.backends import onnxruntime as ort_backend

    name, filename = f"ort-{precision}", f"model.{precision}.ort.onnx"
    step(f"saving {precision} graph with onnxruntime optimizations")
    settings = ort_backend.build(manifest.verify(graph), manifest.directory / filename)
    manifest.add_artifact(
        name, filename, kind="onnx", precision=precision, backend="onnxruntime", target="onnxruntime-cpu",
        parent=graph, inputs=manifest.artifact(graph)["inputs"], outputs=manifest.artifact(graph)["outputs"],
        settings=settings, tool_versions=tool_versions("onnxruntime"),
    )
    return name


def build_engine_artifact(manifest: Manifest, graph: str, precision: str, profile: dict, engine: EngineOptions,
                          flavour=None, step: Callable[[str], None] = lambda _: None) -> str:
    """Build `trt-<precision>` (model.<precision>.engine) from the precision graph `graph`."""
    from segdeploy.backends.tensorrt.builder import build_engine

    entry = manifest.artifact(graph)
    if entry.get("target") not in ("tensorrt", "any", None):
        raise SegdeployError(
            f"{graph} is a {precision} graph made for {entry.get('target')}, which TensorRT cannot take "
            "(it needs symmetric INT8 Q/DQ)",
            f"run `segdeploy build {manifest.directory} --precision {precision} --backend tensorrt`",
        )
    name, filename = f"trt-{precision}", f"model.{precision}.engine"
    step(f"building TensorRT engine ({precision}) from {entry['file']}")
    record = build_engine(manifest.verify(graph), manifest.directory / filename, precision=precision,
                          profile=profile, options=engine, flavour=flavour)
    manifest.add_artifact(
        name, filename, kind="engine", precision=precision, backend="tensorrt", parent=graph,
        inputs=record["engine_io"]["inputs"], outputs=record["engine_io"]["outputs"],
        settings={k: v for k, v in record.items() if k != "engine_io"},
        tensorrt=record["tensorrt"], compute_capabilities=record["compute_capabilities"],
        built_on_gpu=record["built_on_gpu"], builder_flags=record["builder_flags"],
        hardware_compatibility_level=record.get("hardware_compatibility_level"),
        tool_versions=tool_versions(),
    )
    return name


def _describe(manifest: Manifest, name: str, new: bool) -> dict:
    entry = manifest.artifact(name)
    keys = ("file", "kind", "precision", "backend", "target", "sha256", "bytes", "parity", "calibration", "mixed_precision")
    described = {"name": name, "new": new, **{k: entry[k] for k in keys if k in entry}}
    if entry.get("kind") == "engine":
        described["build_seconds"] = entry["settings"].get("build_seconds")
        described["tensorrt"] = entry["tensorrt"]
    return described
