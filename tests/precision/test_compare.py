"""`--calib-method best`: minmax, entropy and percentile calibrated on the same images, each
INT8 graph judged against FP32 on images calibration did not see, only the winner written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.manifest import Manifest
from segdeploy.precision.calibration import CALIB_METHODS, select_images
from segdeploy.precision.compare import evaluation_set, pick_best
from segdeploy.precision.graphs import QuantOptions

from tests.helpers import CALIB, calib_val_images, canvases, export_demo, graph_class_maps, graph_outputs, write_images


def _build_best(cli, directory, calib_dir, *extra):
    result = cli("build", str(directory), "-p", "int8", "--calib", str(calib_dir), "--calib-size", "8",
                 "--calib-method", "best", *extra)
    assert result.returncode == 0, result.stderr
    return result


def test_best_compares_every_method_on_held_out_images_and_writes_only_the_winner(cli, deploy, calib_dir):
    directory = deploy("static")
    out = json.loads(_build_best(cli, directory, calib_dir, "--json").stdout)
    entry = Manifest.load(directory).artifact("onnx-int8-ort")
    comparison = entry.calibration.comparison
    rows = comparison.rows
    assert [r["method"] for r in rows] == list(CALIB_METHODS)
    assert all(r["calibration_seconds"] > 0 and not r["reused_cache"] for r in rows)
    assert out["artifacts"][0]["calibration"]["comparison"] == comparison.to_dict()  # --json carries the table
    best = max(r["argmax_agreement"] for r in rows)
    picked = next(r for r in rows if r["method"] == comparison.picked)
    assert picked["argmax_agreement"] == best and entry.calibration.method == picked["method"]
    # Judged on the 4 images calibration did not use (12 in the folder, 8 calibrated on).
    calibrated = set(select_images(calib_dir, 8).images)
    held_out = [p for p in sorted(calib_dir.iterdir()) if p not in calibrated]
    assert len(held_out) == 4 and comparison.evaluated_on.startswith("4 held-out images")
    # The written file is the winner: a measurement made here (PIL, numpy, onnxruntime) reproduces its row.
    pixels = canvases(held_out, (96, 160))
    fp32, int8 = (graph_outputs(directory / name, pixels) for name in ("model.onnx", "model.int8-ort.onnx"))
    agreement = np.mean([np.mean(a.argmax(1) == b.argmax(1)) for a, b in zip(fp32, int8)])
    rel_error = max(np.abs(a - b).max() / (a.max() - a.min()) for a, b in zip(fp32, int8))
    assert picked["argmax_agreement"] == pytest.approx(agreement, abs=1e-9)
    assert picked["max_rel_error"] == pytest.approx(rel_error, rel=1e-2)  # inputs normalised in float64 here
    files = sorted(p.name for p in directory.iterdir())
    assert [f for f in files if f.startswith("model.int8")] == ["model.int8-ort.onnx"]
    assert len([f for f in files if f.startswith("calib-cache.")]) == len(CALIB_METHODS)


def test_second_run_reuses_every_method_cache(cli, deploy, calib_dir):
    directory = deploy("static")
    _build_best(cli, directory, calib_dir)
    first = Manifest.load(directory).artifact("onnx-int8-ort").calibration.comparison
    caches = {p: p.stat().st_mtime_ns for p in directory.glob("calib-cache.*")}
    text = _build_best(cli, directory, calib_dir).stdout
    second = Manifest.load(directory).artifact("onnx-int8-ort").calibration.comparison
    assert all(r["reused_cache"] for r in second.rows)
    # The time each cache took to make is carried over from the build that made it.
    assert [r["calibration_seconds"] for r in second.rows] == [r["calibration_seconds"] for r in first.rows]
    assert {p: p.stat().st_mtime_ns for p in directory.glob("calib-cache.*")} == caches
    assert second.picked == first.picked
    assert [r["argmax_agreement"] for r in second.rows] == [r["argmax_agreement"] for r in first.rows]
    for method in CALIB_METHODS:  # the printed table: one row per method, cached
        assert any(line.split()[:1] == [method] and "cached" in line for line in text.splitlines()), text
    assert "<- picked" in text


def test_tensorrt_target_gets_the_comparison_too(deploy, calib_dir):
    directory = deploy("static")
    result = build_artifacts(directory, ["int8"], "tensorrt",
                             BuildOptions(calib=calib_dir, calib_size=8, graph_only=True, quant=QuantOptions(method="best")))
    entry = Manifest.load(directory).artifact("onnx-int8-trt")
    assert [a["name"] for a in result.artifacts] == ["onnx-int8-trt"]
    assert entry.settings["extra_options"]["ActivationSymmetric"] is True
    assert len(entry.calibration.comparison.rows) == len(CALIB_METHODS)
    assert not (directory / "model.int8-ort.onnx").exists()


def test_bad_percentile_fails_before_any_calibration(cli, deploy, calib_dir):
    directory = deploy("static")
    result = cli("build", str(directory), "-p", "int8", "--calib", str(calib_dir), "--calib-method", "best",
                 "--percentile", "0")
    assert result.returncode == 2 and "--percentile must be in (0, 100]" in result.stderr
    assert not list(directory.glob("calib-cache.*")) and not (directory / "model.int8-ort.onnx").exists()
    assert "onnx-int8-ort" not in Manifest.load(directory).artifacts


def _row(method, agreement, miou=0.9, rel=0.1):
    return {"method": method, "argmax_agreement": agreement, "agreement_miou": miou, "max_rel_error": rel}


def test_pick_best_takes_the_highest_agreement_and_breaks_ties_deterministically():
    assert pick_best([_row("minmax", 0.98), _row("entropy", 0.99), _row("percentile", 0.97)])["method"] == "entropy"
    assert pick_best([_row("minmax", 0.99, 0.8), _row("entropy", 0.99, 0.9)])["method"] == "entropy"
    assert pick_best([_row("minmax", 0.99, 0.9, 0.2), _row("percentile", 0.99, 0.9, 0.1)])["method"] == "percentile"
    tied = [_row("percentile", 0.99), _row("entropy", 0.99), _row("minmax", 0.99)]
    assert pick_best(tied)["method"] == pick_best(tied[::-1])["method"] == "minmax"
    assert pick_best([_row("minmax", 0.99, float("nan")), _row("entropy", 0.99, 0.5)])["method"] == "entropy"


def test_evaluation_set_prefers_the_val_split_then_held_out_images(tmp_path):
    folder = write_images(tmp_path / "c", 10)
    (folder / "splits").mkdir()
    (folder / "splits" / "val.txt").write_text("frame_000\nframe_001\nframe_002\n")
    calib = select_images(folder, 5)  # frames 0, 2, 4, 7, 9
    chosen, described = evaluation_set(calib)
    assert [p.name for p in chosen.images] == ["frame_001.png"] and "val images" in described
    (folder / "splits" / "val.txt").unlink()
    chosen, described = evaluation_set(calib)
    assert [p.stem for p in chosen.images] == ["frame_001", "frame_003", "frame_005", "frame_006", "frame_008"]
    assert "held-out" in described
    everything = select_images(folder, 10)
    chosen, described = evaluation_set(everything)
    assert chosen.images == everything.images and "calibration images themselves" in described


def test_evaluation_set_uses_a_sibling_val_folder(tmp_path):
    train = write_images(tmp_path / "data" / "train" / "images", 4).parent
    val = write_images(tmp_path / "data" / "val" / "images", 3, seed=1).parent
    chosen, described = evaluation_set(select_images(train, 4))
    assert [p.parent.parent for p in chosen.images] == [val] * 3 and f"val images of {val}" in described


def test_too_few_held_out_images_for_one_batch_falls_back_and_says_so(tmp_path):
    from tests.helpers import export_unet

    directory = export_unet(tmp_path / "b2", shape=(2, 3, 64, 96))
    calib = write_images(tmp_path / "c", 9)
    build_artifacts(directory, ["int8"], "onnxruntime", BuildOptions(calib=calib, calib_size=8, quant=QuantOptions(method="best")))
    comparison = Manifest.load(directory).artifact("onnx-int8-ort").calibration.comparison
    assert comparison.evaluated_on.startswith("the 8 calibration images themselves") and "fewer than one batch" in comparison.evaluated_on


def test_best_on_a_fused_argmax_export_compares_class_maps(tmp_path):
    """A graph with a fused argmax outputs N×H×W class maps: the methods must be judged on equal
    pixels, not on an argmax over the image height (the old comparison's mistake: it failed with
    class values 7..27 of 6). Checked against onnxruntime sessions and PIL preprocessing run here,
    on the trained demo U-Net (its class maps vary)."""
    from segdeploy.export.fused import Fusion

    directory = export_demo(tmp_path / "fused", fusion=Fusion(preprocess=True, argmax=True))
    build_artifacts(directory, ["int8"], "onnxruntime",
                    BuildOptions(calib=CALIB, calib_size=8, quant=QuantOptions(method="best")))
    comparison = Manifest.load(directory).artifact("onnx-int8-ort").calibration.comparison
    picked = next(r for r in comparison.rows if r["method"] == comparison.picked)
    assert picked["max_rel_error"] is None  # class maps: no logits to compare
    images = calib_val_images(calibrated=8)
    assert comparison.evaluated_on.startswith(f"{len(images)} val images")
    pixels = canvases(images, (96, 128))
    fp32 = graph_class_maps(directory / "model.onnx", pixels, fused_input=True)
    int8 = graph_class_maps(directory / "model.int8-ort.onnx", pixels, fused_input=True)
    assert fp32.shape == (len(images), 96, 128) and len(np.unique(fp32)) >= 4
    assert picked["argmax_agreement"] == pytest.approx(float(np.mean(fp32 == int8)), abs=1e-9)
