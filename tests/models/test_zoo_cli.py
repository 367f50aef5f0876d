"""`segdeploy export` through the CLI for zoo models (static and dynamic), strict parity."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from zoo_support import NUM_CLASSES, TINY
from segdeploy.cli import app


@pytest.mark.parametrize(
    "name, shape, dynamic",
    [("pspnet", "1x3x100x150", "height,width"), ("deeplabv3plus", "1x3x100x150", None), ("segnet", "1x3x100x150", "height,width")],
)
def test_cli_export_zoo_model(name, shape, dynamic, conditioned_weights, tmp_path):
    out = tmp_path / "deploy"
    args = ["export", name, "-o", str(out), "--input-shape", shape, "--num-classes", str(NUM_CLASSES),
            "--model-kwargs", json.dumps({"width": TINY}), "--weights", str(conditioned_weights(name)),
            "--max-rel-error", "1e-4", "--json"]  # fmt: skip
    if dynamic:
        args += ["--dynamic", dynamic]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["parity"]["passed"] and summary["parity"]["max_rel_error"] <= 1e-4
    assert len(summary["parity"]["checks"]) == (2 if dynamic else 1)
    assert (out / "model.onnx").is_file()
    if name in ("pspnet", "segnet"):
        assert summary["rewrites"]
