"""Helpers of the hostile-input suite: a refusal is one line, exit ≠ 0, no traceback, nothing changed."""

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
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
CALIB = REPO / "calib"
# A two-layer net (factory `build`, seeded): exports in a second.
NET = '''
import torch
import torch.nn as nn

def build(num_classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))
'''
LOCK = ".segdeploy.lock"  # segdeploy's own bookkeeping (holds the last locker's pid): not a user's file


def invoke(*args: str, cwd: Path | None = None):
    """The CLI in-process (as `main` runs it: library warnings quiet); returns (exit code, stdout, stderr)."""
    from segdeploy.cli import app

    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an exception escaping the CLI is the traceback a user would see
    return result.exit_code, result.stdout, result.stderr


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (signals, kills, locks between processes, the terminal's encoding)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
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
