"""Which TensorRT is installed: `tensorrt` (8.6 / 10.x / 11.x) or `tensorrt_rtx`.

One code path for all of them (docs/design.md, "TensorRT"): features are detected with `hasattr`, never
assumed from a version number alone.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from segdeploy.errors import SegdeployError

MODULES = ("tensorrt", "tensorrt_rtx")
INSTALL_HINT = (
    "desktop/server with an NVIDIA GPU: `pip install tensorrt`; RTX GPUs or CPU-only ahead-of-time builds: "
    "`pip install tensorrt-rtx-cu13` (segdeploy[tensorrt-rtx]); Jetson: TensorRT comes with JetPack "
    "(`sudo apt install python3-libnvinfer`), build on the Jetson itself"
)


@dataclass(frozen=True)
class Flavour:
    module: Any
    name: str  # import name: "tensorrt" or "tensorrt_rtx"
    version: str

    @property
    def api(self):
        """The module, which the type checker reads as the TensorRT 10 Python API (`tensorrt-stubs`).

        TensorRT-RTX and TensorRT 8.6/11 share that API for everything segdeploy calls except
        what is feature-detected by name (`hasattr`/`getattr`); see tests/backends/test_tensorrt_api.py.
        """
        if TYPE_CHECKING:
            import tensorrt

            return tensorrt
        return self.module

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version}"

    def record(self) -> dict:
        return {"flavour": self.name, "version": self.version}


def load_tensorrt() -> Flavour:
    """Import `tensorrt`, falling back to `tensorrt_rtx`; a clear error if neither is there."""
    problems = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
            continue
        except OSError as exc:  # the wheel is there but its shared libraries are not loadable
            problems.append(f"{name}: {exc}")
            continue
        return Flavour(module=module, name=name, version=str(module.__version__))
    raise SegdeployError("--backend tensorrt needs TensorRT, and neither tensorrt nor tensorrt_rtx can be imported", INSTALL_HINT)


def dims(shape) -> tuple[int, ...]:
    """A TensorRT `Dims` as a tuple (Dims is indexable; its API declares no iteration)."""
    return tuple(int(shape[i]) for i in range(len(shape)))


def describe_record(record) -> str:
    """'TensorRT-RTX 1.7.1' from a manifest's `TensorRTVersion` record (None: unknown)."""
    if record is None:
        return "an unknown TensorRT"
    name = "TensorRT-RTX" if record.flavour == "tensorrt_rtx" else "TensorRT"
    return f"{name} {record.version}"
