"""Degenerate model outputs get a message about the model, not about the graph."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.errors import ParityError
from segdeploy.export import ExportRequest, export_model
from segdeploy.export.degenerate import degenerate_reason
from tests.conftest import run_segdeploy

MODELS = """
import torch
from torch import nn


class Scaled(nn.Module):
    # A small conv net whose logits are multiplied by `factor` (tiny: they underflow), with
    # `fill` (nan/inf) written into one logit, or replaced by a constant.
    def __init__(self, num_classes=3, factor=1.0, fill=None, constant=None):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)
        self.factor, self.fill, self.constant = factor, fill, constant

    def forward(self, x):
        y = self.conv(x) * self.factor
        if self.fill is not None:
            y = y.clone()
            y[:, 0, 0, 0] = float(self.fill)
        if self.constant is not None:
            y = y * 0 + self.constant
        return y


class SquareOnly(nn.Module):
    # Refuses anything but square inputs, as some ViT heads do.
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        assert x.shape[-1] == x.shape[-2], f"Input height ({x.shape[-2]}) doesn't match width ({x.shape[-1]})"
        return self.conv(x)
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("degenerate") / "degenerate_models.py"
    path.write_text(MODELS)
    return path


CASES = [
    ({"factor": 1e-44}, "zero or denormal", "train it or load weights"),
    ({"factor": 0.0}, "zero or denormal", "train it or load weights"),
    ({"fill": "nan"}, "1 NaN and 0 infinite", "diverged checkpoint"),
    ({"fill": "inf"}, "0 NaN and 1 infinite", "diverged checkpoint"),
    ({"constant": 2.5}, "all its logits are equal (2.5)", "train the model"),
]


@pytest.mark.parametrize("kwargs, what, todo", CASES, ids=["denormal", "zero", "nan", "inf", "constant"])
def test_degenerate_output_is_named_and_nothing_is_written(models, tmp_path, kwargs, what, todo):
    out = tmp_path / "deploy"
    with pytest.raises(ParityError) as info:
        export_model(ExportRequest(source=f"{models}:Scaled", out_dir=out, input_shape=(1, 3, 16, 24), model_kwargs=kwargs))
    message = str(info.value)
    assert "the model's own output in PyTorch at input 1x3x16x24 is degenerate" in message
    assert what in message and todo in message and "cannot be compared" in message
    assert not out.exists()


def test_small_but_normal_logits_still_export(models, tmp_path):
    """1e-30 is tiny but a normal float32: the model is comparable and parity decides."""
    result = export_model(ExportRequest(source=f"{models}:Scaled", out_dir=tmp_path / "d", input_shape=(1, 3, 16, 24),
                                        model_kwargs={"factor": 1e-30}))
    assert result.parity["passed"]


def test_reason_thresholds():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    assert degenerate_reason(logits) is None
    assert degenerate_reason((logits * 1e-39).astype(np.float32)) is not None  # every value denormal
    assert degenerate_reason(np.float32(1000) + logits * np.float32(1e-9)) is not None  # equal within rounding
    assert degenerate_reason(np.float32(1000) + logits * np.float32(1e-2)) is None
    assert degenerate_reason(rng.integers(0, 3, (1, 4, 5)).astype(np.int32)) is None  # a class map: not logits


def test_cli_says_what_is_degenerate(models, tmp_path):
    proc = run_segdeploy("export", f"{models}:Scaled", "--model-kwargs", '{"factor": 1e-44}',
                         "--input-shape", "1x3x16x24", "-o", str(tmp_path / "d"))
    assert proc.returncode == 1
    assert proc.stdout == ""  # no exporter log, no partial result on stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "degenerate" in lines[0] and "Traceback" not in proc.stderr


def test_a_model_that_cannot_run_at_the_input_is_told_in_one_line(models, tmp_path):
    proc = run_segdeploy("export", f"{models}:SquareOnly", "--input-shape", "1x3x16x24", "-o", str(tmp_path / "d"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: the model cannot run at input 1x3x16x24 in PyTorch: AssertionError: Input height (16) doesn't match "
        "width (24) (check --input-shape (its channels and size) and --model-kwargs: they must be what the model takes)"
    )
    assert not (tmp_path / "d").exists()
