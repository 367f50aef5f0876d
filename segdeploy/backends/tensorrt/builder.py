"""Build a serialized TensorRT engine from a precision graph (any flavour, one code path)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segdeploy.atomic import atomic_path, atomic_write_bytes
from segdeploy.backends.tensorrt.device import gpu_info
from segdeploy.backends.tensorrt.flavour import Flavour, dims, load_tensorrt
from segdeploy.errors import SegdeployError, UsageError

if TYPE_CHECKING:  # the TensorRT 10 API (tensorrt-stubs) that every call here is checked against
    import tensorrt as trt_api

HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")


@dataclass
class EngineOptions:
    """Builder settings, as named by trtexec where it has a name for them."""

    workspace_mib: int | None = None
    timing_cache: Path | None = None
    builder_optimization_level: int | None = None
    version_compatible: bool = False
    hardware_compatibility_level: str | None = None
    compute_capabilities: list[str] = field(default_factory=list)  # TensorRT-RTX targets, e.g. ["86", "89"]
    detailed_layers: bool = False  # trtexec --profilingVerbosity=detailed: the engine inspector sees each layer's precision


def make_logger(flavour: Flavour):
    """A TensorRT logger that keeps warnings and errors for our messages instead of printing them."""
    trt = flavour.api

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            if str(msg).startswith("Thread context has not been set"):
                return  # TensorRT-RTX logs this at error level on every Python build; it is not an error
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(" ".join(str(msg).split()))
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(" ".join(str(msg).split()))

    return CollectingLogger()


def network_flags(flavour: Flavour) -> tuple[int, list[str]]:
    """Creation flags: explicit batch on ≤ 9, strongly typed on 10, none on 11 and TensorRT-RTX."""
    trt = flavour.api
    flags = trt.NetworkDefinitionCreationFlag
    if flavour.is_rtx or flavour.major >= 11:
        return 0, []
    if flavour.major >= 10:
        # Strongly typed: the graph's types (FP16 tensors, Q/DQ) decide precision, not the builder.
        return (1 << int(flags.STRONGLY_TYPED), ["STRONGLY_TYPED"]) if hasattr(flags, "STRONGLY_TYPED") else (0, [])
    return (1 << int(flags.EXPLICIT_BATCH), ["EXPLICIT_BATCH"]) if hasattr(flags, "EXPLICIT_BATCH") else (0, [])


def precision_flags(flavour: Flavour, precision: str) -> list[str]:
    """TensorRT ≤ 9 (weakly typed) must be allowed the kernels an FP16 or Q/DQ graph needs."""
    if flavour.is_rtx or flavour.major >= 10:
        return []
    wanted = {"fp16": ["FP16"], "int8": ["INT8"]}.get(precision, [])
    missing = [f for f in wanted if not hasattr(flavour.api.BuilderFlag, f)]
    if missing:
        raise SegdeployError(f"{flavour.label()} has no {'/'.join(missing)} builder flag needed for a {precision} graph")
    return wanted


def parse_onnx(flavour: Flavour, onnx_path: Path, logger: trt_api.ILogger):
    """Builder, network and parser for the graph; every parser error reported (node, op, message)."""
    trt = flavour.api
    builder = trt.Builder(logger)
    flags, _ = network_flags(flavour)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise SegdeployError(
            f"{flavour.label()} cannot parse {onnx_path.name}: {' | '.join(errors) or 'no error reported'}",
            "keep the failing operator out of the precision graph (--exclude-ops/--fp16-block-ops) or re-export with another --opset",
        )
    return builder, network, parser


def _describe_parser_error(error: trt_api.ParserError) -> str:
    def get(attr):
        fn = getattr(error, attr, None)
        return fn() if callable(fn) else None

    node, name, op = get("node"), get("node_name"), get("node_operator")
    where = f"node {node}" + (f" {name!r}" if name else "") + (f" ({op})" if op else "")
    return f"{where}: {' '.join(str(get('desc')).split())}"


def configure(flavour: Flavour, config: trt_api.IBuilderConfig, precision: str, options: EngineOptions) -> dict:
    """Apply every builder setting; returns what was applied (for the manifest)."""
    trt = flavour.api
    applied: dict = {"builder_flags": []}
    for name in precision_flags(flavour, precision):
        config.set_flag(getattr(trt.BuilderFlag, name))
        applied["builder_flags"].append(name)
    if options.workspace_mib:
        _set_workspace(flavour, config, options.workspace_mib)
        applied["workspace_mib"] = options.workspace_mib
    if options.builder_optimization_level is not None:
        _require(flavour, hasattr(config, "builder_optimization_level"), "--builder-optimization-level")
        config.builder_optimization_level = options.builder_optimization_level
        applied["builder_optimization_level"] = options.builder_optimization_level
    if options.version_compatible:
        _require(flavour, hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"), "--version-compatible")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        applied["builder_flags"].append("VERSION_COMPATIBLE")
    if options.detailed_layers:
        _require(flavour, hasattr(config, "profiling_verbosity"), "detailed layer information")
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        applied["profiling_verbosity"] = "detailed"
    if options.hardware_compatibility_level:
        applied["hardware_compatibility_level"] = _set_hardware_level(flavour, config, options.hardware_compatibility_level)
    applied["compute_capabilities"] = _set_compute_capabilities(flavour, config, options.compute_capabilities)
    return applied


def _set_workspace(flavour: Flavour, config: trt_api.IBuilderConfig, mib: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(flavour.api.MemoryPoolType.WORKSPACE, mib << 20)
    else:  # TensorRT < 8.4: an attribute TensorRT 10 no longer has, so it is set by name
        setattr(config, "max_workspace_size", mib << 20)


def _require(flavour: Flavour, available: bool, option: str) -> None:
    if not available:
        raise _missing(flavour, option)


def _missing(flavour: Flavour, option: str) -> UsageError:
    return UsageError(f"{option} is not available in {flavour.label()}", "leave it out, or install a TensorRT that has it")


def _set_hardware_level(flavour: Flavour, config: trt_api.IBuilderConfig, level: str) -> str:
    trt = flavour.api
    enum = getattr(trt, "HardwareCompatibilityLevel", None)
    _require(flavour, enum is not None and hasattr(config, "hardware_compatibility_level"), "--hardware-compatibility-level")
    member = getattr(enum, level.upper(), None)
    if member is None:
        valid = ", ".join(n.lower() for n in dir(enum) if n.isupper())
        raise UsageError(f"--hardware-compatibility-level {level!r} is not one of {valid} in {flavour.label()}")
    config.hardware_compatibility_level = member
    return level.lower()


def _set_compute_capabilities(flavour: Flavour, config: trt_api.IBuilderConfig, wanted: list[str]) -> list[str]:
    """TensorRT-RTX targets: explicit SMs, or its default portable set (Ampere and later).

    TensorRT-RTX only: TensorRT 10 has no such API, so it is found and called by name."""
    trt = flavour.api
    if not wanted:
        return ["portable (TensorRT-RTX default: SM80 and later)"] if flavour.is_rtx else []
    enum = getattr(trt, "ComputeCapability", None)
    set_target = getattr(config, "set_compute_capability", None)
    if enum is None or set_target is None:
        raise _missing(flavour, "--compute-capability")
    members = []
    for cc in wanted:
        member = getattr(enum, f"SM{cc.replace('.', '')}", None) if cc.lower() != "current" else enum.CURRENT
        if member is None:
            valid = ", ".join(n[2:] for n in dir(enum) if n.startswith("SM"))
            raise UsageError(f"--compute-capability {cc} is not a target of {flavour.label()}; valid: {valid}, current")
        members.append(member)
    setattr(config, "num_compute_capabilities", len(members))
    for index, member in enumerate(members):
        if not set_target(member, index):
            raise UsageError(f"{flavour.label()} refused compute capability target {wanted[index]}")
    return [str(c) for c in wanted]


def add_profile(flavour: Flavour, builder: trt_api.Builder, config: trt_api.IBuilderConfig, profile: dict) -> None:
    if not profile:
        return
    optimization = builder.create_optimization_profile()
    for name, shapes in profile.items():
        low, best, high = (flavour.api.Dims(shapes[k]) for k in ("min", "opt", "max"))
        optimization.set_shape(name, low, best, high)
    if config.add_optimization_profile(optimization) < 0:
        raise SegdeployError(f"{flavour.label()} rejected the optimization profile {profile}")


def _load_timing_cache(flavour: Flavour, config: trt_api.IBuilderConfig, path: Path | None, notes: list[str]):
    if path is None:
        return None
    if flavour.is_rtx:
        # TensorRT-RTX ignores timing caches and using one forces a GPU query (no CPU-only build).
        notes.append(f"timing cache {path} not used: {flavour.label()} has no use for one")
        return None
    if not hasattr(config, "create_timing_cache"):
        notes.append(f"timing cache {path} not used: {flavour.label()} has no timing cache API")
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    return cache


def build_engine(onnx_path: Path, out_path: Path, *, precision: str, profile: dict, options: EngineOptions,
                 flavour: Flavour | None = None) -> dict:
    """Parse, configure, build, and write the engine atomically; returns its provenance record."""
    flavour = flavour or load_tensorrt()
    logger = make_logger(flavour)
    builder, network, _parser = parse_onnx(flavour, onnx_path, logger)
    config = builder.create_builder_config()
    applied = configure(flavour, config, precision, options)
    add_profile(flavour, builder, config, profile)
    notes: list[str] = []
    cache_path = options.timing_cache
    cache = _load_timing_cache(flavour, config, cache_path, notes)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        from segdeploy.backends.tensorrt.diagnose import explain

        raise SegdeployError(*explain(onnx_path, logger.errors, flavour.label(), precision))
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if cache is not None and cache_path is not None:
        atomic_write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()).tobytes())
        applied["timing_cache"] = str(cache_path)
    _, created = network_flags(flavour)
    return {
        "tensorrt": flavour.record(),
        "network_flags": created,
        **applied,
        "profile": profile,
        "built_on_gpu": gpu_info(),
        "build_seconds": round(seconds, 3),
        "engine_io": _network_io(flavour, network),
        "notes": notes,
    }


def _network_io(flavour: Flavour, network: trt_api.INetworkDefinition) -> dict:
    trt = flavour.api

    def describe(tensor: trt_api.ITensor) -> dict:
        try:
            dtype = np.dtype(trt.nptype(tensor.dtype)).name
        except TypeError:  # types numpy has no name for (fp8, fp4)
            dtype = str(tensor.dtype).split(".")[-1].lower()
        return {"name": tensor.name, "shape": list(dims(tensor.shape)), "dtype": dtype}

    return {
        "inputs": [describe(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [describe(network.get_output(i)) for i in range(network.num_outputs)],
    }
