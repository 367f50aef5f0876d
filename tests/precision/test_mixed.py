"""`build --precision int8 --miou-budget`: the fallback meets a budget naive INT8 misses.

The model (outlier_model.py) has one activation whose channel 0 is 1000x the others: naive
INT8 collapses the other channels and loses most of its agreement with FP32. Evaluation is on
an unlabelled image folder (agreement mIoU vs FP32). Measured here: naive drop ≈ 86 points,
keeping only the layer that reads the outlier tensor in float ≈ 9 points; the budget of 15
sits between, with room for platform differences in rounding.
"""

from __future__ import annotations

import json
import onnx
import pytest
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.manifest import Manifest

from tests.helpers import requires_tensorrt

BUDGET = "15"
runner = CliRunner()


def build(directory, outlier_images, *extra):
    calib, evaluation = outlier_images
    return runner.invoke(app, ["build", str(directory), "-p", "int8", "--calib", str(calib), "--eval-data", str(evaluation),
                               "--json", *map(str, extra)])


def _record(directory, artifact="onnx-int8-ort"):
    return Manifest.load(directory).artifact(artifact).mixed_precision


def test_fallback_meets_the_budget_naive_int8_misses_with_fewer_float_layers(outlier, outlier_images):
    result = build(outlier, outlier_images, "--miou-budget", BUDGET)
    assert result.exit_code == 0, result.output
    record = _record(outlier)
    assert record.naive["drop"] > float(BUDGET)
    assert record.final["drop"] <= float(BUDGET)
    assert 0 < len(record.kept_float) < record.quantized_nodes
    assert record.kept_float[0] == "/model/head/Conv"  # the reader of the outlier tensor ranks first
    assert not record.eval["labelled"]
    assert 0 < record.drop_standard_error < float(BUDGET) / 2  # the budget is well above the noise: no warning
    assert "evaluation noise" not in result.stderr
    # chosen on one part, confirmed on the other: both figures, an interval around the confirmed one
    confirmation = record.confirmation
    assert record.split["choice"]["images"] == record.eval["images"] == 4 and confirmation["images"] == 4
    assert record.split["choice"]["indices"] == "0-1,4-5" and record.split["confirmation"]["indices"] == "2-3,6-7"
    assert confirmation["confirmed"] and confirmation["drop"] <= float(BUDGET) < confirmation["naive_drop"]
    assert confirmation["interval"][0] <= confirmation["drop"] <= confirmation["interval"][1]
    assert confirmation["drop"] != record.final["drop"]  # measured on other images, not copied
    assert f"confirmed on 4 other images: drop {confirmation['drop']:.2f}" in result.stdout
    assert Manifest.load(outlier).artifact("onnx-int8-ort").calibration.reused_cache is False  # calibrated here
    # the recorded graph is the mixed one: the kept node reads a float tensor, not a DequantizeLinear
    graph = onnx.load(str(outlier / "model.int8-ort.onnx")).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    head = next(n for n in graph.node if n.name == "/model/head/Conv")
    assert all(producers.get(i) != "DequantizeLinear" for i in head.input)
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # still an INT8 graph
    lat = record.latency_ms
    assert lat["fp32"] > 0 and lat["naive_int8"] > 0 and lat["mixed_int8"] > 0
    summary = json.loads(result.stdout)
    assert summary["artifacts"][-1]["mixed_precision"]["kept_float"] == record.kept_float
    assert summary["artifacts"][-1]["mixed_precision"]["confirmation"] == confirmation


def test_the_search_is_deterministic(outlier, outlier_images, tmp_path):
    assert build(outlier, outlier_images, "--miou-budget", BUDGET).exit_code == 0
    first = _record(outlier)
    assert build(outlier, outlier_images, "--miou-budget", BUDGET).exit_code == 0
    second = _record(outlier)
    assert first.kept_float == second.kept_float and first.trace == second.trace
    assert first.split == second.split and first.confirmation == second.confirmation


def test_naive_int8_within_budget_keeps_nothing_in_float(outlier, outlier_images):
    result = build(outlier, outlier_images, "--miou-budget", "100")
    assert result.exit_code == 0, result.output
    record = _record(outlier)
    assert record.kept_float == [] and record.final == record.naive


def test_budget_below_the_confirmation_noise_is_one_line_and_leaves_no_artifact(outlier, outlier_images):
    result = build(outlier, outlier_images, "--miou-budget", "0")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "--miou-budget 0.0 is below the noise of its confirmation" in lines[-1] and "Traceback" not in result.output
    assert "use a budget of at least" in lines[-1]
    assert not (outlier / "model.int8-ort.onnx").exists()
    assert "onnx-int8-ort" not in Manifest.load(outlier).artifacts


def test_budget_needs_int8_and_a_non_negative_number(outlier, outlier_images):
    result = runner.invoke(app, ["build", str(outlier), "-p", "fp16", "--miou-budget", "1"])
    assert result.exit_code != 0 and "--miou-budget applies to --precision int8" in result.stderr
    result = build(outlier, outlier_images, "--miou-budget", "-1")
    assert result.exit_code != 0 and ">= 0" in result.stderr
    result = build(outlier, outlier_images)  # --eval-data without a budget
    assert result.exit_code != 0 and "only apply with --miou-budget" in result.stderr
    assert "onnx-int8-ort" not in Manifest.load(outlier).artifacts


def test_calibration_images_as_the_only_evaluation_set_cannot_confirm(outlier, outlier_images):
    """Without --eval-data the calibration images are the evaluation set; they never confirm, so
    nothing is left to confirm on: one line, no artifact."""
    calib, _ = outlier_images
    result = runner.invoke(app, ["build", str(outlier), "-p", "int8", "--calib", str(calib), "--miou-budget", BUDGET])
    assert result.exit_code == 2, result.output
    assert "has 0 image(s)" in result.stderr and "calibration images never confirm" in result.stderr
    assert "onnx-int8-ort" not in Manifest.load(outlier).artifacts


