"""`segdeploy inspect precision`: per-tensor INT8 error, worst first, and its plot."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from segdeploy.cli import app

runner = CliRunner()


@pytest.fixture
def quantized(outlier, outlier_images):
    calib, _ = outlier_images
    result = runner.invoke(app, ["build", str(outlier), "-p", "int8", "--calib", str(calib)])
    assert result.exit_code == 0, result.output
    return outlier


def test_table_is_worst_first_and_names_the_outlier_tensor(quantized, tmp_path):
    plot = tmp_path / "sqnr.png"
    result = runner.invoke(app, ["inspect", "precision", str(quantized), "--json", "--out", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = report["rows"]
    keys = [r["worst_channel_sqnr_db"] for r in rows]
    assert keys == sorted(keys)
    # the tensor holding the 1000x channel: its other channels round to nothing (< 3 dB),
    # while healthy tensors of the same graph keep > 25 dB in every channel
    assert rows[0]["tensor"] == "/model/Relu_1_output_0" and rows[0]["kind"] == "activation"
    assert rows[0]["worst_channel_sqnr_db"] < 3
    assert any(r["worst_channel_sqnr_db"] > 25 for r in rows)
    assert {r["kind"] for r in rows} == {"activation", "weight"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_human_table_and_default_plot_location(quantized):
    result = runner.invoke(app, ["inspect", "precision", str(quantized), "--limit", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "worst first" in lines[0]
    assert lines[2].split()[0] == "1" and "/model/Relu_1_output_0" in lines[2]
    assert (quantized / "precision.onnx-int8-ort.png").is_file()


def test_without_an_int8_graph_is_one_line(outlier):
    result = runner.invoke(app, ["inspect", "precision", str(outlier)])
    assert result.exit_code == 1
    assert "has no INT8 graph" in result.stderr and "Traceback" not in result.output


def test_a_non_int8_artifact_is_refused(quantized):
    result = runner.invoke(app, ["inspect", "precision", str(quantized), "--artifact", "onnx-fp32"])
    assert result.exit_code != 0 and "not an INT8 ONNX graph" in result.stderr
