"""Shared fixtures: the trained demo U-Net exported once per session, copied for each test that changes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import textwrap

from hostile_helpers import CALIB, NET, invoke


def demo_request(out: Path, **changes):
    from segdeploy.export import ExportRequest
    from segdeploy.preprocess import Preprocess

    meta = json.loads((CALIB / "demo" / "model.json").read_text())
    fields = dict(source=meta["architecture"], out_dir=out, num_classes=meta["num_classes"],
                  model_kwargs=meta["model_kwargs"], weights=CALIB / "demo" / meta["weights"],
                  input_shape=tuple(meta["input_shape"]), classes_file=CALIB / "classes.json",
                  preprocess=Preprocess.from_dict(meta["preprocess"]))
    fields.update(changes)
    return ExportRequest(**fields)


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory) -> Path:
    """calib/demo/best.pth (a U-Net trained on calib/) exported at 1x3x96x128: read-only for tests."""
    from segdeploy.export import export_model

    out = tmp_path_factory.mktemp("demo") / "demo"
    export_model(demo_request(out))
    return out


@pytest.fixture
def deploy(demo_export, tmp_path) -> Path:
    """A private copy of the demo export, for tests that write into it."""
    target = tmp_path / "deploy"
    shutil.copytree(demo_export, target)
    return target


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, Path]:
    """A two-layer net exported (seed 0) and built at FP16: (deploy directory, the model file)."""
    net = tmp_path / "net.py"
    net.write_text(textwrap.dedent(NET))
    deploy = tmp_path / "tiny"
    assert invoke("export", f"{net}:build", "--input-shape", "1x3x32x48", "-o", deploy)[0] == 0
    assert invoke("build", deploy, "-p", "fp16", "--calib-size", "4")[0] == 0
    return deploy, net
