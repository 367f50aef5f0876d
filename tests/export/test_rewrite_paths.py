"""Every path to a rewritten pooling operator, checked in onnxruntime against PyTorch.

Adaptive average pooling and unaligned unpooling are rewritten at the operator level, so
they must be caught however they are reached: module, functional, ``torch._C._nn`` alias,
``torch.ops.aten``, scripted code, and nested inside another torch function
(``F.interpolate(mode="area")``, ``F.max_unpool1d``), with static and dynamic height/width.
Max pooling with indices and aligned unpooling are function-level: each public alias is
checked, and the graph must hold no MaxPool ``Indices`` output (TensorRT refuses it).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.export.ort_paths import DYNAMIC_HW, assert_matches, export_graph, ops_of

STATIC_SHAPE = (1, 4, 24, 36)
OTHER_SHAPES = [(1, 4, 31, 19), (2, 4, 13, 29)]  # odd sizes no bin count divides


class Pool(nn.Module):
    """One way of calling adaptive average pooling, chosen by name."""

    def __init__(self, path: str, bins=(3, 5)):
        super().__init__()
        self.path, self.bins = path, bins
        self.module = nn.AdaptiveAvgPool2d(bins)
        self.scripted = torch.jit.script(_scripted_pool)

    def forward(self, x):
        b = self.bins
        pooled = {
            "module": lambda: self.module(x),
            "functional": lambda: F.adaptive_avg_pool2d(x, b),
            "torch._C._nn": lambda: torch._C._nn.adaptive_avg_pool2d(x, b),
            "torch.ops.aten": lambda: torch.ops.aten.adaptive_avg_pool2d(x, b),
            "interpolate-area": lambda: F.interpolate(x, size=b, mode="area"),  # nested inside interpolate
            "scripted": lambda: self.scripted(x),
            "keep-height": lambda: F.adaptive_avg_pool2d(x, (None, b[1])),
            "rank-3": lambda: F.adaptive_avg_pool2d(x[0], b).unsqueeze(0),
            "1d": lambda: F.adaptive_avg_pool1d(x.flatten(2), b[1]).unsqueeze(-1),
        }[self.path]()
        return pooled * 2.0 + 1.0


def _scripted_pool(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, [3, 5])


POOL_PATHS = ["module", "functional", "torch._C._nn", "torch.ops.aten", "interpolate-area", "scripted",
              "keep-height", "rank-3", "1d"]


@pytest.mark.parametrize("dynamic", [set(), DYNAMIC_HW], ids=["static", "dynamic"])
@pytest.mark.parametrize("path", POOL_PATHS)
def test_adaptive_avg_pool_every_path(path, dynamic):
    model = Pool(path).eval()
    graph = export_graph(model, STATIC_SHAPE, dynamic)
    assert "AveragePool" not in ops_of(graph), "left to the exporter, which needs divisible static sizes"
    shapes = [STATIC_SHAPE] + (OTHER_SHAPES if dynamic and path != "rank-3" else [])
    assert_matches(graph, model, shapes, exact=False)


@pytest.mark.parametrize("dynamic", [set(), DYNAMIC_HW], ids=["static", "dynamic"])
def test_area_interpolation_with_scale_factor(dynamic):
    """``mode="area"`` with a scale factor: the bin count is floor(size·scale), computed by
    PyTorch from the traced size; the operator-level rewrite takes it as a run-time value."""

    class Area(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=0.37, mode="area")

    graph = export_graph(Area().eval(), STATIC_SHAPE, dynamic)
    assert_matches(graph, Area().eval(), [STATIC_SHAPE], exact=False)


def test_global_pool_stays_global_average_pool():
    class Global(nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=(1, 1), mode="area") + nn.functional.adaptive_avg_pool2d(x, 1)

    graph = export_graph(Global().eval(), STATIC_SHAPE, DYNAMIC_HW)
    assert "GlobalAveragePool" in ops_of(graph) and "MatMul" not in ops_of(graph)
    assert_matches(graph, Global().eval(), [STATIC_SHAPE] + OTHER_SHAPES, exact=False)


class PoolIndices(nn.Module):
    """Max pooling with indices through each public path; returns indices and values."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.module = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        pooled, indices = {
            "module": lambda: self.module(x),
            "functional": lambda: F.max_pool2d(x, 2, return_indices=True),
            "functional-with-indices": lambda: F.max_pool2d_with_indices(x, 2),
            "torch._C._nn": lambda: torch._C._nn.max_pool2d_with_indices(x, [2, 2]),
        }[self.path]()
        return torch.cat([indices.to(torch.float32), pooled], 1)  # indices < 2**24: exact in float32


