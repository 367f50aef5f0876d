"""The real CLI: help, version, models, export, and every bad input with its one-line error."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from segdeploy.models import get_spec

TINY_UNET = ["unet", "--model-kwargs", '{"width": 0.0625}', "--input-shape", "1x3x64x96"]

BAD_MODELS = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

class Warp(nn.Module):
    def forward(self, x):
        grid = torch.zeros(x.shape[0], x.shape[2], x.shape[3], 2)
        return F.grid_sample(x, grid, align_corners=False)

class Warped(nn.Module):
    """grid_sample has no ONNX form before opset 16."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.warp = Warp()
    def forward(self, x):
        return self.warp(self.conv(x))

class FixedSize(nn.Module):
    """Bakes the 64x96 size into a reshape: cannot run at another size."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
    def forward(self, x):
        y = self.conv(x)
        return y.reshape(1, 2, 64 * 96).softmax(-1).reshape(1, 2, 64, 96)

class Noisy(nn.Module):
    """Random output: the graph cannot reproduce PyTorch."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
    def forward(self, x):
        return self.conv(x) + 100 * torch.rand_like(self.conv(x))
'''


@pytest.fixture
def bad_models(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(textwrap.dedent(BAD_MODELS))
    return path


def _one_error_line(proc, *needles):
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), proc.stderr
    assert len(lines) == 1, f"expected one line, got: {proc.stderr}"
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_help_and_version(cli_subprocess):
    assert "export" in cli_subprocess("--help").stdout
    proc = cli_subprocess("--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("segdeploy 0.")


def test_models_json_lists_registry(cli):
    proc = cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    for name in ("deeplabv3_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3_large", "unet"):
        assert name in rows
    want = sum(p.numel() for p in get_spec("fcn_resnet50").build(num_classes=21).parameters())
    assert rows["fcn_resnet50"]["parameters"] == want
    assert rows["unet"]["dynamic_hw"] is True


def test_export_writes_manifest_and_json(cli, tmp_path):
    out = tmp_path / "deploy"
    proc = cli("export", *TINY_UNET, "--num-classes", "3", "--dynamic", "batch,height", "-o", str(out), "--json",
               "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--scale", "0.00392156862745098", "--bgr")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["sha256"] == manifest["artifacts"]["onnx-fp32"]["sha256"]
    assert manifest["schema_version"] == 1
    assert manifest["input"]["dynamic_axes"] == ["batch", "height"]
    assert manifest["artifacts"]["onnx-fp32"]["inputs"][0]["shape"] == ["batch", 3, "height", 96]
    assert manifest["preprocess"]["channel_order"] == "BGR" and manifest["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert manifest["artifacts"]["onnx-fp32"]["tool_versions"]["torch"] == torch.__version__
    assert [c["shape"] for c in manifest["artifacts"]["onnx-fp32"]["parity"]["checks"]] == [[1, 3, 64, 96], [2, 3, 64 + 32 + 16, 96]]


def test_existing_export_needs_force(cli, tmp_path):
    out = tmp_path / "deploy"
    assert cli("export", *TINY_UNET, "-o", str(out)).returncode == 0
    (out / "model.fp16.onnx").write_bytes(b"stale")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"]["onnx-fp16"] = {**manifest["artifacts"]["onnx-fp32"], "file": "model.fp16.onnx", "precision": "fp16"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    proc = cli("export", *TINY_UNET, "-o", str(out))
    assert proc.returncode == 1
    _one_error_line(proc, "already holds an export", "--force")
    assert cli("export", *TINY_UNET, "-o", str(out), "--force").returncode == 0
    assert not (out / "model.fp16.onnx").exists(), "artifacts of the replaced export must go"


@pytest.mark.parametrize(
    "args, code, needles",
    [
        (["export", "nope"], 1, ["unknown model 'nope'", "deeplabv3_resnet50", "unet"]),
        (["export", "unet", "--input-shape", "1x3x64"], 2, ["malformed --input-shape '1x3x64'"]),
        (["export", "unet", "--input-shape", "1x3x60x96"], 2, ["divisible by 16"]),
        (["export", "unet", "--dynamic", "depth"], 2, ["--dynamic takes a subset of batch,height,width"]),
        (["export", "unet", "--model-kwargs", "{width: 1}"], 2, ["--model-kwargs is not valid JSON"]),
        (["export", "unet", "--model-kwargs", '{"depth": 3}'], 2, ["takes no option(s) depth"]),
        (["export", "unet", "--weights", "missing.pth"], 1, ["checkpoint not found: missing.pth"]),
        (["export", "does/not/exist.py:build"], 1, ["model file not found"]),
        (["export", "notamodel.onnx"], 1, ["model file not found"]),
    ],
    ids=["unknown-name", "shape-malformed", "shape-multiple", "dynamic-axis", "kwargs-json", "kwargs-unknown",
         "weights-missing", "file-missing", "torchscript-missing"],
)
def test_bad_input_one_line(cli, tmp_path, args, code, needles):
    proc = cli(*args, "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    _one_error_line(proc, *needles)
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint(cli, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    proc = cli("export", *TINY_UNET, "--weights", str(bad), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    _one_error_line(proc, "cannot read checkpoint", "corrupt")
    assert not (tmp_path / "out").exists()


def test_checkpoint_for_other_class_count(cli, tmp_path):
    ckpt = tmp_path / "seven.pth"
    torch.save(get_spec("unet").build(num_classes=7, width=0.0625).state_dict(), ckpt)
    proc = cli("export", *TINY_UNET, "--num-classes", "3", "--weights", str(ckpt), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    _one_error_line(proc, "does not match the model", "classifier.weight", "trained for 7 classes")


def test_unimportable_user_file(cli, tmp_path):
    (tmp_path / "m.py").write_text("import does_not_exist_anywhere\n")
    proc = cli("export", f"{tmp_path / 'm.py'}:build", "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    _one_error_line(proc, "cannot import", "ModuleNotFoundError", "does_not_exist_anywhere")


def test_unsupported_operator_names_operator_and_module(cli, tmp_path, bad_models):
    proc = cli("export", f"{bad_models}:Warped", "--input-shape", "1x3x64x96", "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    _one_error_line(proc, "grid_sampler", "warp (Warp)", "opset 11")
    assert not (tmp_path / "out").exists()


def test_dynamic_axis_the_model_cannot_support(cli, tmp_path, bad_models):
    proc = cli("export", f"{bad_models}:FixedSize", "--input-shape", "1x3x64x96", "--dynamic", "height,width",
               "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    _one_error_line(proc, "cannot run at input 1x3x160x128", "static --input-shape")
    proc = cli("export", f"{bad_models}:FixedSize", "--input-shape", "1x3x64x96", "--dynamic", "batch",
               "-o", str(tmp_path / "out"))
    _one_error_line(proc, "cannot run at input 2x3x64x96")
    assert not (tmp_path / "out").exists()
    assert cli("export", f"{bad_models}:FixedSize", "--input-shape", "1x3x64x96", "-o", str(tmp_path / "ok")).returncode == 0


def test_parity_failure_leaves_nothing(cli, tmp_path, bad_models):
    proc = cli("export", f"{bad_models}:Noisy", "--input-shape", "1x3x64x96", "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    _one_error_line(proc, "parity failed at input 1x3x64x96", "argmax agreement", "too unstable to be float32 rounding")
    assert not (tmp_path / "out").exists()


def test_classes_file_must_match_class_count(cli, tmp_path):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": ["a", "b"], "ignore_index": 255}))
    proc = cli("export", *TINY_UNET, "--num-classes", "3", "--classes", str(classes), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    _one_error_line(proc, "lists 2 classes but the model outputs 3")
    classes.write_text(json.dumps({"classes": ["a", "b", "c"], "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}))
    assert cli("export", *TINY_UNET, "--num-classes", "3", "--classes", str(classes), "-o", str(tmp_path / "ok")).returncode == 0
    assert json.loads((tmp_path / "ok" / "manifest.json").read_text())["classes"]["names"] == ["a", "b", "c"]


def test_real_process_error_and_debug_traceback(cli_subprocess, tmp_path):
    proc = cli_subprocess("export", "unet", "--input-shape", "1x3x64", "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    _one_error_line(proc, "malformed --input-shape")
    proc = cli_subprocess("export", "nope", "-o", str(tmp_path / "out"), env={"SEGDEPLOY_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "SegdeployError" in proc.stderr
