"""`segdeploy export` through the CLI for zoo models (static and dynamic), checked against the model here."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from zoo_support import NUM_CLASSES, TINY, check_graph_against_model
from segdeploy.cli import app


@pytest.mark.parametrize(
    "name, shape, dynamic",
    [("pspnet", (1, 3, 100, 150), "height,width"), ("deeplabv3plus", (1, 3, 100, 150), None),
     ("segnet", (1, 3, 100, 150), "height,width")],
)
def test_cli_export_zoo_model(name, shape, dynamic, conditioned_weights, tmp_path):
    """The CLI's export reproduces the model: run here at the export size and, for dynamic H/W, at a
    second size (models with export blockers must have been rewritten to export at all)."""
    out = tmp_path / "deploy"
    args = ["export", name, "-o", str(out), "--input-shape", "x".join(map(str, shape)), "--num-classes", str(NUM_CLASSES),
            "--model-kwargs", json.dumps({"width": TINY}), "--weights", str(conditioned_weights(name)),
            "--max-rel-error", "1e-4", "--json"]  # fmt: skip
    if dynamic:
        args += ["--dynamic", dynamic]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["onnx"] == str(out / "model.onnx") and summary["opset"] == 11
    assert len(summary["parity"]["checks"]) == (2 if dynamic else 1)  # the proof ran at every size it should
    shapes = [shape] + ([(1, 3, 128, 176)] if dynamic else [])
    check_graph_against_model(name, conditioned_weights(name), out / "model.onnx", shapes)
    if name in ("pspnet", "segnet"):
        assert summary["rewrites"]