@pytest.mark.parametrize("dynamic", [set(), DYNAMIC_HW], ids=["static", "dynamic"])
@pytest.mark.parametrize("path", ["module", "functional", "functional-with-indices", "torch._C._nn"])
def test_max_pool_indices_every_path(path, dynamic):
    model = PoolIndices(path).eval()
    graph = export_graph(model, STATIC_SHAPE, dynamic)
    assert all(len(n.output) == 1 for n in graph.graph.node if n.op_type == "MaxPool"), "TensorRT refuses Indices"
    tied = torch.relu(torch.round(torch.randn(*STATIC_SHAPE, generator=torch.Generator().manual_seed(3)) * 4) / 4)
    assert_matches(graph, model, [STATIC_SHAPE] + (OTHER_SHAPES if dynamic else []), exact=True, extra=[tied])


class Unpool(nn.Module):
    """Max unpooling through each path; pooling indices from plain (untouched) max pooling."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.aligned = nn.MaxUnpool2d(2)
        self.overlapping = nn.MaxUnpool2d(3, stride=2, padding=1)

    def forward(self, x):
        if self.path == "1d":  # F.max_unpool1d unpools through torch._C._nn.max_unpool2d, nested
            flat = x.flatten(2)
            pooled, indices = F.max_pool1d(flat, 2, return_indices=True)
            return F.max_unpool1d(pooled * 1.5, indices, 2, output_size=flat.shape[-1:]).reshape(x.shape)
        kernel, stride, padding = (3, 2, 1) if self.path == "overlapping-module" else (2, 2, 0)
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(x, [kernel] * 2, [stride] * 2, [padding] * 2)
        pooled = pooled * 1.5
        size = list(x.shape[-2:])
        return {
            "aligned-module": lambda: self.aligned(pooled, indices, output_size=size),
            "aligned-functional": lambda: F.max_unpool2d(pooled, indices, 2, output_size=size),
            "overlapping-module": lambda: self.overlapping(pooled, indices, output_size=size),
            "torch._C._nn": lambda: torch._C._nn.max_unpool2d(pooled, indices, size),
        }[self.path]()


UNPOOL_PATHS = {  # path → whether the graph may scatter (the function-level rewrite avoids it)
    "aligned-module": False, "aligned-functional": False, "overlapping-module": True, "torch._C._nn": True, "1d": True,
}


@pytest.mark.parametrize("dynamic", [set(), DYNAMIC_HW], ids=["static", "dynamic"])
@pytest.mark.parametrize("path", list(UNPOOL_PATHS))
def test_max_unpool_every_path(path, dynamic):
    model = Unpool(path).eval()
    graph = export_graph(model, STATIC_SHAPE, dynamic)
    ops = ops_of(graph)
    assert "MaxUnpool" not in ops
    assert ("ScatterElements" in ops) == UNPOOL_PATHS[path]
    assert_matches(graph, model, [STATIC_SHAPE] + (OTHER_SHAPES if dynamic else []), exact=True)


def test_unrewritten_blocker_still_named_after_the_context(tmp_path):
    """The operator-level rewrites are registered only inside the context: afterwards the
    exporter's own conversion (which refuses non-divisible pooling) is back."""
    from segdeploy.export.rewrites import export_rewrites

    with export_rewrites(11):
        pass
    with pytest.raises(Exception, match="adaptive_avg_pool2d"):
        torch.onnx.export(Pool("functional").eval(), (torch.randn(*STATIC_SHAPE),), str(tmp_path / "m.onnx"),
                          opset_version=11, dynamo=False)


