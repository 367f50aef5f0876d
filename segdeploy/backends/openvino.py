"""OpenVINO backend: precision graphs → OpenVINO IR (+ optionally the compiled model), and a runner.

The artifact `ov-<precision>` is the IR of a precision graph (`model.<precision>.ov.xml` + `.bin`,
FP32 weights kept as they are). What OpenVINO computes in is a *compile-time* setting,
`INFERENCE_PRECISION_HINT`, recorded with the artifact and applied by the runner on every load:

* fp32: the FP32 graph with the hint `f32`. On CPUs with AVX512-BF16/AMX OpenVINO's default is
  bf16, so FP32 must be asked for explicitly.
* bf16 / fp16: the same FP32 graph with the hint `bf16` / `f16` — only on a device whose
  `OPTIMIZATION_CAPABILITIES` list it; elsewhere OpenVINO would quietly compute in FP32, so
  segdeploy refuses instead.
* int8: segdeploy's own Q/DQ graph read as is (OpenVINO turns Q/DQ into FakeQuantize); the
  layers the graph leaves in float compute in f32, the same math as the graph in onnxruntime.

Every compile is checked against the execution graph: a layer computing in a precision nobody
asked for (bf16 in an FP32 artifact) or no layer in the one asked for (FP32 in a BF16 artifact)
is an error, not a silent fallback. `openvino` is imported lazily (extra `segdeploy[openvino]`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from segdeploy.atomic import atomic_write_bytes
from segdeploy.backends.base import Runner
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest.names import OPENVINO_IR, openvino_blob, openvino_ir
from segdeploy.manifest.records import OpenVinoRecord

INSTALL_HINT = 'install it with `pip install "segdeploy[openvino]"`'
DEVICES = ("CPU", "GPU", "NPU", "AUTO")
DEFAULT_DEVICE = "CPU"
# The INT8 graph OpenVINO reads (its `graph_target` in backends/registry.py) is the
# onnxruntime-family graph (U8 activations, S8 per-channel weights), not the symmetric TensorRT
# one. Measured (scripts/measure_openvino.py, README "Measured"): the same AMX INT8 kernels and
# speed within noise, more accurate (U8 after a ReLU keeps all 8 bits; the symmetric graph also
# quantizes both sides of every ReLU), and the very graph onnxruntime runs, so the two runtimes'
# drift is comparable.
# precision → (INFERENCE_PRECISION_HINT, the OPTIMIZATION_CAPABILITIES entry the device must list)
HINTS = {"fp32": ("f32", "FP32"), "fp16": ("f16", "FP16"), "bf16": ("bf16", "BF16"), "int8": ("f32", "INT8")}
# precision → (runtime precisions at least one compute layer must use, runtime precisions none may use)
EXPECTED = {
    "fp32": (set(), {"bf16", "f16"}),
    "fp16": ({"f16"}, {"bf16"}),
    "bf16": ({"bf16"}, {"f16"}),
    "int8": ({"u8", "i8"}, {"bf16", "f16"}),
}
WHY_MISSING = {"BF16": "it needs AVX512-BF16 or AMX on a CPU", "FP16": "it needs native FP16 arithmetic (AVX512-FP16/AMX-FP16 on a CPU)"}
COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm"}


def load_openvino():
    """The `openvino` module, or one line saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise SegdeployError("the OpenVINO backend needs the openvino package, which is not installed", INSTALL_HINT) from None
    return openvino


@functools.lru_cache(maxsize=1)
def core():
    """One shared `openvino.Core` (plugins load once per process)."""
    return load_openvino().Core()


def ov_reason(exc: Exception) -> str:
    """OpenVINO's multi-line exception text reduced to what the user needs (no source locations)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return " ".join(meaningful or lines)[:400]


# -- devices and what they support -----------------------------------------------------------------


def available_devices() -> list[str]:
    """Physical OpenVINO devices here, e.g. ['CPU', 'GPU.0']."""
    return list(core().available_devices)


def valid_device_name(device: str) -> bool:
    """`CPU`, `GPU`, `NPU`, `AUTO`, or one of the first three numbered (`GPU.1`); any case."""
    name, dot, index = device.upper().partition(".")
    return name in DEVICES and (not dot or (index.isdigit() and name != "AUTO"))


def resolve_device(device: str | None) -> str:
    """The device to compile for: `CPU` (default), `GPU`, `NPU`, `AUTO` or an indexed one (`GPU.1`)."""
    device = (device or DEFAULT_DEVICE).upper()
    if not valid_device_name(device):
        raise UsageError(f"unknown OpenVINO device {device!r}; valid: {', '.join(DEVICES)} (or numbered, like GPU.1)")
    have = available_devices()
    present = bool(have) if device == "AUTO" else any(d == device or d.split(".")[0] == device for d in have)
    if not present:
        raise SegdeployError(f"OpenVINO device {device} is not available here; available: {', '.join(have) or 'none'}",
                             "choose one of those with --device, or install the device's driver")
    return device


def device_capabilities(device: str) -> list[str]:
    """The device's OPTIMIZATION_CAPABILITIES (e.g. FP32, BF16, FP16, INT8)."""
    return [str(c) for c in core().get_property(device, "OPTIMIZATION_CAPABILITIES")]