@requires_tensorrt
@pytest.mark.trt
def test_tensorrt_rtx_builds_the_mixed_graph(outlier, outlier_images):
    result = build(outlier, outlier_images, "--miou-budget", BUDGET, "--backend", "tensorrt")
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(outlier)
    record = manifest.artifact("onnx-int8-trt").mixed_precision
    assert record.final["drop"] <= float(BUDGET) < record.naive["drop"]
    assert 0 < len(record.kept_float) < record.quantized_nodes
    engine = manifest.artifact("trt-int8")
    assert engine.parent == "onnx-int8-trt"
    manifest.verify("trt-int8")


def test_bench_report_carries_the_evidence(outlier, outlier_images):
    calib, evaluation = outlier_images
    assert build(outlier, outlier_images, "--miou-budget", BUDGET).exit_code == 0
    result = runner.invoke(app, ["bench", str(outlier), "--data", str(evaluation), "--iterations", "2", "--warmup", "1",
                                 "--rounds", "1", "--no-plots", "-a", "onnx-int8-ort"])
    assert result.exit_code == 0, result.output
    report = json.loads((outlier / "bench" / "bench.json").read_text())
    evidence = report["targets"]["onnx-int8-ort"]["mixed_precision"]
    assert evidence["kept_float"] == _record(outlier).kept_float and evidence["kept_float"]
    assert evidence["confirmation"] == _record(outlier).confirmation and evidence["split"] == _record(outlier).split
    markdown = (outlier / "bench" / "bench.md").read_text()
    assert "onnx-int8-ort: INT8 within a budget" in markdown
    assert f"in float: {evidence['kept_float'][0]}" in markdown
    assert f"confirmed on 4 other images: drop {evidence['confirmation']['drop']:.2f}" in markdown


def test_labelled_default_eval_set_reproduces_the_demo_models_val_miou(tmp_path):
    """Default evaluation = calib/'s val split (labelled): the FP32 graph's mIoU over it must be the one
    training measured in PyTorch (calib/demo/model.json), an independent check of the evaluator; the
    build splits it into disjoint parts, and its calibration images never confirm."""
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.precision.calibration import select_images
    from segdeploy.precision.evalset import EvalSet

    from tests.helpers import REPO

    demo = json.loads((REPO / "calib" / "demo" / "model.json").read_text())
    directory = tmp_path / "demo"
    export_model(ExportRequest(source="unet", out_dir=directory, weights=REPO / "calib" / "demo" / "best.pth",
                               num_classes=6, model_kwargs=demo["model_kwargs"], input_shape=tuple(demo["input_shape"]),
                               classes_file=REPO / "calib" / "classes.json"))
    whole = EvalSet.open(Manifest.load(directory), None, None, REPO / "calib")
    assert whole.images == 40 and abs(whole.reference(directory / "model.onnx") - demo["val_miou"]) < 0.05
    result = runner.invoke(app, ["build", str(directory), "-p", "int8", "--miou-budget", "0.5", "--calib-size", "40",
                                 "--accept-unconfirmed"])
    assert result.exit_code == 0, result.output
    record = _record(directory)
    assert record.eval["labelled"] and "val split" in record.eval["description"]
    choice, confirmation = (_indices(record.split[part]["indices"]) for part in ("choice", "confirmation"))
    assert sorted(choice + confirmation) == list(range(40)) and not set(choice) & set(confirmation)
    val = (REPO / "calib" / "splits" / "val.txt").read_text().split()
    calibrated = {p.stem for p in select_images(REPO / "calib", 40).images}
    assert record.split["calibration_images_moved_to_choice"] == sum(val[i] in calibrated for i in range(10, 20)) + sum(
        val[i] in calibrated for i in range(30, 40)) > 0
    assert not {val[i] for i in confirmation} & calibrated
    assert record.final["drop"] <= 0.5
    assert record.confirmation["confirmed"] == (record.confirmation["drop"] <= 0.5)


def _indices(ranges: str) -> list[int]:
    out = []
    for run in ranges.split(","):
        first, _, last = run.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def test_budget_search_on_a_fused_export(outlier_images, tmp_path):
    """uint8 NHWC in, class map out: the search feeds canvases and scores class maps directly."""
    from pathlib import Path

    from segdeploy.export import ExportRequest, export_model
    from segdeploy.export.fused import Fusion

    source = f"{Path(__file__).parents[1] / 'outlier_model.py'}:OutlierNet"
    out = tmp_path / "fused"
    export_model(ExportRequest(source=source, out_dir=out, num_classes=3, input_shape=(1, 3, 64, 96),
                               fusion=Fusion(True, True)))
    result = build(out, outlier_images, "--miou-budget", BUDGET)
    assert result.exit_code == 0, result.output
    record = _record(out)
    assert record.naive["drop"] > float(BUDGET) >= record.final["drop"]
    assert 0 < len(record.kept_float) < record.quantized_nodes
    graph = onnx.load(str(out / "model.int8-ort.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32


def test_old_spelling_on_build_is_the_budget_with_a_deprecation_line(outlier):
    result = runner.invoke(app, ["build", str(outlier), "-p", "fp16", "--max-miou-drop", "1"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and lines[0].startswith("warning: build --max-miou-drop is deprecated: use --miou-budget")
    assert "--miou-budget applies to --precision int8" in lines[-1]
    result = runner.invoke(app, ["build", str(outlier), "-p", "int8", "--max-miou-drop", "1", "--miou-budget", "1"])
    assert result.exit_code == 2 and "give --miou-budget only" in result.stderr
