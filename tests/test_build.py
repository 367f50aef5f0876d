"""`segdeploy build` through the real CLI: exit codes, files, manifest entries, messages."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from segdeploy.atomic import sha256_file
from segdeploy.cli import app
from segdeploy.manifest import Manifest

from tests.helpers import CALIB, canvases, graph_outputs, requires_tensorrt, write_images

runner = CliRunner()


def build(*args: str):
    return runner.invoke(app, ["build", *map(str, args)])


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def test_onnxruntime_fp16_int8_recorded_and_their_drift_measured(demo_export, tmp_path):
    """The trained demo U-Net on calib/ scenes: every recorded drift figure is reproduced here with
    PIL, numpy and onnxruntime on the same four calibration images."""
    directory = tmp_path / "deploy"
    shutil.copytree(demo_export, directory)
    result = build(directory, "-p", "fp16", "-p", "int8", "--calib", CALIB, "--calib-size", "8", "--json")
    assert result.exit_code == 0, result.output
    names = [a["name"] for a in json.loads(result.stdout)["artifacts"]]
    assert names == ["onnx-fp16", "onnx-int8-ort"]
    manifest = Manifest.load(directory)
    images = sorted((CALIB / "images").iterdir())
    checked = [images[i] for i in np.linspace(0, len(images) - 1, 8).round().astype(int)][:4]  # the first 4 of 8 calibration images
    pixels = canvases(checked, (96, 128))
    fp32 = graph_outputs(directory / "model.onnx", pixels)
    assert len(np.unique(np.concatenate([o.argmax(1).ravel() for o in fp32]))) >= 4  # the class maps vary
    for name in names:
        entry = manifest.artifact(name)
        assert entry.sha256 == sha256_file(directory / entry.file)
        assert entry.parent == "onnx-fp32" and entry.inputs[0].name == "input" and entry.parity.batches == 4
        got = graph_outputs(directory / entry.file, pixels)
        agreements = [np.mean(a.argmax(1) == b.argmax(1)) for a, b in zip(fp32, got)]
        assert entry.parity.argmax_agreement == pytest.approx(np.mean(agreements), abs=1e-9)
        assert entry.parity.min_argmax_agreement == pytest.approx(min(agreements), abs=1e-9)
        rel = max(np.abs(a - b).max() / (a.max() - a.min()) for a, b in zip(fp32, got))
        assert entry.parity.max_rel_error == pytest.approx(rel, rel=1e-2)  # inputs normalised in float64 here, float32 there
    int8 = manifest.artifact("onnx-int8-ort")
    assert int8.calibration.images == 8 and int8.calibration.method == "percentile"
    assert int8.calibration.percentile == 99.99  # the onnxruntime default (README, "INT8 accuracy")
    assert int8.bias_correction.enabled and int8.bias_correction.layers_corrected > 0
    assert int8.settings["activation_type"] == "QUInt8"
    assert (directory / int8.calibration.cache).is_file()


def test_second_build_reuses_calibration_cache(deploy, calib_dir):
    directory = deploy("static")
    assert build(directory, "-p", "int8", "--calib", calib_dir, "--calib-size", "6").exit_code == 0
    result = build(directory, "-p", "int8", "--calib", calib_dir, "--calib-size", "6", "--json")
    assert result.exit_code == 0, result.output
    assert Manifest.load(directory).artifact("onnx-int8-ort").calibration.reused_cache is True
    # a different method is a different cache
    assert build(directory, "-p", "int8", "--calib", calib_dir, "--calib-size", "6", "--calib-method", "minmax").exit_code == 0
    assert len(list(directory.glob("calib-cache.*.json"))) == 2


def test_ort_optimize_saves_an_optimized_graph(deploy):
    directory = deploy("static")
    result = build(directory, "-p", "fp32", "--ort-optimize")
    assert result.exit_code == 0, result.output
    entry = Manifest.load(directory).artifact("ort-fp32")
    assert entry.parent == "onnx-fp32" and (directory / entry.file).is_file()


def _assert_one_line_error(result, text, exit_code=None):
    assert result.exit_code != 0, result.output
    if exit_code is not None:
        assert result.exit_code == exit_code
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines and text in lines[-1], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("make_folder, message", [
    (lambda p: p.mkdir() or p, "no images"),
    (lambda p: p, "image folder not found"),
])
def test_bad_calibration_folder(deploy, tmp_path, make_folder, message):
    directory = deploy("static")
    before = _files(directory)
    result = build(directory, "-p", "fp16", "-p", "int8", "--calib", make_folder(tmp_path / "calib"))
    _assert_one_line_error(result, message)
    assert _files(directory) == before  # checked before anything is written


def test_unreadable_calibration_image(deploy, tmp_path):
    directory = deploy("static")
    folder = write_images(tmp_path / "calib", 3)
    (folder / "frame_001.png").write_bytes(b"\x89PNG truncated")
    before = _files(directory)
    result = build(directory, "-p", "int8", "--calib", folder)
    _assert_one_line_error(result, "frame_001.png")
    assert _files(directory) == before


def test_fewer_images_than_asked_warns(deploy, tmp_path):
    directory = deploy("static")
    result = build(directory, "-p", "int8", "--calib", write_images(tmp_path / "calib", 3), "--calib-size", "40")
    assert result.exit_code == 0, result.output
    assert "only 3 calibration images" in result.stderr
    assert Manifest.load(directory).artifact("onnx-int8-ort").calibration.images == 3


@pytest.mark.parametrize("args, message", [
    # the TensorRT graph's mean-minmax (a range from each image's extremes) needs 8; a folder of 4
    (["--backend", "tensorrt", "--graph-only", "--calib-size", "100"],
     "4 calibration images are too few for mean-minmax calibration: it needs at least 8"),
    (["--calib-method", "mean-minmax", "--calib-size", "3"],
     "3 calibration images are too few for mean-minmax calibration: it needs at least 8"),
    (["--calib-method", "best"], "too few for --calib-method best (it tries every method): it needs at least 8"),
    (["--calib-size", "1"], "1 calibration image is too few for percentile calibration: it needs at least 2"),
])
def test_calibration_set_too_small_for_the_method(deploy, tmp_path, args, message):
    directory = deploy("static")
    before = _files(directory)
    result = build(directory, "-p", "fp32", "-p", "int8", "--calib", write_images(tmp_path / "calib", 4), *args)
    _assert_one_line_error(result, message, exit_code=2)
    need = 2 if "percentile" in message else 8
    assert f"calibrate on at least {need} images like those the model will see: --calib-size {need} or more" in result.stderr
    assert _files(directory) == before and "onnx-int8-ort" not in Manifest.load(directory).artifacts


def test_calibration_minimum_is_met_exactly(deploy, tmp_path):
    directory = deploy("static")
    result = build(directory, "-p", "int8", "--backend", "tensorrt", "--graph-only", "--calib",
                   write_images(tmp_path / "calib", 8), "--calib-size", "8")
    assert result.exit_code == 0, result.output
    assert Manifest.load(directory).artifact("onnx-int8-trt").calibration.images == 8
    # minmax is trusted with a single image (measured no worse than 100 on CamVid)
    result = build(directory, "-p", "int8", "--calib", write_images(tmp_path / "one", 1), "--calib-method", "minmax")
    assert result.exit_code == 0, result.output
    assert Manifest.load(directory).artifact("onnx-int8-ort").calibration.images == 1


@pytest.mark.parametrize("args, message", [
    (["--bias-correction-threshold", "0"], "--bias-correction-threshold must be above 0, got 0"),
    (["--bias-correction-threshold", "nan"], "--bias-correction-threshold must be above 0, got nan"),
    (["--no-bias-correction", "--bias-correction-threshold", "2"], "only applies with bias correction, which is off for onnxruntime"),
    (["--backend", "tensorrt", "--graph-only", "--bias-correction-threshold", "2"], "which is off for tensorrt"),
])
def test_a_bias_correction_threshold_without_correction_or_above_zero_is_refused(deploy, args, message):
    directory = deploy("static")
    before = _files(directory)
    result = build(directory, "-p", "int8", *args)
    _assert_one_line_error(result, message, exit_code=2)
    assert _files(directory) == before


def test_tensorrt_options_need_the_tensorrt_backend(deploy):
    result = build(deploy("static"), "-p", "fp32", "--min-shapes", "input:1x3x96x160")
    _assert_one_line_error(result, "--min-shapes only apply to --backend tensorrt", exit_code=2)


def test_tensorrt_missing_says_how_to_install(deploy, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import → ImportError
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    directory = deploy("static")
    before = _files(directory)
    result = build(directory, "-p", "fp16", "--backend", "tensorrt")
    _assert_one_line_error(result, "neither tensorrt nor tensorrt_rtx can be imported")
    assert "Jetson" in result.stderr and "pip install tensorrt" in result.stderr
    assert _files(directory) == before


def test_graph_only_needs_no_tensorrt(deploy, calib_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    directory = deploy("static")
    result = build(directory, "-p", "int8", "--backend", "tensorrt", "--graph-only", "--calib", calib_dir, "--calib-size", "8")
    assert result.exit_code == 0, result.output
    entry = Manifest.load(directory).artifact("onnx-int8-trt")
    assert entry.target == "tensorrt" and entry.settings["extra_options"]["ActivationSymmetric"] is True
    assert not list(directory.glob("*.engine"))


def test_profile_contradicting_the_manifest(deploy):
    directory = deploy("static")
    before = _files(directory)
    result = build(directory, "-p", "fp32", "--backend", "tensorrt", "--max-shapes", "input:1x3x128x160")
    _assert_one_line_error(result, "contradicts the manifest", exit_code=2)
    assert _files(directory) == before


def test_missing_deploy_dir(tmp_path):
    _assert_one_line_error(build(tmp_path / "nope", "-p", "fp32"), "deploy directory not found")


def test_precision_is_required(deploy):
    result = build(deploy("static"))
    assert result.exit_code == 2 and "--precision" in result.output


def test_modified_fp32_graph_is_refused(deploy):
    directory = deploy("static")
    with open(directory / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    _assert_one_line_error(build(directory, "-p", "fp16"), "modified after it was recorded")


@requires_tensorrt
@pytest.mark.trt
def test_tensorrt_backend_builds_engines(deploy, calib_dir):
    directory = deploy("dynamic")
    result = build(directory, "-p", "fp32", "-p", "fp16", "-p", "int8", "--backend", "tensorrt", "--calib", calib_dir,
                   "--calib-size", "8", "--min-shapes", "input:1x3x64x96", "--max-shapes", "input:2x3x128x192", "--json")
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(directory)
    for precision in ("fp32", "fp16", "int8"):
        entry = manifest.artifact(f"trt-{precision}")
        assert entry.file == f"model.{precision}.engine" and entry.kind == "engine"
        assert entry.tensorrt.flavour in ("tensorrt", "tensorrt_rtx") and entry.tensorrt.version
        assert entry.settings["profile"]["input"]["max"] == [2, 3, 128, 192]
        assert entry.compute_capabilities
        manifest.verify(f"trt-{precision}")
    assert manifest.artifact("trt-int8").parent == "onnx-int8-trt"
    assert manifest.artifact("trt-fp16").parent == "onnx-fp16"


def test_failure_mid_build_leaves_no_file_and_earlier_artifacts_recorded(deploy, calib_dir, monkeypatch):
    from segdeploy.errors import SegdeployError
    from segdeploy.manifest.records import DriftRecord
    from segdeploy.precision import graphs

    directory = deploy("static")
    calls = []

    def flaky(manifest, candidate, batches, inputs):
        calls.append(candidate)
        if len(calls) == 2:  # FP16 measured fine; fail while measuring INT8
            raise SegdeployError("simulated failure")
        return DriftRecord(reference="onnx-fp32", inputs=inputs, batches=0)

    monkeypatch.setattr(graphs, "graph_drift", flaky)
    result = build(directory, "-p", "fp16", "-p", "int8", "--calib", calib_dir, "--calib-size", "4")
    _assert_one_line_error(result, "simulated failure")
    manifest = Manifest.load(directory)
    assert "onnx-fp16" in manifest.artifacts and "onnx-int8-ort" not in manifest.artifacts
    assert not (directory / "model.int8-ort.onnx").exists()
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]