def _physical(device: str) -> list[str]:
    """The devices a request for `device` may end up on (AUTO: all of them)."""
    have = available_devices()
    return have if device == "AUTO" else [d for d in have if d == device or d.split(".")[0] == device]


def unsupported_precision(precision: str, device: str) -> str | None:
    """Why `device` cannot compute in `precision` (it would silently run another one), or None."""
    needed = HINTS[precision][1]
    for name in _physical(device):
        capabilities = device_capabilities(name)
        if needed not in capabilities:
            why = WHY_MISSING.get(needed, "")
            return (f"OpenVINO device {name} does not support {needed} (OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)})"
                    + (f"; {why}" if why else "") + f" — it would run {precision} layers in another precision")
    return None


def check_precision(precision: str, device: str) -> None:
    """Refuse, with the reason, a precision the device would not honour."""
    reason = unsupported_precision(precision, device)
    if reason:
        raise SegdeployError(f"cannot build {precision} for OpenVINO: {reason}",
                             "build fp32 or int8 instead" if precision in ("bf16", "fp16") else None)


def openvino_record(artifact) -> OpenVinoRecord:
    """The artifact's `openvino` record (device, version), which every `ov-*` artifact has."""
    if artifact.openvino is None:
        raise SegdeployError(f"{artifact.file} is recorded without its OpenVINO details (device, version)",
                             "rebuild it with `segdeploy build --backend openvino`")
    return artifact.openvino


def why_not_here(artifact) -> str | None:
    """Why an `ov-*` artifact (a manifest `Artifact`) cannot run here (no openvino, no device, no BF16…), or None."""
    try:
        load_openvino()
        device = openvino_record(artifact).device
    except SegdeployError as exc:
        return str(exc)
    try:
        resolve_device(device)
    except SegdeployError as exc:
        return exc.message
    reason = unsupported_precision(artifact.precision, device)
    if reason is None and device.startswith("CPU"):
        from segdeploy.backends.x86_int8 import why_inexact

        reason = why_inexact(artifact, "openvino")
    return reason


# -- compiling and checking what runs ----------------------------------------------------------------


def compile_config(precision: str, threads: int | None = None) -> dict:
    """The compile properties of a `precision` artifact: precision hint, latency mode, threads."""
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision][0], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def runtime_precisions(compiled) -> dict[str, int]:
    """How many compute layers (convolutions, matmuls) of the execution graph run in each precision."""
    counts: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in COMPUTE_LAYERS:
            counts[info["runtimePrecision"].astype(str)] += 1
    return dict(sorted(counts.items()))


def check_runtime_precision(counts: dict[str, int], precision: str, device: str) -> None:
    """Fail when the compiled model does not compute in `precision` (e.g. a BF16 artifact running FP32)."""
    if not counts or device == "AUTO":  # AUTO's execution graph is its pick's; nothing to count on some devices
        return
    required, forbidden = EXPECTED[precision]
    wrong = {p: n for p, n in counts.items() if p in forbidden}
    if wrong or (required and not required & set(counts)):
        raise SegdeployError(
            f"OpenVINO on {device} does not compute this {precision} artifact in {precision}: its compute layers run in "
            + ", ".join(f"{p} ×{n}" for p, n in counts.items()),
            "rebuild the artifact with this segdeploy and OpenVINO version",
        )


def compile_model(source, precision: str, device: str, threads: int | None = None, profiling: bool = False):
    """Compile an IR path, model or exported blob for `device` with the artifact's precision hint, checked
    (`profiling`: with OpenVINO's per-layer counters on)."""
    config = {**compile_config(precision, threads), **({"PERF_COUNT": True} if profiling else {})}
    try:
        if isinstance(source, bytes):
            compiled = core().import_model(source, device, config)
        else:
            compiled = core().compile_model(str(source) if isinstance(source, Path) else source, device, config)
    except RuntimeError as exc:
        raise SegdeployError(f"OpenVINO cannot compile the model for {device}: {ov_reason(exc)}") from None
    check_runtime_precision(runtime_precisions(compiled), precision, device)
    return compiled


