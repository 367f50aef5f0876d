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
