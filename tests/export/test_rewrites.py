"""Exact rewrites of export blockers: adaptive average pooling (non-divisible / dynamic),
max pooling with indices and max unpooling — eager equivalence, export + parity for
user-defined models (module and functional forms), the CLI, and TensorRT(-RTX) parsing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.errors import ExportError
from segdeploy.export import ExportRequest, export_model
from segdeploy.export.proof import ParityThresholds
from segdeploy.export.rewrite_ops import max_pool2d_indices_exact, max_unpool2d_exact
from segdeploy.export.rewrites import export_rewrites, rewrite_export_blockers
from segdeploy.manifest import Manifest
from segdeploy.models import get_spec

REPO = Path(__file__).resolve().parents[2]
STRICT = ParityThresholds(min_agreement=0.999, max_rel_error=1e-4)
DYNAMIC_HW = {"height", "width"}

# User models, written to a file and loaded as `file.py:Factory` like a user's own model.
USER_MODELS = textwrap.dedent(
    """
    import torch
    import torch.nn.functional as F
    from torch import nn


    class PyramidPoolingNet(nn.Module):
        # PSPNet-style pooling: modules for bins 1/2/3/6 and a functional call with (5, 7).
        def __init__(self, num_classes=4):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
            self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(b) for b in (1, 2, 3, 6))
            self.head = nn.Conv2d(8 * 6, num_classes, 3, padding=1)

        def forward(self, x):
            f = self.stem(x)
            size = f.shape[-2:]
            branches = [f] + [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) for p in self.pools]
            branches.append(F.interpolate(F.adaptive_avg_pool2d(f, (5, 7)), size=size, mode="bilinear", align_corners=False))
            return F.interpolate(self.head(torch.cat(branches, 1)), size=x.shape[-2:], mode="bilinear", align_corners=False)


    class UnpoolingNet(nn.Module):
        # SegNet-style: a MaxPool2d module with indices and functional (ceil-mode) pooling/unpooling.
        def __init__(self, num_classes=4):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.pool = nn.MaxPool2d(2, 2, return_indices=True)
            self.unpool = nn.MaxUnpool2d(2, 2)
            self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Conv2d(8, num_classes, 3, padding=1)

        def forward(self, x):
            e1 = self.enc(x)
            p1, i1 = self.pool(e1)
            p2, i2 = F.max_pool2d(self.mid(p1), 2, 2, ceil_mode=True, return_indices=True)
            u2 = F.max_unpool2d(p2, i2, 2, 2, output_size=p1.shape[-2:])
            u1 = self.unpool(self.mid(u2), i1, output_size=e1.shape[-2:])
            return self.head(u1)


    class AdaptiveMaxNet(nn.Module):
        # adaptive *max* pooling is not rewritten: dynamic export must fail, naming it.
        def __init__(self, num_classes=4):
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 3, padding=1)
            self.pool = nn.AdaptiveMaxPool2d(3)

        def forward(self, x):
            f = self.conv(x)
            return f + F.interpolate(self.pool(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
    """
)


@pytest.fixture(scope="module")
def user_models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "rewrite_user_models.py"
    path.write_text(USER_MODELS)
    return path


# -- eager equivalence with PyTorch's operators ----------------------------------------------


@pytest.mark.parametrize("size", [(100, 150), (13, 29), (8, 6)])
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_indices_match_pytorch_including_ties(size, kernel, ceil_mode):
    x = torch.relu(torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1)))  # zero windows tie
    x[0, 0, : kernel[0], : kernel[1]] = 0.0  # at least one all-tie window
    pooled, indices = F.max_pool2d(x, kernel, kernel, ceil_mode=ceil_mode, return_indices=True)
    got_pooled, got_indices = max_pool2d_indices_exact(x, kernel, ceil_mode)
    assert torch.equal(got_pooled, pooled)
    assert torch.equal(got_indices, indices)


@pytest.mark.parametrize("size", [(100, 150), (13, 29)])
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3)])
def test_aligned_unpool_matches_pytorch(size, kernel):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    pooled, indices = F.max_pool2d(x, kernel, kernel, return_indices=True)
    expected = F.max_unpool2d(pooled, indices, kernel, kernel, output_size=size)
    assert torch.equal(max_unpool2d_exact(pooled, indices, kernel, size), expected)


def test_rewrites_are_active_only_inside_the_context():
    x = torch.randn(1, 2, 12, 16)
    with export_rewrites(11) as applied:
        pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(indices, F.max_pool2d(x, 2, 2, return_indices=True)[1])
    assert applied == []  # the operator-level rewrites only act while the exporter converts
    assert torch.overrides._get_current_function_mode() is None


def test_rewrites_listed_for_zoo_models():
    seg = " ".join(rewrite_export_blockers(get_spec("segnet").build(num_classes=3, width=0.0625)))
    assert "MaxUnpool2d" in seg and "MaxPool2d with indices" in seg


def test_pspnet_rewrites_are_listed_with_their_modules(tmp_path):
    result = export_model(ExportRequest(source="pspnet", out_dir=tmp_path / "d", input_shape=(1, 3, 100, 150),
                                        num_classes=3, model_kwargs={"width": 0.0625}, thresholds=STRICT))
    pools = [r for r in result.rewrites if "adaptive_avg_pool2d" in r]
    assert len(pools) == 3, result.rewrites  # bins 2, 3, 6; the 1×1 bin stays a GlobalAveragePool
    assert all(r.startswith("model.") and "→ averaging-matrix MatMuls" in r for r in pools)
    assert Manifest.load(tmp_path / "d").model.rewrites == result.rewrites  # as written to manifest.json


# -- export of user models: static and dynamic, parity at 1e-4 -------------------------------


def _export(source: str, out: Path, dynamic: set[str], shape=(1, 3, 100, 150)):
    return export_model(ExportRequest(source=source, out_dir=out, input_shape=shape, dynamic=dynamic, thresholds=STRICT))


@pytest.mark.parametrize("factory", ["PyramidPoolingNet", "UnpoolingNet"])
@pytest.mark.parametrize("dynamic", [set(), {"batch", "height", "width"}], ids=["static", "dynamic"])
def test_user_model_exports_exactly(user_models, tmp_path, factory, dynamic):
    result = _export(f"{user_models}:{factory}", tmp_path / "deploy", dynamic)
    assert result.parity["passed"] and result.parity["max_rel_error"] <= 1e-4
    assert result.parity["checks"][0]["shape"] == [1, 3, 100, 150]
    assert len(result.parity["checks"]) == (2 if dynamic else 1)
    graph = onnx.load(str(result.onnx_path))
    ops = [node.op_type for node in graph.graph.node]
    assert "MaxUnpool" not in ops
    assert all(len(n.output) == 1 for n in graph.graph.node if n.op_type == "MaxPool")  # no Indices output
    if factory == "PyramidPoolingNet":
        assert "MatMul" in ops


def _tied(shape, seed: int) -> torch.Tensor:
    """Values on a 1/4 grid after a ReLU: all-zero windows and ties between equal non-zero values."""
    return torch.relu(torch.round(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 4) / 4)


def _ort_session(model: nn.Module, dynamic: set):
    import onnxruntime as ort

    from segdeploy.export.onnx_export import torch_to_onnx

    graph = torch_to_onnx(model, torch.randn(1, 8, 64, 96), opset=11, dynamic=dynamic)
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("dynamic", [set(), DYNAMIC_HW], ids=["static", "dynamic"])
def test_pool_unpool_graph_is_bit_identical_in_onnxruntime_with_ties(dynamic):
    """No convolution rounding in the way: the rewritten pool/unpool chain must be exact in
    onnxruntime, including many tied windows (values on a 1/4 grid) and odd sizes."""

    class PoolUnpool(nn.Module):
        def forward(self, x):
            p1, i1 = F.max_pool2d(x, 2, 2, return_indices=True)
            p2, i2 = F.max_pool2d(p1, 2, 2, ceil_mode=True, return_indices=True)
            u2 = F.max_unpool2d(p2 * 1.5, i2, 2, 2, output_size=p1.shape[-2:])
            return F.max_unpool2d(u2, i1, 2, 2, output_size=x.shape[-2:])

    model = PoolUnpool().eval()
    session = _ort_session(model, dynamic)
    for shape in [(1, 8, 64, 96)] + ([(1, 8, 71, 103)] if dynamic else []):
        x = _tied(shape, 4)
        assert torch.equal(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), model(x))


@pytest.mark.parametrize("dynamic", [set(), DYNAMIC_HW], ids=["static", "dynamic"])
@pytest.mark.parametrize("kernel, ceil_mode", [((2, 2), False), ((2, 3), True)])
def test_pool_indices_graph_equal_pytorch_indices_in_onnxruntime(dynamic, kernel, ceil_mode):
    """The indices themselves, not only what unpooling makes of them: an all-zero window's
    index is invisible after unpooling, so compare PyTorch's first-maximum indices directly
    (plain random values, tied 1/4-grid values, all-zero windows, negative values)."""

    class Indices(nn.Module):
        def forward(self, x):
            pooled, indices = F.max_pool2d(x, kernel, kernel, ceil_mode=ceil_mode, return_indices=True)
            return torch.cat([indices.to(torch.float32), pooled], 1)  # indices < 2**24 stay exact in float32

    model = Indices().eval()
    session = _ort_session(model, dynamic)
    for shape in [(1, 8, 64, 96)] + ([(1, 8, 71, 103)] if dynamic else []):
        for x in (torch.randn(*shape, generator=torch.Generator().manual_seed(5)), _tied(shape, 6), -_tied(shape, 7)):
            assert torch.equal(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), model(x))


def test_blockers_fail_without_the_rewrites():
    """The rewrites are needed: torch's own exporter refuses non-divisible adaptive pooling."""

    class Pool(nn.Module):
        def forward(self, x):
            return F.adaptive_avg_pool2d(x, (3, 6))

    with pytest.raises(Exception, match="adaptive_avg_pool2d"):
        torch.onnx.export(Pool(), (torch.randn(1, 3, 100, 150),), io.BytesIO(), opset_version=11, dynamo=False)


def test_unrewritable_dynamic_operator_fails_naming_it(user_models, tmp_path):
    with pytest.raises(ExportError, match="adaptive_max_pool2d") as info:
        _export(f"{user_models}:AdaptiveMaxNet", tmp_path / "deploy", DYNAMIC_HW)
    assert "static --input-shape" in str(info.value)
    assert not (tmp_path / "deploy" / "model.onnx").exists()


def test_cli_exports_user_unpooling_model_dynamic(user_models, tmp_path):
    out = tmp_path / "deploy"
    proc = subprocess.run(
        [sys.executable, "-m", "segdeploy", "export", f"{user_models}:UnpoolingNet", "-o", str(out),
         "--input-shape", "1x3x100x150", "--dynamic", "height,width", "--max-rel-error", "1e-4"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MaxUnpool2d" in proc.stdout and (out / "model.onnx").is_file()


# -- TensorRT(-RTX) parses and builds the rewritten graphs -----------------------------------


def _trt_build(onnx_path: Path, shape, dynamic: bool) -> None:
    trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx is not installed")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(onnx_path.read_bytes())
    assert ok, "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    n, c, h, w = shape
    low, high = ((n, c, h // 2, w // 2), (n, c, 2 * h, 2 * w)) if dynamic else (shape, shape)
    profile.set_shape(network.get_input(0).name, low, shape, high)
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None


TRT_CASES = [
    ("UnpoolingNet", set()),
    ("UnpoolingNet", DYNAMIC_HW),
    ("PyramidPoolingNet", set()),
    ("PyramidPoolingNet", DYNAMIC_HW),
    ("pspnet", DYNAMIC_HW),
    ("segnet", DYNAMIC_HW),
]


@pytest.mark.trt
@pytest.mark.parametrize("source, dynamic", TRT_CASES, ids=[f"{s}-{'dynamic' if d else 'static'}" for s, d in TRT_CASES])
def test_tensorrt_rtx_builds_rewritten_graph(user_models, tmp_path, source, dynamic):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx is not installed")
    shape = (1, 3, 100, 150)
    if source in ("pspnet", "segnet"):
        request = ExportRequest(source=source, out_dir=tmp_path / "d", input_shape=shape, dynamic=dynamic,
                                num_classes=4, model_kwargs={"width": 0.0625}, thresholds=STRICT)  # fmt: skip
        result = export_model(request)
    else:
        result = _export(f"{user_models}:{source}", tmp_path / "d", dynamic, shape)
    _trt_build(result.onnx_path, shape, bool(dynamic))
