"""Helpers shared by the build tests (a plain module: `conftest` names clash across folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TINY_SHAPE = (1, 3, 96, 160)  # non-square: an H/W swap shows up as a shape error


def export_unet(out: Path, dynamic: set[str] = frozenset(), shape=TINY_SHAPE) -> Path:
    from segdeploy.export import ExportRequest, export_model

    export_model(ExportRequest(source="unet", out_dir=out, model_kwargs={"width": 0.125}, num_classes=5,
                               input_shape=shape, dynamic=set(dynamic)))
    return out


def write_images(folder: Path, count: int, size=(120, 200), seed: int = 0) -> Path:
    """Smooth random colour fields (not white noise), so activations look a little like images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = (rng.random((6, 10, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)
        image.save(folder / f"frame_{i:03d}.png")
    return folder


def has_tensorrt() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))


requires_tensorrt = pytest.mark.skipif(not has_tensorrt(), reason="neither tensorrt nor tensorrt_rtx is installed")
