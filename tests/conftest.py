"""Shared test fixtures: the CLI (in-process and as a subprocess), shared data location, tiny exported
deploy directories and calibration folders (`tests/helpers.py` makes them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import export_unet, write_images

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


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Session cache of exported deploy dirs: exported('static') / exported('dynamic')."""
    root = tmp_path_factory.mktemp("exports")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            dynamic = {"batch", "height", "width"} if kind == "dynamic" else set()
            cache[kind] = export_unet(root / kind, dynamic)
        return cache[kind]

    return get


@pytest.fixture
def deploy(exported, tmp_path):
    """A fresh copy of an exported tiny U-Net deploy directory: deploy('static'|'dynamic')."""

    def make(kind: str = "static") -> Path:
        target = tmp_path / f"deploy-{kind}"
        shutil.copytree(exported(kind), target)
        return target

    return make


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("calib"), 12)


# -- the outlier model (naive INT8 breaks it): tests of INT8 within a budget and `inspect precision`

@pytest.fixture(scope="session")
def outlier_export(tmp_path_factory):
    from segdeploy.export import ExportRequest, export_model

    out = tmp_path_factory.mktemp("outlier") / "deploy"
    source = f"{Path(__file__).with_name('outlier_model.py')}:OutlierNet"  # the file.py:Factory source form
    export_model(ExportRequest(source=source, out_dir=out, num_classes=3, input_shape=(1, 3, 64, 96)))
    return out


@pytest.fixture(scope="session")
def outlier_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return write_images(root / "calib", 12, seed=0), write_images(root / "eval", 8, seed=1)


@pytest.fixture
def outlier(outlier_export, tmp_path):
    target = tmp_path / "deploy"
    shutil.copytree(outlier_export, target)
    return target


def requires_camvid():
    return pytest.mark.skipif(not CAMVID.is_dir(), reason=f"CamVid data not found at {CAMVID} (research-use, never in the repo)")
