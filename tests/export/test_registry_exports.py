"""Every torchvision registry model exports at a small non-square input, static and dynamic H/W.

The test checks the exported graph itself: it loads the same weights into a fresh
PyTorch model and compares onnxruntime's output with it at the export shape and, for
dynamic exports, at another non-square size.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segdeploy.export import ExportRequest, export_model
from segdeploy.models import get_spec

SHAPE = (1, 3, 96, 160)
TORCHVISION = [
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
]
BIG = {"fcn_resnet101", "deeplabv3_resnet101"}


def _logits(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = model(x)
    return (out["out"] if isinstance(out, dict) else out).numpy()


def _check_graph(onnx_path, model, shape, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": x.numpy()})[0]
    want = _logits(model, x)
    assert got.shape == want.shape == (shape[0], 5, shape[2], shape[3])
    assert np.abs(got - want).max() <= 1e-3 * (want.max() - want.min())
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-hw"])
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in TORCHVISION]
)
def test_torchvision_model_exports_with_parity(name, dynamic, tmp_path):
    torch.manual_seed(1)
    model = get_spec(name).build(num_classes=5).eval()
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    result = export_model(
        ExportRequest(
            source=name,
            out_dir=tmp_path / "deploy",
            input_shape=SHAPE,
            num_classes=5,
            weights=weights,
            dynamic={"height", "width"} if dynamic else set(),
        )
    )
    graph = onnx.load(str(result.onnx_path))
    assert graph.opset_import[0].version == 11
    assert [i.name for i in graph.graph.input] == ["input"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    _check_graph(result.onnx_path, model, SHAPE, seed=7)
    if dynamic:
        _check_graph(result.onnx_path, model, (1, 3, 128, 192), seed=8)
    manifest = json.loads((tmp_path / "deploy" / "manifest.json").read_text())
    entry = manifest["artifacts"]["onnx-fp32"]
    assert entry["parity"]["passed"] and entry["parity"]["min_argmax_agreement"] >= 0.999
    assert len(entry["parity"]["checks"]) == (2 if dynamic else 1)
    assert manifest["input"]["dynamic_axes"] == (["height", "width"] if dynamic else [])
