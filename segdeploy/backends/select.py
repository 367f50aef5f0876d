"""Runners for manifest artifacts, and whether an artifact can run on this machine."""

from __future__ import annotations

from segdeploy.errors import SegdeployError
from segdeploy.manifest import Manifest


def cannot_run_here(entry: dict) -> str | None:
    """Why an artifact cannot run here (an engine without TensorRT runtime or GPU, no OpenVINO…), or None."""
    if entry.get("kind") == "openvino":
        from segdeploy.backends import openvino

        return openvino.cannot_run_here(entry)
    if entry.get("kind") != "engine":
        return None
    try:
        from segdeploy.backends.tensorrt.flavour import load_tensorrt

        load_tensorrt()
    except SegdeployError as exc:
        return f"no TensorRT runtime ({exc.message})"
    from segdeploy.backends.tensorrt.device import gpu_info

    if not gpu_info():
        return "no CUDA GPU on this machine"
    return None


def make_runner(manifest: Manifest, name: str, *, threads: int | None = None, providers: list[str] | None = None,
                cuda_graph: bool = False):
    """An (inactive) runner for artifact `name`; use it as a context manager.

    `cuda_graph` applies to TensorRT engines (their enqueue is replayed as a CUDA graph).
    """
    entry = manifest.artifact(name)
    path = manifest.directory / entry["file"]
    if entry.get("kind") == "engine":
        from segdeploy.backends.tensorrt.runner import TrtRunner

        return TrtRunner(path, entry, cuda_graph=cuda_graph)
    if entry.get("kind") == "openvino":
        from segdeploy.backends.openvino import OpenVinoRunner

        return OpenVinoRunner.for_artifact(manifest.directory, entry, threads=threads)
    from segdeploy.backends.onnxruntime import OrtRunner

    return OrtRunner(path, threads=threads, providers=providers)
