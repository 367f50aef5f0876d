"""Frames kept apart for measuring INT8 settings: a disjoint three-way split, and class maps from
another runtime scored exactly like a graph."""

from __future__ import annotations

import json
import numpy as np
import pytest
from PIL import Image

from segdeploy.manifest import Manifest
from segdeploy.precision import heldout
from segdeploy.precision.calibration import select_images

from tests.helpers import graph_class_maps


def _dataset(root, train=30, val=7, classes=3):
    """ROOT/train and ROOT/val (CamVid's layout) with random images and labels."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(count):
            Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(root / split / "images" / f"{split}_{i:03d}.png")
            Image.fromarray(rng.integers(0, classes, (48, 64)).astype(np.uint8)).save(root / split / "labels" / f"{split}_{i:03d}.png")
    (root / "classes.json").write_text(json.dumps({"classes": [f"c{i}" for i in range(classes)], "ignore_index": 255}))
    return root


def test_split_frames_are_disjoint_and_calibration_is_what_build_reads(tmp_path):
    root = _dataset(tmp_path)
    frames = heldout.split_frames(root, calib_size=10)
    calib = {p.stem for p in frames.calibration}
    assert frames.calibration == select_images(root / "train", 10).images  # `build --calib ROOT/train --calib-size 10`
    assert len(calib) == 10 and len(frames.choice) == 20 and len(frames.confirmation) == 7
    assert not calib & set(frames.choice) and not (calib | set(frames.choice)) & set(frames.confirmation)


def test_overlapping_frames_are_refused():
    frames = heldout.Frames(calibration=(), choice=("a", "b"), confirmation=("b",))
    with pytest.raises(ValueError, match="overlap"):
        frames.check_disjoint()


def test_class_maps_from_elsewhere_score_exactly_like_the_graph(deploy, tmp_path):
    """The FP32 graph's own argmax maps, handed over as arrays (as OpenVINO's come back from the
    peers' venv), give the same per-image matrices as scoring the graph — and other maps do not."""
    from segdeploy.backends.onnxruntime import OrtRunner
    from segdeploy.evaluation.engine import graph_predictor

    directory = deploy("static")
    manifest = Manifest.load(directory)
    root = _dataset(tmp_path / "data", train=4, val=6, classes=manifest.model.num_classes)
    frames = heldout.frame_set(manifest, root, "val", [f"val_{i:03d}" for i in range(6)], "test")
    canvases = np.concatenate([b.canvases for b in frames.batches])
    maps = graph_class_maps(directory / "model.onnx", canvases)
    assert len(np.unique(maps)) > 1  # the graph's maps vary
    shifted = (maps + 1) % manifest.model.num_classes
    with OrtRunner(directory / "model.onnx") as runner:
        scored = heldout.score(frames, {"graph": graph_predictor(runner, frames.spec), "maps": heldout.maps_predictor(maps),
                                        "shifted": heldout.maps_predictor(shifted)}, reference="graph")
    np.testing.assert_array_equal(scored["maps"][0], frames.reference_counts)
    np.testing.assert_array_equal(scored["graph"][0], frames.reference_counts)
    assert scored["maps"][1] == 100.0 and scored["shifted"][1] == 0.0
    assert not np.array_equal(scored["shifted"][0], frames.reference_counts)