def read_graph(path: Path):
    """Read an ONNX graph (or IR) with OpenVINO's frontend; one line when it cannot."""
    try:
        return core().read_model(str(path))
    except RuntimeError as exc:
        raise SegdeployError(f"OpenVINO cannot read {path.name}: {ov_reason(exc)}",
                             "check the graph with `segdeploy inspect`, or build for onnxruntime") from None


@contextlib.contextmanager
def staged_ir(model, xml_path: Path):
    """Save `model` as IR (xml + bin, weights uncompressed) in scratch space beside `xml_path` and
    yield the scratch xml (it may still be edited); on success each file is renamed into place
    complete, the xml last; on an error nothing is left."""
    with tempfile.TemporaryDirectory(prefix=".ov-", dir=xml_path.parent) as scratch:
        tmp_xml = Path(scratch) / xml_path.name  # the xml finds its bin by name: same stem in scratch
        load_openvino().save_model(model, str(tmp_xml), compress_to_fp16=False)
        yield tmp_xml
        os.replace(tmp_xml.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(tmp_xml, xml_path)  # last: the xml is what the manifest records


def version() -> str:
    """The installed OpenVINO's version."""
    return str(load_openvino().__version__)


# -- the runner ---------------------------------------------------------------------------------


class OpenVinoRunner(Runner):
    """Runs an `ov-*` artifact: the compiled blob when it matches this OpenVINO and device, else the IR."""

    name = "openvino"

    def __init__(self, path: str | Path, *, precision: str = "fp32", device: str | None = None,
                 threads: int | None = None, compiled_blob: dict | None = None):
        super().__init__()
        self.path = Path(path)
        self.precision = precision
        self.device = device or DEFAULT_DEVICE
        self.threads = threads
        self.compiled_blob = compiled_blob  # {"path", "openvino": version that made it, "device"}
        self.compiled = None
        self.request = None
        self.loaded_from: str | None = None  # "compiled blob" or "IR", once active
        self.runtime_precisions: dict[str, int] = {}

    @classmethod
    def for_artifact(cls, directory: Path, artifact, threads: int | None = None) -> "OpenVinoRunner":
        """The runner for a manifest `Artifact` of kind `openvino` (its compiled blob, if any, made with it)."""
        record = openvino_record(artifact)
        blob = (artifact.companions or {}).get("compiled")
        compiled_blob = blob and {"path": str(Path(directory) / blob.file), "openvino": record.version, "device": record.device}
        return cls(Path(directory) / artifact.file, precision=artifact.precision, device=record.device, threads=threads,
                   compiled_blob=compiled_blob)

    def _activate(self) -> None:
        check_precision(self.precision, resolve_device(self.device))
        blob = self.compiled_blob
        use_blob = bool(blob) and blob.get("openvino") == version() and blob.get("device") == self.device
        # The hint goes with the blob too: a CPU blob is recompiled on import with the import's properties.
        source = Path(blob["path"]).read_bytes() if use_blob else self.path
        self.compiled = compile_model(source, self.precision, self.device, self.threads)
        self.loaded_from = "compiled blob" if use_blob else "IR"
        self.runtime_precisions = runtime_precisions(self.compiled)
        self.request = self.compiled.create_infer_request()

    def _deactivate(self) -> None:
        self.request = None
        self.compiled = None

    @property
    def input_names(self) -> list[str]:
        return [i.get_any_name() for i in self.compiled.inputs]

    def _infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = set(self.input_names)
        if set(batch) != expected:
            raise SegdeployError(f"inputs {sorted(batch)} do not match the model's {sorted(expected)}")
        results = self.request.infer(batch)
        return {output.get_any_name(): results[output] for output in self.compiled.outputs}


def export_compiled(compiled, path: Path) -> None:
    """Write the compiled model (OpenVINO's export) atomically."""
    atomic_write_bytes(path, compiled.export_model().getvalue())


# -- the registry's entry points (backends/registry.py) ----------------------------------------------


def open_runner(manifest, name: str, options) -> OpenVinoRunner:
    """The registry's runner factory: artifact `name` of `manifest` with `options` (`registry.RunOptions`)."""
    return OpenVinoRunner.for_artifact(manifest.directory, manifest.artifact(name), threads=options.threads)


def preflight(precisions: list[str], device: str | None, cache: bool = False) -> str:
    """Check, before any long step, that OpenVINO, the device and the precisions are there; the device."""
    load_openvino()
    device = resolve_device(device)
    for precision in precisions:
        check_precision(precision, device)
    if cache and device == "AUTO":
        raise UsageError("--ov-cache stores a model compiled for one device; AUTO chooses at run time",
                         "name the device with --device")
    return device


def prepare(manifest, options, precisions: list[str]) -> str:
    """The registry's pre-build check (`preflight` of `build --device/--ov-cache`); the device to build for."""
    return preflight(precisions, options.device, options.ov_cache)


def build_artifact(job) -> str:
    """`build --backend openvino`: record `ov-<precision>`, the IR of the precision graph `job.graph`.

    The model is compiled for the device (`job.context`, from `prepare`) before anything is
    written, so a graph OpenVINO cannot read or compile, a missing device or an unsupported
    precision leaves nothing behind. A hinted precision (bf16, fp16) on a CPU keeps the layers
    measured slower in the hint in FP32 (`openvino_layers`, unless `--no-ov-fp32-where-faster`).
    `--ov-cache` also stores the compiled model (a companion file, `names.openvino_blob`). INT8 reads
    the graph with its U8 activations of zero point 128 as S8 (`openvino_qdq`: the same arithmetic).
    """
    source = job.manifest.verify(job.graph)
    job.step(f"compiling {source.name} with OpenVINO for {job.context} ({job.precision})")
    with tempfile.TemporaryDirectory(prefix="segdeploy-ov-") as scratch:  # lives until the IR is saved
        return _build_ir(job, source, Path(scratch))


def _build_ir(job, source: Path, scratch: Path) -> str:
    from segdeploy.backends.x86_int8 import weights_record
    from segdeploy.manifest import tool_versions

    manifest, precision, device = job.manifest, job.precision, job.context
    signed = 0
    if precision == "int8":  # U8 activations with zero point 128 read as S8: the same values, no zero point
        source, signed = _signed_midpoints(source, scratch)
    model = read_graph(source)
    compiled = compile_model(model, precision, device)
    made = openvino_ir(precision)
    layer_choice = None
    with staged_ir(model, manifest.directory / made.file) as xml:
        if precision in ("bf16", "fp16") and device.startswith("CPU") and job.options.ov_fp32_where_faster is not False:
            layer_choice = _choose_layers(manifest, xml, precision, device, compiled, job.step)
            if layer_choice.layers:
                compiled = compile_model(xml, precision, device)
    companions = {"weights": Path(made.file).with_suffix(".bin").name}
    if job.options.ov_cache:
        companions["compiled"] = openvino_blob(precision, device)
        export_compiled(compiled, manifest.directory / companions["compiled"])
    counts = runtime_precisions(compiled)
    parent = manifest.artifact(job.graph)
    settings = {**compile_config(precision), "source_graph": parent.file, **weights_record(precision, parent)}
    if signed:
        settings["signed_midpoint_activations"] = signed
        job.notes.append(f"{made.name}: {signed} activation(s) in U8 with zero point 128 read as S8 (the same values)")
    if layer_choice is not None:
        settings["fp32_where_faster"] = layer_choice.record()
        job.notes.append(f"{made.name}: {layer_choice.summary()}")
    manifest.add_artifact(
        made.name, made.file, kind=OPENVINO_IR, precision=precision, backend="openvino", target="openvino",
        parent=job.graph, inputs=parent.inputs, outputs=parent.outputs, companions=companions, settings=settings,
        openvino=OpenVinoRecord(version=version(), device=device, runtime_precisions=counts,
                                capabilities={d: device_capabilities(d) for d in _physical(device)}),
        tool_versions=tool_versions("openvino"),
    )
    layers = ", ".join(f"{n} in {p}" for p, n in counts.items()) or "no convolution/matmul layers"
    job.notes.append(f"{made.name}: {device} computes {layers} (compute layers, from the execution graph) from {parent.file}")
    return made.name


def _signed_midpoints(source: Path, scratch: Path) -> tuple[Path, int]:
    """`source` with its U8/128 activations as S8/0 (`openvino_qdq`), in `scratch` when any changed."""
    import onnx

    from segdeploy.backends.openvino_qdq import signed_midpoints

    model = onnx.load(str(source))
    changed = signed_midpoints(model)
    if not changed:
        return source, 0
    rewritten = scratch / source.name
    onnx.save(model, str(rewritten))
    return rewritten, changed


def _choose_layers(manifest, xml: Path, precision: str, device: str, unmarked, step):
    """Which layers of the IR `xml` keep FP32 under `precision` on `device` (`openvino_layers.choose`;
    `unmarked`: the model already compiled from it), timed on one seeded input of the graph's kind."""
    from segdeploy.backends import openvino_layers
    from segdeploy.evaluation.batches import synthetic_batches
    from segdeploy.graph_spec import GraphSpec

    spec = GraphSpec.of(manifest)
    feed = spec.feed(synthetic_batches(spec, count=1)[0])

    def compile_as(path: Path, hinted: bool, profiling: bool):
        return compile_model(path, precision if hinted else "fp32", device, profiling=profiling)

    return openvino_layers.choose(xml, compile_as, feed, COMPUTE_LAYERS, step, unmarked=unmarked)
