"""onnxruntime backend: the artifact is the precision graph itself, optionally saved pre-optimized."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.atomic import atomic_path
from segdeploy.backends.base import Runner
from segdeploy.errors import SegdeployError

# Most capable first: a runner asked for "all available" tries them in this order.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build has, most capable first."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in PROVIDER_PREFERENCE if p in have] + [p for p in have if p not in PROVIDER_PREFERENCE]


def resolve_providers(providers: list[str] | None) -> list[str]:
    """`None` → CPU; "all" → every available provider; names are checked against the installed build."""
    if not providers:
        return ["CPUExecutionProvider"]
    have = available_providers()
    if providers == ["all"]:
        return have
    names = [p if p.endswith("ExecutionProvider") else f"{p}ExecutionProvider" for p in providers]
    missing = [p for p in names if p not in have]
    if missing:
        raise SegdeployError(f"onnxruntime here has no {', '.join(missing)}; available: {', '.join(have)}",
                             "install onnxruntime-gpu for CUDA/TensorRT providers")
    return names


def session_options(threads: int | None = None, optimized_path: Path | None = None, level: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def build(graph_path: Path, out_path: Path, *, level: str = "extended") -> dict:
    """Save the graph with onnxruntime's CPU graph optimizations applied (offline optimization).

    The saved graph may hold onnxruntime-only fused operators: it is for onnxruntime's CPU
    provider of the same version, which is recorded with it.
    """
    import onnxruntime as ort

    with atomic_path(out_path) as tmp:
        try:
            ort.InferenceSession(str(graph_path), session_options(optimized_path=tmp, level=level),
                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SegdeployError(f"onnxruntime cannot load {graph_path.name}: {str(exc).splitlines()[0][:300]}") from None
    return {"optimization_level": level, "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__}


class OrtRunner(Runner):
    """Runs an ONNX graph with the chosen execution providers and thread count."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.providers = resolve_providers(providers)
        self.threads = threads
        self.session = None

    def _activate(self) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(self.path), session_options(self.threads), providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise SegdeployError(f"onnxruntime cannot load {self.path}: {str(exc).splitlines()[0][:300]}") from None

    def _deactivate(self) -> None:
        self.session = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def _infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = set(self.input_names)
        if set(batch) != expected:
            raise SegdeployError(f"inputs {sorted(batch)} do not match the graph's {sorted(expected)}")
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, batch)))


def why_not_here(artifact) -> str | None:
    """Why an onnxruntime artifact cannot run here: an INT8 graph with 8-bit weights on an x86 CPU
    without VNNI (`x86_int8`), else None."""
    from segdeploy.backends.x86_int8 import why_inexact

    return why_inexact(artifact, "onnxruntime")


def open_runner(manifest, name: str, options) -> OrtRunner:
    """The registry's runner factory: artifact `name` of `manifest` with `options` (`registry.RunOptions`)."""
    return OrtRunner(manifest.directory / manifest.artifact(name).file, threads=options.threads, providers=options.providers)


def build_artifact(job) -> str | None:
    """`build --backend onnxruntime`: the precision graph is the artifact; with `--ort-optimize` also save it
    with onnxruntime's CPU graph optimizations applied, recorded as `ort-<precision>`."""
    from segdeploy.backends.x86_int8 import weights_record
    from segdeploy.manifest import tool_versions
    from segdeploy.manifest.names import ONNX, ort_optimized

    if not job.options.ort_optimize:
        return None
    manifest, made = job.manifest, ort_optimized(job.precision)
    job.step(f"saving {job.precision} graph with onnxruntime optimizations")
    settings = build(manifest.verify(job.graph), manifest.directory / made.file)
    graph = manifest.artifact(job.graph)
    settings.update(weights_record(job.precision, graph))
    manifest.add_artifact(made.name, made.file, kind=ONNX, precision=job.precision, backend="onnxruntime",
                          target="onnxruntime-cpu", parent=job.graph, inputs=graph.inputs, outputs=graph.outputs,
                          settings=settings, tool_versions=tool_versions("onnxruntime"))
    return made.name
