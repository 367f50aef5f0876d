"""The backends segdeploy builds for and runs: one entry each, the one place a backend is added.

An entry names, as ``"module:function"`` strings imported only when used (so this registry
stays light enough for `segdeploy --help`):

* `open_runner(manifest, name, RunOptions) -> Runner` for the artifacts whose `backend` it is;
* `why_not_here(artifact) -> str | None`: why such an artifact cannot run on this machine;
* `prepare(manifest, options, precisions) -> context`: checks made before a build starts any long
  step (the backend installed, its device present, each precision supported);
* `build(BuildStep) -> artifact name | None`: what `segdeploy build --backend NAME` adds on top
  of a precision graph (None: the precision graph itself is the artifact).

`graph_target` says which family of precision graphs it builds from (the INT8 Q/DQ graph made
for it, `precision.quantize.TARGETS`); `precisions` what `build --backend NAME -p` accepts, of
which `hinted` are computed by the runtime itself from the FP32 graph (a compile-time precision
hint) rather than from a precision graph of their own; `preference` its artifacts in the order
`Segmenter` prefers them. Backends are listed most preferred first; one with `preferred_on`
keeps its place only on those machine architectures and comes last elsewhere. See
docs/design.md, "Adding a backend".
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass, field
from typing import Any, Callable

from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest.names import FP16_GRAPH, FP32_GRAPH, INT8_GRAPHS, openvino_ir, ort_optimized, tensorrt_engine

GRAPH_PRECISIONS = ("fp32", "fp16", "int8")  # the precisions segdeploy makes graphs for
X86 = ("x86_64", "amd64", "i686", "i386", "x86")  # platform.machine() spellings


@dataclass(frozen=True)
class RunOptions:
    threads: int | None = None  # intra-op threads (onnxruntime)
    providers: list[str] | None = None  # onnxruntime execution providers
    cuda_graph: bool = False  # TensorRT engines: replay the enqueue as a CUDA graph


@dataclass
class BuildStep:
    """One backend artifact to make from one precision graph (what `BackendSpec.build` receives)."""

    manifest: Any  # segdeploy.manifest.Manifest
    graph: str  # the precision graph's artifact name
    precision: str
    options: Any  # segdeploy.build.BuildOptions
    context: Any  # what the backend's `prepare` returned
    step: Callable[[str], None]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    graph_target: str
    open_runner: str
    build: str
    why_not_here: str | None = None
    prepare: str | None = None
    preference: tuple[str, ...] = ()
    precisions: tuple[str, ...] = GRAPH_PRECISIONS
    hinted: tuple[str, ...] = ()  # computed from the FP32 graph by the runtime (a compile-time hint)
    preferred_on: tuple[str, ...] = ()  # machine architectures where `preference` holds its place (empty: all)

    def call(self, which: str, *args):
        """Import and call one of this backend's functions."""
        module, _, function = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), function)(*args)


BACKENDS: dict[str, BackendSpec] = {
    "tensorrt": BackendSpec(
        "tensorrt", graph_target="tensorrt",
        open_runner="segdeploy.backends.tensorrt.artifact:open_runner",
        build="segdeploy.backends.tensorrt.artifact:build",
        why_not_here="segdeploy.backends.tensorrt.artifact:why_not_here",
        prepare="segdeploy.backends.tensorrt.artifact:prepare",
        preference=tuple(tensorrt_engine(p).name for p in ("int8", "fp16", "fp32")),
    ),
    # after TensorRT on x86: the fastest CPU engine there for the same precision graphs (README "Measured")
    "openvino": BackendSpec(
        "openvino", graph_target="onnxruntime",  # reads the onnxruntime-family Q/DQ graph as is (backends/openvino.py)
        open_runner="segdeploy.backends.openvino:open_runner",
        build="segdeploy.backends.openvino:build_artifact",
        why_not_here="segdeploy.backends.openvino:why_not_here",
        prepare="segdeploy.backends.openvino:prepare",
        preference=tuple(openvino_ir(p).name for p in ("int8", "bf16", "fp16", "fp32")),
        precisions=("fp32", "fp16", "bf16", "int8"), hinted=("fp16", "bf16"), preferred_on=X86,
    ),
    "onnxruntime": BackendSpec(
        "onnxruntime", graph_target="onnxruntime",
        open_runner="segdeploy.backends.onnxruntime:open_runner",
        build="segdeploy.backends.onnxruntime:build_artifact",
        why_not_here="segdeploy.backends.onnxruntime:why_not_here",
        preference=(ort_optimized("int8").name, INT8_GRAPHS["onnxruntime"].name, ort_optimized("fp32").name,
                    FP32_GRAPH.name, ort_optimized("fp16").name, FP16_GRAPH.name),
    ),
}


def backend(name: str) -> BackendSpec:
    """The registered backend `name`; an unknown one is a usage error listing the valid ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UsageError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}") from None


def backend_of(artifact) -> BackendSpec:
    """The backend that runs `artifact` (a manifest `Artifact`)."""
    if artifact.backend not in BACKENDS:
        raise SegdeployError(f"no backend {artifact.backend!r} in this segdeploy (artifact {artifact.file})",
                             "upgrade segdeploy, or rebuild the artifact")
    return BACKENDS[artifact.backend]


def preference(machine: str | None = None) -> list[str]:
    """Every backend's artifacts, most preferred first on `machine` (default: this one), for `Segmenter`."""
    machine = (machine or platform.machine()).lower()
    placed = [spec for spec in BACKENDS.values() if not spec.preferred_on or machine in spec.preferred_on]
    last = [spec for spec in BACKENDS.values() if spec not in placed]
    return [name for spec in placed + last for name in spec.preference]
