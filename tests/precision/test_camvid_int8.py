"""INT8 and FP16 from real calibration images, with the real CamVid model (research data, not in the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from segdeploy.build import BuildOptions, build_artifacts
from segdeploy.manifest import Manifest
from segdeploy.precision.calibration import batch_reader, select_images
from segdeploy.precision.drift import compare_graphs

SHARED = Path(__file__).resolve().parents[3] / "shared"
CAMVID = SHARED / "camvid"
MODEL = SHARED / "models" / "camvid_lraspp_mbv3.pth"

pytestmark = [
    pytest.mark.camvid,
    pytest.mark.skipif(not (CAMVID.is_dir() and MODEL.is_file()),
                       reason=f"CamVid data/model not found under {SHARED} (research-use, never in the repo)"),
]


def test_int8_from_camvid_frames_agrees_with_fp32_on_val(tmp_path):
    from segdeploy.export import ExportRequest, export_model

    directory = tmp_path / "camvid"
    export_model(ExportRequest(source="lraspp_mobilenet_v3_large", out_dir=directory, weights=MODEL, num_classes=11,
                               input_shape=(1, 3, 240, 320)))
    result = build_artifacts(directory, ["fp16", "int8"], "onnxruntime",
                             BuildOptions(calib=CAMVID / "train", calib_size=16))
    assert [a["name"] for a in result.artifacts] == ["onnx-fp16", "onnx-int8-ort"]
    manifest = Manifest.load(directory)
    val = select_images(CAMVID / "val", 8)
    batches = list(batch_reader(manifest, val.images))
    figures = compare_graphs(manifest, manifest.verify("onnx-fp32"),
                             {n: manifest.verify(n) for n in ("onnx-fp16", "onnx-int8-ort")}, batches)
    fp16, int8 = figures["onnx-fp16"], figures["onnx-int8-ort"]
    # A trained model on real frames: FP16 is near-exact, INT8 drifts a little but not a lot.
    assert fp16["min_argmax_agreement"] > 0.995, fp16
    assert int8["argmax_agreement"] > 0.95, int8


@pytest.mark.slow
def test_int8_within_a_budget_on_camvid(tmp_path):
    """The real model: the search meets the budget with few layers in float (minutes: it ranks ~150 nodes)."""
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.precision.mixed import BudgetOptions

    directory = tmp_path / "camvid"
    export_model(ExportRequest(source="lraspp_mobilenet_v3_large", out_dir=directory, weights=MODEL, num_classes=11,
                               input_shape=(1, 3, 240, 320), classes_file=CAMVID / "classes.json"))
    budget = BudgetOptions(0.25, CAMVID / "val", eval_limit=24)
    build_artifacts(directory, ["int8"], "onnxruntime", BuildOptions(calib=CAMVID / "train", calib_size=32, budget=budget))
    record = Manifest.load(directory).artifact("onnx-int8-ort").mixed_precision
    # the 24 frames are split into a choice part and a disjoint confirmation part
    assert record.eval["labelled"] and record.eval["images"] + record.confirmation["images"] == 24
    assert 0 < record.confirmation["images"] < 24
    assert record.final["drop"] <= 0.25
    assert record.confirmation["confirmed"] == (record.confirmation["drop"] <= 0.25)
    if record.naive["drop"] <= 0.25:
        assert record.kept_float == []
    else:
        assert 0 < len(record.kept_float) < record.quantized_nodes / 2


TARGET = 0.20  # mIoU points INT8 may lose against FP32 on held-out frames (issue 13)


@pytest.mark.slow
def test_default_int8_graphs_meet_the_target_on_held_out_frames(tmp_path):
    """Issue 13's target with `build`'s defaults: both INT8 graphs within 0.20 mIoU of FP32 on the 101
    val frames, which neither calibration (100 train frames) nor the choice of any default (the
    other 267 train frames) saw. Minutes: two INT8 builds and three graphs over 101 frames."""
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.precision import heldout
    from segdeploy.precision.evalset import paired_interval

    directory = tmp_path / "camvid"
    export_model(ExportRequest(source="lraspp_mobilenet_v3_large", out_dir=directory, weights=MODEL, num_classes=11,
                               input_shape=(1, 3, 240, 320), classes_file=CAMVID / "classes.json"))
    for backend in ("onnxruntime", "tensorrt"):
        build_artifacts(directory, ["int8"], backend, BuildOptions(calib=CAMVID / "train", calib_size=100,
                                                                   graph_only=backend == "tensorrt"))
    manifest = Manifest.load(directory)
    frames = heldout.split_frames(CAMVID, 100)
    assert {Path(manifest.artifact(a).calibration.folder) for a in ("onnx-int8-ort", "onnx-int8-trt")} == {CAMVID / "train"}
    assert not {p.stem for p in frames.calibration} & set(frames.confirmation)
    held_out = heldout.frame_set(manifest, CAMVID, "val", frames.confirmation, "held-out")
    assert held_out.reference_miou == pytest.approx(57.47, abs=0.01)  # the model's documented val mIoU
    defaults = {"onnx-int8-ort": ("percentile", True), "onnx-int8-trt": ("mean-minmax", False)}  # README, "INT8 accuracy"
    for artifact, (method, corrected) in defaults.items():
        entry = manifest.artifact(artifact)
        assert (entry.calibration.method, entry.bias_correction.enabled) == (method, corrected)
        found = paired_interval(held_out.reference_counts, held_out.counts(manifest.verify(artifact))[1], 10)
        assert found["drop"] <= TARGET, f"{artifact}: drop {found['drop']:.2f} ± {found['standard_error']:.2f}"