@pytest.mark.skipif(importlib.util.find_spec("segmentation_models_pytorch") is None, reason="smp not installed")
@pytest.mark.parametrize("dynamic", [set(), {"batch", "height", "width"}], ids=["static", "dynamic"])
def test_smp_pspnet_exports_at_opset_11(tmp_path, dynamic):
    """segmentation_models_pytorch's PSPNet pools inside F.interpolate(mode="area"): it exports
    at opset 11 and meets the strict proof (relative error ≤ 1e-4), at a second size too."""
    from segdeploy.export import ExportRequest, export_model
    from segdeploy.export.proof import ParityThresholds

    kwargs = {"encoder_name": "resnet18", "encoder_weights": None, "classes": 4}
    result = export_model(ExportRequest(source="segmentation_models_pytorch:PSPNet", out_dir=tmp_path / "d",
                                        input_shape=(1, 3, 64, 96), model_kwargs=kwargs, dynamic=dynamic,
                                        thresholds=ParityThresholds(min_agreement=0.999, max_rel_error=1e-4)))
    assert result.parity["passed"] and len(result.parity["checks"]) == (2 if dynamic else 1)
    assert [r.split(":")[0] for r in result.rewrites] == [f"model.decoder.psp.blocks.{i} (PSPBlock)" for i in (1, 2, 3)]


def test_unconvertible_operator_fails_in_one_line_naming_its_module(tmp_path):
    """Bad input through the CLI: one line on stderr naming the operator and the module that
    calls it, nothing on stdout (not the exporter's TorchScript dump), nothing written."""
    from tests.conftest import run_segdeploy

    model = tmp_path / "warp.py"
    model.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
        "class Warp(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return F.grid_sample(x, torch.zeros(x.shape[0], x.shape[2], x.shape[3], 2), align_corners=False)\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=3):\n"
        "        super().__init__()\n"
        "        self.conv, self.warp = nn.Conv2d(3, num_classes, 1), Warp()\n"
        "    def forward(self, x):\n"
        "        return self.warp(self.conv(x))\n"
    )
    proc = run_segdeploy("export", f"{model}:Net", "--input-shape", "1x3x16x24", "-o", str(tmp_path / "d"))
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "grid_sampler" in lines[0] and "model.warp (Warp)" in lines[0], proc.stderr
    assert not (tmp_path / "d").exists()


class AntialiasedResize(nn.Module):
    """A learned 7×9 grid resized with antialiasing to the feature map's size (as timm
    resamples a ViT's position embedding), added to the features."""

    def __init__(self, mode: str, size_from: str):
        super().__init__()
        self.mode, self.size_from = mode, size_from
        self.grid = nn.Parameter(torch.randn(1, 4, 7, 9, generator=torch.Generator().manual_seed(5)))

    def forward(self, x):
        if self.size_from == "size":
            grid = F.interpolate(self.grid, size=x.shape[-2:], mode=self.mode, antialias=True, align_corners=False)
        else:
            grid = F.interpolate(self.grid, scale_factor=(0.5, 0.75), mode=self.mode, antialias=True)
            grid = F.interpolate(grid, size=x.shape[-2:], mode="nearest")
        return x + grid


@pytest.mark.parametrize("size_from", ["size", "scale"])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_antialiased_resize_at_a_static_size(mode, size_from):
    """Down (7×9 → 4×6 or 3×6) and up (7×9 → 24×36) sizes, with PyTorch's own weights."""
    for shape in [(1, 4, 4, 6), STATIC_SHAPE]:
        model = AntialiasedResize(mode, size_from).eval()
        graph = export_graph(model, shape, set())
        assert_matches(graph, model, [shape], exact=False)


def test_antialiased_resize_to_a_run_time_size_is_refused_naming_the_module():
    from segdeploy.errors import ExportError

    with pytest.raises(ExportError, match=r"_upsample_bicubic2d_aa \(antialiased resize\) in <root> \(AntialiasedResize\)"
                                          r".*static --input-shape"):
        export_graph(AntialiasedResize("bicubic", "size").eval(), STATIC_SHAPE, DYNAMIC_HW)
