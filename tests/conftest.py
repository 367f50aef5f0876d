"""Shared test fixtures: the CLI (in-process and as a subprocess), shared data location, tiny exported
deploy directories and calibration folders (`tests/helpers.py` makes them)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import CALIB, NET, export_demo, export_unet, invoke, run_cli, write_images

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAMVID = SHARED / "camvid"
CAMVID_MODEL = SHARED / "models" / "camvid_lraspp_mbv3.pth"

# Under pytest-xdist each worker gets one intra-op thread, so workers do not oversubscribe the cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


def run_segdeploy(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run the real CLI in a subprocess (exit codes, stderr, files exactly as a user sees them)."""
    return run_cli(*args, cwd=cwd, env=env)


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def invoke_segdeploy(*args: str, cwd: Path | None = None) -> _Result:
    """Run the CLI in-process (Typer's CliRunner): same app, same exit codes, no torch re-import."""
    return _Result(*invoke(*args, cwd=cwd, quiet=False))


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
def demo_export(tmp_path_factory) -> Path:
    """calib/demo/best.pth (a U-Net trained on calib/: its class maps vary) exported at 1x3x96x128: read-only."""
    return export_demo(tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture
def demo_copy(demo_export, tmp_path) -> Path:
    """A private copy of the demo export, for tests that write into it."""
    target = tmp_path / "deploy"
    shutil.copytree(demo_export, target)
    return target


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    """A two-layer net (`tests.helpers.NET`, seed 0) exported and built at FP16: (deploy directory, the model file)."""
    net = tmp_path / "net.py"
    net.write_text(textwrap.dedent(NET))
    deploy = tmp_path / "tiny"
    assert invoke("export", f"{net}:build", "--input-shape", "1x3x32x48", "-o", deploy)[0] == 0
    assert invoke("build", deploy, "-p", "fp16", "--calib-size", "4")[0] == 0
    return deploy, net


@pytest.fixture
def scene_images(tmp_path) -> Path:
    """Three calib/ images in a folder of their own (no classes.json: the tiny model has its own classes)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("scene_0000.jpg", "scene_0001.jpg", "scene_0002.jpg"):
        shutil.copy(CALIB / "images" / name, folder)
    return folder


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
