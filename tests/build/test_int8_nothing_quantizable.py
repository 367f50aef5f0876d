"""A model with nothing INT8 can speed up: `build -p int8` says so in one line and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from segdeploy.cli import app

MODEL = f"{Path(__file__).with_name('placement_models.py')}:NoWeights"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from segdeploy.export import ExportRequest, export_model

    out = tmp_path_factory.mktemp("noweights") / "deploy"
    export_model(ExportRequest(source=MODEL, out_dir=out, num_classes=3, input_shape=(1, 3, 64, 96)))
    return out


@pytest.mark.parametrize("backend", [["--backend", "onnxruntime"], ["--backend", "tensorrt", "--graph-only"]])
def test_nothing_quantizable_is_one_clear_line(exported, calib_dir, backend):
    before = sorted(p.name for p in exported.iterdir())
    result = CliRunner().invoke(app, ["build", str(exported), "-p", "int8", "--calib", str(calib_dir), "--calib-size", "2",
                                      *backend])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing to quantize to INT8" in lines[0] and "Conv" in lines[0] and "fp16" in lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in exported.iterdir()) == before  # no graph, no calibration cache, manifest untouched


def test_excluding_every_weighted_layer_says_so(tmp_path, calib_dir):
    from build_helpers import export_unet

    directory = export_unet(tmp_path / "unet")
    result = CliRunner().invoke(app, ["build", str(directory), "-p", "int8", "--calib", str(calib_dir), "--calib-size", "2",
                                      "--exclude-ops", "Conv,ConvTranspose"])
    assert result.exit_code == 1 and "left after --exclude-nodes/--exclude-ops" in result.output
    assert not list(directory.glob("model.int8*")) and not list(directory.glob("calib-cache*"))
