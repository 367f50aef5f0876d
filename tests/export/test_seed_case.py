"""Seed 001's case through the real CLI: torchvision deeplabv3_resnet50, 1x3x512x1024, opset 11."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_deeplabv3_resnet50_full_size_export(cli, tmp_path):
    out = tmp_path / "deploy"
    proc = cli("export", "deeplabv3_resnet50", "--num-classes", "11", "--input-shape", "1x3x512x1024", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["opset"] == 11
    assert summary["outputs"][0]["shape"] == [1, 11, 512, 1024]
    assert summary["parity"]["passed"] and summary["parity"]["min_argmax_agreement"] >= 0.999
