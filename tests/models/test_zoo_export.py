"""Every zoo architecture, tiny width, non-square input: exports static and dynamic (opset 11)
with a passing parity proof in onnxruntime (relative error ≤ 1e-4, argmax agreement ≥ 99.9%)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from zoo_support import NUM_CLASSES, TINY, check_graph_against_model, input_size, zoo_names
from segdeploy.export import ExportRequest, export_model
from segdeploy.export.proof import ParityThresholds
from segdeploy.export.rewrites import export_rewrites
from segdeploy.models import get_spec

STRICT = ParityThresholds(min_agreement=0.999, max_rel_error=1e-4)
DYNAMIC_HW = {"height", "width"}


def _export(name, weights, out_dir, dynamic):
    spec = get_spec(name)
    h, w = input_size(spec.size_multiple)
    request = ExportRequest(
        source=name,
        out_dir=out_dir,
        input_shape=(1, 3, h, w),
        dynamic=dynamic,
        num_classes=NUM_CLASSES,
        model_kwargs={"width": TINY},
        weights=weights,
        thresholds=STRICT,
    )
    return export_model(request), (h, w)


def _dims(graph_path):
    model = onnx.load(str(graph_path))
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", zoo_names())
def test_static_export_proves_parity(name, conditioned_weights, tmp_path):
    result, (h, w) = _export(name, conditioned_weights(name), tmp_path / "deploy", set())
    parity = result.parity
    assert parity["passed"]
    assert parity["max_rel_error"] <= 1e-4 and parity["min_argmax_agreement"] >= 0.999
    assert [c["shape"] for c in parity["checks"]] == [[1, 3, h, w]]
    assert _dims(result.onnx_path) == [1, 3, h, w]
    # The model itself produced logits at the input's H×W: no upsampling was appended
    # (which would hide an H/W swap inside the model).
    assert json.loads((result.directory / "manifest.json").read_text())["model"]["upsampled_output"] is False
    check_graph_against_model(name, conditioned_weights(name), result.onnx_path, [(1, 3, h, w)])


@pytest.mark.parametrize("name", [n for n in zoo_names() if get_spec(n).dynamic_hw])
def test_dynamic_export_reproduces_the_model_at_two_sizes(name, conditioned_weights, tmp_path):
    """Checked here, at the export size and at a second non-square size neither the export nor its
    proof used, against the model itself (the proof's own figures are not trusted)."""
    result, (h, w) = _export(name, conditioned_weights(name), tmp_path / "deploy", DYNAMIC_HW)
    dims = _dims(result.onnx_path)
    assert dims[:2] == [1, 3] and all(isinstance(d, str) for d in dims[2:])
    multiple = get_spec(name).size_multiple
    other = (1, 3, h + 3 * max(multiple, 8), w + 5 * max(multiple, 8))
    assert other[2] != other[3] and [c["shape"] for c in result.parity["checks"]][-1] != list(other)
    check_graph_against_model(name, conditioned_weights(name), result.onnx_path, [(1, 3, h, w), other])


@pytest.mark.parametrize("name", zoo_names())
def test_logits_keep_input_height_and_width_and_vary(name, conditioned_weights):
    """Raw model output (no export wrapper) is N×classes×H×W for a non-square input, and the
    conditioned weights make several classes win somewhere (so argmax agreement can fail)."""
    spec = get_spec(name)
    h, w = input_size(spec.size_multiple)
    model = spec.build(num_classes=NUM_CLASSES, width=TINY)
    model.load_state_dict(torch.load(conditioned_weights(name), weights_only=True))
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(7)))
    assert tuple(logits.shape) == (1, NUM_CLASSES, h, w)
    assert len(np.unique(logits.argmax(1).numpy())) >= 2


def test_rewrites_run_eagerly_reproduce_the_model(conditioned_weights):
    """SegNet's function-level (index) rewrites, run in PyTorch itself, reproduce the model
    bit for bit, so any export difference would be the runtime's, not the rewrite's.
    (PSPNet's adaptive pooling is rewritten at the operator level, inside the exporter: its
    exactness is checked in onnxruntime, tests/export/test_rewrite_paths.py.)"""
    model = get_spec("segnet").build(num_classes=NUM_CLASSES, width=TINY)
    model.load_state_dict(torch.load(conditioned_weights("segnet"), weights_only=True))
    sample = torch.randn(1, 3, 100, 150, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = model.eval()(sample)
        with export_rewrites():
            rewritten = model(sample)
    assert torch.equal(plain, rewritten)
