"""The GPU an engine is built on or run on (through torch, which segdeploy always has)."""

from __future__ import annotations


def gpu_info() -> dict | None:
    """{'name', 'compute_capability'} of CUDA device 0, or None when there is no usable GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(0)
        return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except (ImportError, RuntimeError, AssertionError):  # a CPU-only torch, or a broken driver
        return None


def sm_number(compute_capability: str) -> int:
    """'8.6' or '86' → 86."""
    return int(compute_capability.replace(".", ""))
