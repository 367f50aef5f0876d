"""Runners for manifest artifacts, and whether an artifact can run on this machine (via `registry`)."""

from __future__ import annotations

from segdeploy.backends.registry import RunOptions, backend_of


def cannot_run_here(artifact) -> str | None:
    """Why `artifact` (a manifest `Artifact`) cannot run here (an engine without TensorRT or GPU), or None."""
    spec = backend_of(artifact)
    return spec.call("why_not_here", artifact) if spec.why_not_here else None


def make_runner(manifest, name: str, *, threads: int | None = None, providers: list[str] | None = None,
                cuda_graph: bool = False):
    """An (inactive) runner for artifact `name`; use it as a context manager.

    `cuda_graph` applies to TensorRT engines (their enqueue is replayed as a CUDA graph).
    """
    options = RunOptions(threads=threads, providers=providers, cuda_graph=cuda_graph)
    return backend_of(manifest.artifact(name)).call("open_runner", manifest, name, options)
