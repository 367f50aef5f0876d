"""Fixtures for the build tests: tiny exported deploy directories and calibration folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from build_helpers import export_unet, write_images

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
