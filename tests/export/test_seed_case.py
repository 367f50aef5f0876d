"""Seed 001's case through the real CLI: torchvision deeplabv3_resnet50, 1x3x512x1024, opset 11,
checked here against the model with the same (seeded) weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_deeplabv3_resnet50_full_size_export(cli, tmp_path):
    import onnxruntime as ort

    from segdeploy.models import get_spec

    torch.manual_seed(1)
    model = get_spec("deeplabv3_resnet50").build(num_classes=11).eval()
    torch.save(model.state_dict(), tmp_path / "seeded.pth")
    out = tmp_path / "deploy"
    proc = cli("export", "deeplabv3_resnet50", "--num-classes", "11", "--input-shape", "1x3x512x1024",
               "--weights", str(tmp_path / "seeded.pth"), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["opset"] == 11 and summary["outputs"][0]["shape"] == [1, 11, 512, 1024]
    x = torch.randn(1, 3, 512, 1024, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x)["out"].numpy()
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-3 * (want.max() - want.min())
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999 and len(np.unique(want.argmax(1))) >= 2
