"""What `bench` measures: the PyTorch reference plus the deploy directory's runnable artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from segdeploy.backends.select import cannot_run_here, make_runner
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.graph_spec import GraphSpec
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import ENGINE

REFERENCE = "pytorch"


@dataclass
class Target:
    """One thing to bench: a name, how it runs, and a factory for its runner (a context manager)."""

    name: str
    backend: str
    precision: str
    open: Callable[[], object]  # -> Runner-like: `with r:`, `r.infer({name: array}) -> {name: array}`
    target: str = ""  # the runtime family a precision graph was made for (e.g. tensorrt)
    cuda_graph: bool = False  # its enqueue is replayed as a CUDA graph (TensorRT engines, on request)


@dataclass
class Skipped:
    name: str
    reason: str


def select_targets(
    manifest: Manifest, names: list[str] | None, backends: list[str] | None, threads: int | None,
    cuda_graph: bool = False, unsafe_load: bool = False,
) -> tuple[Target, list[Target], list[Skipped]]:
    """The PyTorch reference, the artifacts to bench, and those that cannot run here (with why).

    `cuda_graph` asks for CUDA-graph replay, which only TensorRT engines have: asked for with
    no engine that runs here, it is an error rather than a flag silently ignored.
    """
    artifacts = manifest.artifacts
    if not artifacts:
        raise SegdeployError(f"{manifest.directory} has no artifacts", "run `segdeploy export` and `segdeploy build` first")
    unknown = [n for n in names or [] if n not in artifacts]
    if unknown:
        raise UsageError(f"no artifact {', '.join(unknown)} in {manifest.directory}; artifacts: {', '.join(artifacts)}")
    chosen = [n for n in artifacts if (not names or n in names)]
    chosen = [n for n in chosen if not backends or artifacts[n].backend in backends]
    if not chosen:
        raise UsageError(f"no artifact of backend {', '.join(backends or [])} in {manifest.directory}")
    targets, skipped = [], []
    for name in chosen:
        manifest.verify(name)  # a modified artifact is an error, never a silent skip
        entry = artifacts[name]
        reason = cannot_run_here(entry)
        if reason and names and name in names:
            raise SegdeployError(f"artifact {name} cannot run here: {reason}")
        if reason:
            skipped.append(Skipped(name, reason))
            continue
        targets.append(_artifact_target(manifest, name, entry, threads, cuda_graph))
    if cuda_graph and not any(t.cuda_graph for t in targets):
        why = "; ".join(f"{s.name}: {s.reason}" for s in skipped if manifest.artifacts[s.name].kind == ENGINE)
        raise UsageError("--cuda-graph applies to TensorRT engines, and no engine is benched here" + (f" ({why})" if why else ""),
                         "build one with `segdeploy build DEPLOY_DIR --backend tensorrt`, or drop --cuda-graph")
    return reference_target(manifest, threads, unsafe_load), targets, skipped


def _artifact_target(manifest: Manifest, name: str, entry, threads: int | None, cuda_graph: bool) -> Target:
    graph = cuda_graph and entry.kind == ENGINE
    factory = lambda: make_runner(manifest, name, threads=threads, cuda_graph=graph)  # noqa: E731
    return Target(name, entry.backend, entry.precision, factory, entry.target or "", graph)


def reference_target(manifest: Manifest, threads: int | None, unsafe_load: bool = False) -> Target:
    """PyTorch eager, rebuilt from what the manifest recorded (source, kwargs, weights)."""
    from segdeploy.backends.torch import TorchRunner, reference_module

    spec = GraphSpec.of(manifest).unfused()  # the reference is the plain model, even for a fused export

    def open_reference() -> TorchRunner:
        return TorchRunner(reference_module(manifest, unsafe_load), input_name=spec.input_name, output_name=spec.output_name,
                           threads=threads)

    return Target(REFERENCE, "torch", "fp32", open_reference)
