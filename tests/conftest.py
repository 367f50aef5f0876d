"""Shared test fixtures: the CLI (in-process and as a subprocess), shared data location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAMVID = SHARED / "camvid"
CAMVID_MODEL = SHARED / "models" / "camvid_lraspp_mbv3.pth"

# Under pytest-xdist each worker gets one intra-op thread, so workers do not oversubscribe the cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


def run_segdeploy(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (exit codes, stderr, files exactly as a user sees them)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("SEGDEPLOY_DEBUG", None) if not (env or {}).get("SEGDEPLOY_DEBUG") else None
    return subprocess.run(
        [sys.executable, "-m", "segdeploy", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600
    )


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def invoke_segdeploy(*args: str, cwd: Path | None = None) -> _Result:
    """Run the CLI in-process (Typer's CliRunner): same app, same exit codes, no torch re-import."""
    from typer.testing import CliRunner

    from segdeploy.cli import app

    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli():
    """The CLI in-process; use `cli_subprocess` where the real process boundary matters."""
    return invoke_segdeploy


@pytest.fixture
def cli_subprocess():
    return run_segdeploy


def requires_camvid():
    return pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid data not found at {CAMVID} (research-use, never in the repo)")
