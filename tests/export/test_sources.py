"""Model sources: a user's file (with a sibling import), a package module, TorchScript; checkpoints."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from segdeploy.errors import SegdeployError
from segdeploy.export import ExportRequest, export_model
from segdeploy.models.loading import load_model, read_state_dict

SHAPE = (1, 3, 64, 96)

SIBLING = '''
import torch.nn as nn

def head(cin, classes):
    return nn.Conv2d(cin, classes, 1)
'''

USER_MODEL = '''
import torch.nn as nn
import torch.nn.functional as F
from blocks import head  # a sibling module: the file's folder must be importable

class TinySeg(nn.Module):
    """Returns a tuple at 1/2 resolution: segdeploy must pick the first and upsample."""
    def __init__(self, num_classes=4, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = head(width, num_classes)
    def forward(self, x):
        return self.head(self.stem(x)), x.mean()

def build(num_classes=4, width=8):
    return TinySeg(num_classes, width)
'''


@pytest.fixture
def user_files(tmp_path):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "blocks.py").write_text(textwrap.dedent(SIBLING))
    (pkg / "tiny.py").write_text(textwrap.dedent(USER_MODEL))
    return pkg


def _ort(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_user_file_factory_with_sibling_import(user_files, tmp_path):
    result = export_model(
        ExportRequest(
            source=f"{user_files / 'tiny.py'}:build",
            out_dir=tmp_path / "d",
            input_shape=SHAPE,
            model_kwargs={"num_classes": 3, "width": 6},
            dynamic={"height", "width"},
        )
    )
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["model"]["source_kind"] == "factory"
    assert manifest["model"]["upsampled_output"] is True
    assert manifest["model"]["num_classes"] == 3
    x = np.random.default_rng(3).standard_normal((1, 3, 80, 112)).astype(np.float32)
    assert _ort(result.onnx_path, x).shape == (1, 3, 80, 112)


def test_package_module_factory(user_files, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(user_files.parent))
    (user_files / "__init__.py").write_text("")
    (user_files / "tiny.py").write_text(textwrap.dedent(USER_MODEL).replace("from blocks", "from userpkg.blocks"))
    loaded = load_model("userpkg.tiny:build", model_kwargs={"num_classes": 2})
    assert loaded.kind == "factory"
    assert loaded.module.head.out_channels == 2


def test_torchscript_file(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    scripted = torch.jit.trace(model, torch.randn(1, 3, 32, 48))
    path = tmp_path / "seg.pt"
    scripted.save(str(path))
    result = export_model(ExportRequest(source=str(path), out_dir=tmp_path / "d", input_shape=SHAPE))
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(_ort(result.onnx_path, x.numpy()), want, atol=1e-5)


# -- checkpoints ------------------------------------------------------------------------------


def _tiny_unet_state(num_classes=3):
    torch.manual_seed(0)
    return load_model("unet", num_classes=num_classes, model_kwargs={"width": 0.0625}).module.state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "optimizer": {}},
        lambda s: {"ema": s, "step": 10},
    ],
    ids=["plain", "nested-state_dict", "nested-model-with-module-prefix", "nested-ema"],
)
def test_checkpoint_variants_load_the_same_weights(wrap, tmp_path):
    state = _tiny_unet_state()
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(state), path)
    loaded = load_model("unet", num_classes=3, model_kwargs={"width": 0.0625}, weights=path)
    for key, value in loaded.module.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_weights_key_selects_nested_entry(tmp_path):
    state = _tiny_unet_state()
    path = tmp_path / "ckpt.pth"
    torch.save({"teacher": {"net": state}, "student": {}}, path)
    assert set(read_state_dict(path, key="teacher.net")) == set(state)
    with pytest.raises(SegdeployError, match="no key 'student.x'"):
        read_state_dict(path, key="student.x")


def test_checkpoint_for_another_class_count_names_it(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(_tiny_unet_state(num_classes=7), path)
    with pytest.raises(SegdeployError, match=r"shape mismatch: classifier\.weight.*trained for 7 classes"):
        load_model("unet", num_classes=3, model_kwargs={"width": 0.0625}, weights=path)


def test_checkpoint_with_pickled_objects_needs_unsafe_flag(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": _tiny_unet_state(), "config": argparse_like()}, path)
    with pytest.raises(SegdeployError, match="pickled Python objects.*--unsafe-load"):
        read_state_dict(path)
    assert "classifier.weight" in read_state_dict(path, unsafe_load=True)


class argparse_like:  # a custom class: not loadable with weights_only=True
    def __init__(self):
        self.lr = 0.1


class _DictAtHalf(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.body(x)
        return {"aux": y * 2, "out": y}


def test_torchscript_dict_output_at_lower_resolution(tmp_path):
    model = _DictAtHalf().eval()
    path = tmp_path / "seg.ts"
    torch.jit.script(model).save(str(path))
    result = export_model(
        ExportRequest(source=str(path), out_dir=tmp_path / "d", input_shape=SHAPE, dynamic={"height", "width"})
    )
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        want = torch.nn.functional.interpolate(model(x)["out"], size=(80, 112), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(_ort(result.onnx_path, x.numpy()), want.numpy(), atol=1e-5)
