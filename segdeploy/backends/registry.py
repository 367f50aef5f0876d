"""The backends segdeploy builds for and runs: one entry each, the one place a backend is added.

An entry names, as ``"module:function"`` strings imported only when used (so this registry
stays light enough for `segdeploy --help`):

* `open_runner(manifest, name, RunOptions) -> Runner` for the artifacts whose `backend` it is;
* `why_not_here(artifact) -> str | None`: why such an artifact cannot run on this machine;
* `prepare(manifest, options) -> context`: checks made before a build starts any long step;
* `build(BuildStep) -> artifact name | None`: what `segdeploy build --backend NAME` adds on top
  of a precision graph (None: the precision graph itself is the artifact).

`graph_target` says which family of precision graphs it builds from (the INT8 Q/DQ graph made
for it, `precision.quantize.TARGETS`), and `preference` its artifacts in the order
`Segmenter` prefers them. Backends are listed most preferred first. See docs/design.md,
"Adding a backend".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest.names import FP16_GRAPH, FP32_GRAPH, INT8_GRAPHS, ort_optimized, tensorrt_engine


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
    "onnxruntime": BackendSpec(
        "onnxruntime", graph_target="onnxruntime",
        open_runner="segdeploy.backends.onnxruntime:open_runner",
        build="segdeploy.backends.onnxruntime:build_artifact",
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


def preference() -> list[str]:
    """Every backend's artifacts, most preferred first (`Segmenter`'s choice)."""
    return [name for spec in BACKENDS.values() for name in spec.preference]
