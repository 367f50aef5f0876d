"""The environment a result was measured in: recorded with every benchmark."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from segdeploy.manifest import tool_versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict:
    """GPU name, compute capability and driver where torch sees a CUDA device; empty otherwise."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {}
        props = torch.cuda.get_device_properties(0)
        return {
            "gpu": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "driver": _driver_version(),
        }
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        return {}


def _driver_version() -> str | None:
    path = Path("/proc/driver/nvidia/version")
    if path.is_file():
        first = path.read_text().splitlines()[0]
        for token in first.split():
            if token[:1].isdigit() and "." in token:
                return token
    return None


def environment(threads: int | None = None) -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        **gpu_info(),
        "versions": tool_versions("torch", "onnxruntime", "onnx", "tensorrt", "tensorrt_rtx", "numpy"),
    }
