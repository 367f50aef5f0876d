"""`segdeploy pipeline`: the demo config end to end at a reduced size, resume, YAML configs, errors."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from segdeploy.errors import SegdeployError
from segdeploy.pipeline import demo_config, pareto_front, run_pipeline

REDUCED = {"iterations": 3, "warmup": 1, "limit": 4}


def test_demo_pipeline_end_to_end_and_resume(tmp_path):
    config = demo_config(tmp_path / "demo")
    config.backends, config.calib_size, config.bench = ["onnxruntime"], 8, REDUCED
    result = run_pipeline(config)
    rows = {r["artifact"]: r for r in result.rows}
    assert set(rows) == {"pytorch", "onnx-fp32", "onnx-fp16", "onnx-int8-ort"}
    meta = json.loads((config.calib / "demo" / "model.json").read_text())
    assert rows["pytorch"]["miou"] > 30  # a trained model, not chance (6 classes)
    assert rows["onnx-fp32"]["pixel_agreement"] >= 99.9 and abs(rows["onnx-fp32"]["delta_miou"]) < 0.05
    assert rows["onnx-int8-ort"]["pixel_agreement"] > 95
    assert result.reused == [] and result.gates_passed
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["rows"] == json.loads(json.dumps(result.rows))
    assert (tmp_path / "demo" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert meta["num_classes"] == 6
    again = run_pipeline(config)
    assert again.reused == ["demo_unet: export", "demo_unet: build onnxruntime"]
    # a changed input (the calibration size) rebuilds, the export stays
    config.calib_size = 6
    assert run_pipeline(config).reused == ["demo_unet: export"]
    # reduce_range reaches the build: 7-bit weights by default, 8-bit when the config says false
    from segdeploy.manifest import Manifest

    directory = tmp_path / "demo" / "demo_unet"
    assert Manifest.load(directory).artifact("onnx-int8-ort").settings["reduce_range"] is True
    config.reduce_range = False
    assert run_pipeline(config).reused == ["demo_unet: export"]
    assert Manifest.load(directory).artifact("onnx-int8-ort").settings["reduce_range"] is False
    # so does the bias-correction threshold: NNCF's rule (2) by default, every layer with .inf
    assert Manifest.load(directory).artifact("onnx-int8-ort").bias_correction.threshold == 2.0
    config.bias_correction_threshold = float("inf")
    assert run_pipeline(config).reused == ["demo_unet: export"]
    record = Manifest.load(directory).artifact("onnx-int8-ort").bias_correction
    assert record.threshold is None and record.layers_skipped == {}


def test_yaml_config_with_user_model_and_relative_paths(cli, tmp_path):
    (tmp_path / "net.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        def build(num_classes=6):
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))
    '''))
    calib = demo_config().calib
    few = tmp_path / "few"  # 3 calibration images for calib_size 4: the build's warning must reach the user
    few.mkdir()
    for image in sorted((calib / "images").iterdir())[:3]:
        (few / image.name).write_bytes(image.read_bytes())
    (tmp_path / "pipe.yaml").write_text(textwrap.dedent(f'''
        out: runs
        data: {calib}
        split: val
        calib: {few}
        calib_size: 4
        precisions: [fp32, int8]
        bench: {{iterations: 2, warmup: 0, limit: 2, max_miou_drop: 100}}
        models:
          - name: tiny
            source: net.py:build
            input_shape: 1x3x64x96
            classes: {calib / "classes.json"}
    '''))
    proc = cli("pipeline", str(tmp_path / "pipe.yaml"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {r["artifact"] for r in data["rows"]} == {"pytorch", "onnx-fp32", "onnx-int8-ort"}
    assert (tmp_path / "runs" / "tiny" / "manifest.json").is_file()
    assert "warning: tiny: only 3 calibration images" in proc.stderr


def test_config_with_fused_export_and_int8_budget(tmp_path):
    """Fusion flags reach the export, the INT8 budget reaches the build, and both are recorded."""
    from segdeploy.manifest import Manifest
    from segdeploy.pipeline import parse_config

    demo = demo_config()
    model = demo.models[0]
    raw = {
        "out": str(tmp_path / "runs"), "data": str(demo.calib), "split": "val", "calib": str(demo.calib), "calib_size": 8,
        "precisions": ["int8"], "int8_miou_budget": 0.5, "eval_limit": 8, "bench": REDUCED,
        "models": [{"name": "fused", "source": model.source, "num_classes": model.num_classes,
                    "model_kwargs": model.model_kwargs, "weights": str(model.weights), "input_shape": model.input_shape,
                    "classes": str(model.classes), "fuse_preprocess": True, "fuse_argmax": True}],
    }
    config = parse_config(raw, tmp_path)
    result = run_pipeline(config)
    rows = {r["artifact"]: r for r in result.rows}
    assert set(rows) == {"pytorch", "onnx-fp32", "onnx-int8-ort"}
    assert rows["onnx-fp32"]["pixel_agreement"] >= 99.9  # the fused graph reproduces the unfused PyTorch model
    manifest = Manifest.load(tmp_path / "runs" / "fused")
    assert manifest.fused.preprocess and manifest.fused.argmax
    record = manifest.artifact("onnx-int8-ort").mixed_precision
    assert record.budget_miou_drop == 0.5 and record.final["drop"] <= 0.5
    assert run_pipeline(config).reused == ["fused: export", "fused: build onnxruntime"]


def test_old_budget_key_is_read_with_a_deprecation_line(cli, tmp_path):
    from segdeploy.pipeline import parse_config

    config = parse_config({"models": [{"source": "unet"}], "precisions": ["int8"], "int8_max_miou_drop": 0.25}, tmp_path)
    assert config.int8_miou_budget == 0.25 and config.deprecated == [
        "pipeline key int8_max_miou_drop is deprecated: use int8_miou_budget"]
    (tmp_path / "p.yaml").write_text("models: [{source: nope}]\nprecisions: [int8]\nint8_max_miou_drop: 0.25\n")
    proc = cli("pipeline", str(tmp_path / "p.yaml"), "-o", str(tmp_path / "out"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[0] == "warning: pipeline key int8_max_miou_drop is deprecated: use int8_miou_budget"
    assert "unknown model 'nope'" in lines[-1]


def test_budget_confirmation_keys_become_the_builds_options(tmp_path):
    from segdeploy.pipeline_config import budget_options, parse_config

    (tmp_path / "held").mkdir()
    config = parse_config({"models": [{"source": "unet"}], "precisions": ["int8"], "int8_miou_budget": 0.2,
                           "confirm_data": "held", "split_block": 5, "accept_unconfirmed": True,
                           "sensitivity_workers": 2}, tmp_path)
    options = budget_options(config)
    assert (options.miou_budget, options.confirm_data, options.split_block, options.accept_unconfirmed, options.workers) == (
        0.2, tmp_path / "held", 5, True, 2)


def test_config_with_best_calibration_method(tmp_path):
    """`calib_method: best` reaches the build: three methods compared, and the INT8 graph written is
    the one the table says won, with the agreement measured here independently."""
    from segdeploy.manifest import Manifest
    from segdeploy.precision.compare import pick_best
    from tests.helpers import calib_val_images, canvases, graph_class_maps

    config = demo_config(tmp_path / "best")
    config.backends, config.precisions, config.calib_size, config.calib_method = ["onnxruntime"], ["int8"], 8, "best"
    config.bench = REDUCED
    result = run_pipeline(config)
    assert {r["artifact"] for r in result.rows} == {"pytorch", "onnx-fp32", "onnx-int8-ort"}
    directory = tmp_path / "best" / "demo_unet"
    comparison = Manifest.load(directory).artifact("onnx-int8-ort").calibration.comparison
    assert [row["method"] for row in comparison.rows] == ["minmax", "mean-minmax", "entropy", "percentile"]
    assert comparison.picked == pick_best(comparison.rows)["method"]
    picked = next(r for r in comparison.rows if r["method"] == comparison.picked)
    assert picked["argmax_agreement"] == max(r["argmax_agreement"] for r in comparison.rows)
    pixels = canvases(calib_val_images(calibrated=8), (96, 128))
    fp32, int8 = (graph_class_maps(directory / name, pixels) for name in ("model.onnx", "model.int8-ort.onnx"))
    assert len(np.unique(fp32)) >= 4
    assert picked["argmax_agreement"] == pytest.approx(float(np.mean(fp32 == int8)), abs=1e-9)


@pytest.mark.parametrize(
    "text, message",
    [
        ("models: []", "non-empty `models:` list"),
        ("models: [{name: x}]", "models[0]: missing source"),
        ("models: [{source: unet, colour: red}]", "models[0]: unknown key(s) 'colour'"),
        ("models: [{source: unet}]\nprecison: [fp16]", "unknown key(s) 'precison'"),
        ("models: [{source: unet}, {source: unet}]", "model names must be unique"),
        ("models: [unclosed", "is not valid YAML"),
        ("models: [{source: unet}]\nint8_miou_budget: lots", "int8_miou_budget: expected a number >= 0, got the string 'lots'"),
        ("models: [{source: unet}]\nint8_max_miou_drop: lots", "int8_max_miou_drop: expected a number >= 0, got the string 'lots'"),
        ("models: [{source: unet}]\nint8_miou_budget: 1\nint8_max_miou_drop: 1", "give int8_miou_budget only"),
        ("models: [{source: unet}]\neval_limit: 8", "only apply with --miou-budget"),
        ("models: [{source: unet}]\nconfirm_data: val", "--confirm-data only apply with --miou-budget"),
        ("models: [{source: unet}]\nprecisions: [int8]\nint8_miou_budget: 1\naccept_unconfirmed: 'no'",
         "accept_unconfirmed: expected true or false, got the string 'no'"),
        ("models: [{source: unet}]\nprecisions: [int8]\nint8_miou_budget: 1\nsensitivity_workers: 0",
         "sensitivity_workers: expected a whole number >= 1, got the number 0"),
        ("models: [{source: unet}]\nprecisions: [fp32, bf16]", "precision bf16 is built by none of the config's backends "
         "(onnxruntime) (add openvino to `backends:`)"),
        ("models: [{source: unet}]\nbackends: [onnxruntime, tpu]", "backends[1]: expected one of tensorrt, openvino, onnxruntime, got the string 'tpu'"),
    ],
)
def test_bad_configs(cli, tmp_path, text, message):
    (tmp_path / "val").mkdir()  # a folder that exists, for the keys that name one
    (tmp_path / "p.yaml").write_text(text)
    proc = cli("pipeline", str(tmp_path / "p.yaml"))
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr


def test_too_few_calibration_images_refused_before_any_export(cli, tmp_path):
    from tests.helpers import CALIB, DEMO_MODEL_YAML, write_images

    assert CALIB.is_dir()
    config = tmp_path / "p.yaml"
    config.write_text(f"out: {tmp_path / 'out'}\ncalib: {write_images(tmp_path / 'few', 4)}\nprecisions: [fp32, int8]\n"
                      "backends: [onnxruntime, tensorrt]\n" + DEMO_MODEL_YAML)
    proc = cli("pipeline", str(config))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: 4 calibration images are too few for mean-minmax calibration: it needs at least 8 (with fewer, the INT8 "
        "graph's accuracy depends on which images were drawn; README, \"How few calibration images\") (calibrate on at "
        "least 8 images like those the model will see: --calib-size 8 or more (default 100) from a --calib folder that "
        "has them)"]
    assert not (tmp_path / "out" / "demo").exists()  # refused before the export


def test_pareto_front():
    # (latency, mIoU): b dominates a; c is slower but more accurate; d is dominated by c
    points = [(10, 70), (8, 72), (20, 80), (25, 79), (8, 72)]
    assert pareto_front(points) == [1, 2, 4]
    with pytest.raises(SegdeployError, match="pipeline config not found"):
        from pathlib import Path

        from segdeploy.pipeline import load_config

        load_config(Path("/nonexistent.yaml"))
