"""The environment a result was measured in: recorded with every benchmark."""

from __future__ import annotations

import os
import platform
import sys
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
    """GPU name, compute capability, CUDA and driver where a CUDA device is usable; empty otherwise."""
    from segdeploy.backends.tensorrt.device import gpu_info as device_gpu

    device = device_gpu()
    if not device:
        return {}
    import torch

    return {"gpu": device["name"], "compute_capability": device["compute_capability"], "cuda": torch.version.cuda,
            "driver": _driver_version()}


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
        # openvino only when a benched artifact loaded it (importing it here would load it for every bench)
        "versions": tool_versions("torch", "onnxruntime", "onnx", "tensorrt", "tensorrt_rtx", "numpy",
                                  *(["openvino"] if "openvino" in sys.modules else [])),
    }
