"""Whether an INT8 artifact computes exactly on this x86 CPU.

onnxruntime's and OpenVINO's INT8 kernels multiply U8 activations by S8 weights. With VNNI (or
AMX) the products accumulate in 32 bits. Without it (AVX2, AVX-512 before Cascade Lake), pairs of
products are first added in saturating 16-bit lanes: 255·127·2 > 32767, so a graph with 8-bit
weights gives wrong sums wherever large activations meet large weights of the same sign; 7-bit
weights (`build --reduce-range`, the default: 255·64·2 < 32767) are exact on every x86 CPU. Measured on
deeplabv3_resnet50 in OpenVINO with oneDNN limited to AVX2 or AVX512_CORE: the 8-bit graph's
error against FP32 doubled, the 7-bit graph's output did not change (README, *INT8 on x86 CPUs
without VNNI*).

`why_inexact` is the check the onnxruntime and OpenVINO backends run before an artifact is
chosen or opened (`backends.select.cannot_run_here`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA, which OpenVINO's CPU plugin honours) that lack VNNI
NO_VNNI_ISAS = {"SSE41", "AVX", "AVX2", "AVX512_CORE", "AVX512_MIC", "AVX512_MIC_4OPS"}
ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has VNNI (8-bit dot products that accumulate without saturating); None
    where the CPU's flags cannot be read (no /proc/cpuinfo: macOS, Windows)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return any(f in flags.split() for f in VNNI_FLAGS)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "x86", "i686")


def int8_dot_products_exact(runtime: str) -> tuple[bool, str]:
    """Whether `runtime`'s (onnxruntime or openvino) INT8 kernels on this CPU sum 8-bit products
    without saturating, and the reason when not."""
    if not is_x86():
        return True, ""
    if runtime == "openvino":
        isa = os.environ.get(ISA_VARIABLE, "").strip().upper()
        if isa in NO_VNNI_ISAS:
            return False, f"{ISA_VARIABLE}={isa} limits OpenVINO's kernels to an instruction set without VNNI"
    if cpu_has_vnni() is False:  # unknown (None): not refused on a guess
        return False, "this x86 CPU has no VNNI"
    return True, ""


def weights_record(precision: str, source) -> dict:
    """The settings an artifact built from the precision graph `source` (a manifest `Artifact`)
    carries so that `why_inexact` can judge it alone: its weights' width, for INT8."""
    return {"reduce_range": (source.settings or {}).get("reduce_range")} if precision == "int8" else {}


def why_inexact(artifact, runtime: str) -> str | None:
    """Why the INT8 `artifact` (a manifest `Artifact`) would compute wrong sums here, or None.

    Only artifacts recorded with 8-bit weights for a CPU runtime are refused (`settings.reduce_range`
    false); TensorRT's graph is for TensorRT, whose arithmetic does not saturate."""
    if artifact.precision != "int8" or (artifact.settings or {}).get("reduce_range") is not False:
        return None
    if artifact.target == "tensorrt":
        return None
    exact, reason = int8_dot_products_exact(runtime)
    if exact:
        return None
    backend = " --backend openvino" if runtime == "openvino" else ""
    return (f"{artifact.file} has 8-bit INT8 weights and {reason}: its INT8 kernels add pairs of 8-bit products "
            f"in 16-bit sums that overflow (wrong results); rebuild it with `segdeploy build DEPLOY_DIR -p int8{backend} "
            "--reduce-range` (7-bit weights: exact on every x86 CPU)")
