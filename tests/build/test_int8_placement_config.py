"""INT8 placement settings that need no TensorRT: one range cache for both targets, and a model with
nothing INT8 can speed up (`build -p int8` says so in one line and writes nothing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.cli import app
from segdeploy.manifest import Manifest

MODEL = f"{Path(__file__).with_name('placement_models.py')}:NoWeights"


@pytest.fixture(scope="module")
def noweights(tmp_path_factory):
    from segdeploy.export import ExportRequest, export_model

    out = tmp_path_factory.mktemp("noweights") / "deploy"
    export_model(ExportRequest(source=MODEL, out_dir=out, num_classes=3, input_shape=(1, 3, 64, 96)))
    return out


@pytest.mark.parametrize("backend", [["--backend", "onnxruntime"], ["--backend", "tensorrt", "--graph-only"]])
def test_nothing_quantizable_is_one_clear_line(noweights, calib_dir, backend):
    before = sorted(p.name for p in noweights.iterdir())
    result = CliRunner().invoke(app, ["build", str(noweights), "-p", "int8", "--calib", str(calib_dir), "--calib-size", "2",
                                      *backend])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing to quantize to INT8" in lines[0] and "Conv" in lines[0] and "fp16" in lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in noweights.iterdir()) == before  # no graph, no calibration cache, manifest untouched


def test_excluding_every_weighted_layer_says_so(tmp_path, calib_dir):
    from build_helpers import export_unet

    directory = export_unet(tmp_path / "unet")
    result = CliRunner().invoke(app, ["build", str(directory), "-p", "int8", "--calib", str(calib_dir), "--calib-size", "2",
                                      "--exclude-ops", "Conv,ConvTranspose"])
    assert result.exit_code == 1 and "left after --exclude-nodes/--exclude-ops" in result.output
    assert not list(directory.glob("model.int8*")) and not list(directory.glob("calib-cache*"))


def test_one_range_cache_serves_both_targets(tmp_path, calib_dir):
    """The TensorRT placement quantizes fewer tensors but calibrates the same ones: an onnxruntime
    graph made from ranges a TensorRT build cached is the graph a fresh onnxruntime build makes."""
    from segdeploy.export import ExportRequest, export_model

    source = f"{Path(__file__).with_name('placement_models.py')}:Gated"
    first, alone = tmp_path / "first", tmp_path / "alone"
    export_model(ExportRequest(source=source, out_dir=first, num_classes=3, input_shape=(1, 3, 64, 96)))
    shutil.copytree(first, alone)
    options = BuildOptions(calib=calib_dir, calib_size=4)
    build_artifacts(first, ["int8"], "tensorrt", BuildOptions(calib=calib_dir, calib_size=4, graph_only=True))
    build_artifacts(first, ["int8"], "onnxruntime", options)
    assert Manifest.load(first).artifact("onnx-int8-ort")["calibration"]["reused_cache"]
    build_artifacts(alone, ["int8"], "onnxruntime", options)
    assert not Manifest.load(alone).artifact("onnx-int8-ort")["calibration"]["reused_cache"]
    assert (first / "model.int8-ort.onnx").read_bytes() == (alone / "model.int8-ort.onnx").read_bytes()
