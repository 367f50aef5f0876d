"""Helpers shared by the tests (a plain module: `conftest` names clash across folders).

The independent references here use only PIL, numpy and onnxruntime sessions, never
segdeploy's own preprocessing or evaluation, so a test built on them can catch a defect there.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY_SHAPE = (1, 3, 96, 160)  # non-square: an H/W swap shows up as a shape error


def export_unet(out: Path, dynamic: set[str] = frozenset(), shape=TINY_SHAPE) -> Path:
    from segdeploy.export import ExportRequest, export_model

    export_model(ExportRequest(source="unet", out_dir=out, model_kwargs={"width": 0.125}, num_classes=5,
                               input_shape=shape, dynamic=set(dynamic)))
    return out


CALIB = REPO / "calib"
DEMO_WEIGHTS = CALIB / "demo" / "best.pth"  # the shipped U-Net, trained on calib/: its class maps vary
IMAGENET_MEAN, IMAGENET_STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])


# The shipped demo U-Net as a pipeline config's `models:` list (YAML text).
DEMO_MODEL_YAML = f"""
models:
  - name: demo
    source: unet
    model_kwargs: {{width: 0.125}}
    num_classes: 6
    weights: {CALIB / "demo" / "best.pth"}
    input_shape: 1x3x96x128
    classes: {CALIB / "classes.json"}
"""


def export_demo(out: Path, *, fusion=None, dynamic: set[str] = frozenset(), shape=(1, 3, 96, 128)) -> Path:
    """The trained demo U-Net (6 classes, calib/classes.json) exported to `out`."""
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.export.fused import Fusion

    export_model(ExportRequest(source="unet", out_dir=out, model_kwargs={"width": 0.125}, num_classes=6,
                               weights=DEMO_WEIGHTS, input_shape=shape, dynamic=set(dynamic),
                               classes_file=CALIB / "classes.json", fusion=fusion or Fusion()))
    return out


def demo_model():
    """The demo U-Net in PyTorch, eval mode."""
    import torch

    from segdeploy.models import get_spec

    model = get_spec("unet").build(num_classes=6, width=0.125)
    model.load_state_dict(torch.load(DEMO_WEIGHTS, weights_only=True))
    return model.eval()


def canvases(paths, hw) -> np.ndarray:
    """Images stretched to `hw` with PIL's bilinear resize: N×H×W×3 uint8 RGB."""
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR)) for p in paths])


def graph_outputs(graph: Path, images: np.ndarray, *, fused_input: bool = False) -> list[np.ndarray]:
    """An ONNX graph's output for each uint8 canvas, one image at a time, in a plain onnxruntime session:
    ImageNet-normalised NCHW float input unless the graph takes the canvases itself."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    outputs = []
    for canvas in images:
        x = canvas[None] if fused_input else ((canvas - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
        outputs.append(session.run(None, {"input": x})[0])
    return outputs


def graph_class_maps(graph: Path, images: np.ndarray, *, fused_input: bool = False) -> np.ndarray:
    """The class maps (model resolution) of `graph_outputs`: its own class map, or the argmax over classes."""
    return np.stack([out[0] if out.ndim == 3 else out[0].argmax(0)
                     for out in graph_outputs(graph, images, fused_input=fused_input)])


def calib_val_images(calibrated: int, at_most: int = 32) -> list[Path]:
    """The shipped calib/ val images that `select_images(calib, calibrated)` did not take, at most
    `at_most` spread evenly: the held-out set `--calib-method best` judges methods on (its documented rule)."""
    images = sorted((CALIB / "images").iterdir())
    taken = {images[i] for i in np.linspace(0, len(images) - 1, calibrated).round().astype(int)}
    val = set((CALIB / "splits" / "val.txt").read_text().split())
    pool = [p for p in images if p.stem in val and p not in taken]
    return [pool[i] for i in sorted(set(np.linspace(0, len(pool) - 1, min(at_most, len(pool))).round().astype(int)))]


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


# -- the CLI as a user meets it, and refusals: one line, exit ≠ 0, no traceback, nothing changed ----------

# A two-layer net (factory `build`, seeded): exports in a second.
NET = '''
import torch
import torch.nn as nn

def build(num_classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))
'''
LOCK = ".segdeploy.lock"  # segdeploy's own bookkeeping (holds the last locker's pid): not a user's file


def invoke(*args, cwd: Path | None = None, quiet: bool = True) -> tuple[int, str, str]:
    """The CLI in-process; returns (exit code, stdout, stderr). `quiet`: library warnings off, as `main` runs it."""
    from typer.testing import CliRunner

    from segdeploy.cli import app

    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an exception escaping the CLI is the traceback a user would see
    return result.exit_code, result.stdout, result.stderr


def run_cli(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (signals, kills, locks between processes, the terminal's encoding).
    SEGDEPLOY_DEBUG is dropped unless `env` sets it."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if not (env or {}).get("SEGDEPLOY_DEBUG"):
        full_env.pop("SEGDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "segdeploy", *map(str, args)], env=full_env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, errors="backslashreplace")


def one_line_failure(code: int, stdout: str, stderr: str, *, contains: str | tuple[str, ...] = (), exit_code=None) -> str:
    """Assert a refusal as users must see it; return its line."""
    assert code != 0, f"expected a failure, got exit 0; stdout: {stdout[-500:]}"
    if exit_code is not None:
        assert code == exit_code, (code, stderr)
    assert "Traceback" not in stdout + stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    for text in (contains,) if isinstance(contains, str) else contains:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def fails(*args, contains: str | tuple[str, ...] = (), exit_code=None, cwd: Path | None = None) -> str:
    """Run the CLI in-process and assert `one_line_failure`."""
    return one_line_failure(*invoke(*args, cwd=cwd), contains=contains, exit_code=exit_code)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file (and the set of folders) under `roots`, to prove a refusal changed nothing."""
    state = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            state[str(root)] = _sha(root)
            continue
        for path in sorted(root.rglob("*")):
            if path.name == LOCK:
                continue
            state[str(path)] = "dir" if path.is_dir() else ("link" if path.is_symlink() else _sha(path))
    return state


def forget_artifact(deploy: Path, name: str) -> None:
    """Remove artifact `name` from a deploy directory (its file and its manifest entry), as if never built."""
    from segdeploy.manifest import Manifest

    manifest = Manifest.load(deploy)
    (deploy / manifest.artifact(name).file).unlink()
    del manifest.artifacts[name]
    manifest.save()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_png16(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit RGB PNG (colour type 2, bit depth 16), which Pillow cannot write, encoded by hand."""
    height, width, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def val_stems(count: int) -> list[str]:
    """The first `count` stems of calib/'s val split (frames the demo model was not trained on)."""
    return (CALIB / "splits" / "val.txt").read_text().split()[:count]
