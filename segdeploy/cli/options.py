"""Options shared by several commands, declared once (`Annotated` aliases, as huggingface_hub's CLI does)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.backends.registry import BACKENDS
from segdeploy.manifest.names import PRECISIONS

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DeployDir = Annotated[Path, typer.Argument(help="Deploy directory (made by `segdeploy export`, filled by `build`).")]
ThreadsOption = Annotated[Optional[int], typer.Option(min=1, help="Intra-op threads (onnxruntime, PyTorch).")]

Precision = Enum("Precision", {p: p for p in PRECISIONS}, type=str)
Backend = Enum("Backend", {name: name for name in BACKENDS}, type=str)  # every registered backend


class CalibMethod(str, Enum):
    minmax = "minmax"
    mean_minmax = "mean-minmax"
    entropy = "entropy"
    percentile = "percentile"
    best = "best"


class WeightRounding(str, Enum):
    gptq = "gptq"
    nearest = "nearest"


def names(text: str | None) -> list[str]:
    """A comma-separated option value as a list of names."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else []
