"""The opset-11 rewrite of ``scaled_dot_product_attention``, checked in onnxruntime against
PyTorch's own kernel: masks (boolean, float, broadcast, fully masked rows), ``is_causal``
(square and not), explicit ``scale``, ``enable_gqa``, rank 3, a value width other than the
query's; the calls made inside ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``;
and the refusal of dropout in eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segdeploy.errors import ExportError
from segdeploy.export import ExportRequest, export_model
from tests.export.ort_paths import DYNAMIC_HW, assert_matches, export_graph, ops_of

SHAPE = (1, 16, 6, 10)  # tokens: L = 60 at the export size
OTHER_SHAPES = [(2, 16, 5, 7), (1, 16, 9, 4)]


class Attention(nn.Module):
    """Self-attention over an image's pixels, with q/k/v projected by fixed random weights."""

    def __init__(self, case: str, heads: int = 2, kv_heads: int = 2, value_width: int = 8):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.case, self.heads, self.kv_heads = case, heads, kv_heads
        self.register_buffer("wq", torch.randn(16, heads * 8, generator=g) / 4)
        self.register_buffer("wk", torch.randn(16, kv_heads * 8, generator=g) / 4)
        self.register_buffer("wv", torch.randn(16, kv_heads * value_width, generator=g) / 4)

    def _split(self, t, heads):
        n, length, _ = t.shape
        return t.reshape(n, length, heads, -1).transpose(1, 2)

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)  # N, L, 16
        q, k, v = (self._split(tokens @ w, h) for w, h in
                   ((self.wq, self.heads), (self.wk, self.kv_heads), (self.wv, self.kv_heads)))
        first, second = tokens[..., 0], tokens[..., 1]
        out = {
            "plain": lambda: F.scaled_dot_product_attention(q, k, v),
            "scale": lambda: F.scaled_dot_product_attention(q, k, v, scale=0.3),
            "causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
            "causal-rectangular": lambda: F.scaled_dot_product_attention(q, k[:, :, ::2], v[:, :, ::2], is_causal=True),
            "key-padding": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=(second > -0.3)[:, None, None, :]),
            "bool-rows-masked": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=((first > 0)[:, :, None] & (second > -1)[:, None, :])[:, None]),
            "float": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=(first[:, :, None] * second[:, None, :])[:, None] * 0.5),
            "float-rows-masked": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=torch.where(first[:, None, :, None] > 0.5, float("-inf"), 0.0)
                .expand(-1, 1, -1, k.shape[-2])),
            "gqa": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
            "rank-3": lambda: F.scaled_dot_product_attention(q[:, 0], k[:, 0], v[:, 0]).unsqueeze(1),
        }[self.case]()
        return out.transpose(1, 2).flatten(2).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:])


CASES = {"plain": {}, "scale": {}, "causal": {}, "causal-rectangular": {}, "key-padding": {},
         "bool-rows-masked": {}, "float": {}, "float-rows-masked": {}, "gqa": {"heads": 4, "kv_heads": 2},
         "rank-3": {"heads": 1, "kv_heads": 1}, "value-width": {"value_width": 5}}


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("case", list(CASES))
def test_attention_matches_pytorch(case, opset):
    model = Attention("plain" if case == "value-width" else case, **CASES[case]).eval()
    graph = export_graph(model, SHAPE, DYNAMIC_HW, opset=opset)
    ops = ops_of(graph)
    assert "Softmax" in ops and "MatMul" in ops
    shapes = [SHAPE] + OTHER_SHAPES
    if case == "bool-rows-masked":  # inputs with whole rows masked, checked to be there
        assert any(bool((torch.randn(*s, generator=torch.Generator().manual_seed(1))[:, 0] <= 0).any()) for s in shapes)
    assert_matches(graph, model, shapes, exact=False)


def test_fully_masked_rows_are_zero_as_in_pytorch():
    """A row whose keys are all masked: PyTorch 2.14 returns zeros (softmax would give NaN)."""
    model = Attention("float-rows-masked").eval()
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(4))
    x[0, 0, 0, :5] = 2.0  # these queries see no key
    with torch.no_grad():
        expected = model(x)
    assert torch.isfinite(expected).all() and bool((expected[0, :, 0, :5] == 0).all())
    assert_matches(export_graph(model, SHAPE, set()), model, [], exact=False, extra=[x])


class Transformer(nn.Module):
    """nn.MultiheadAttention / nn.TransformerEncoderLayer over an image's pixels: both reach
    scaled_dot_product_attention inside F.multi_head_attention_forward."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)
        if self.kind == "mha":
            out = self.mha(tokens, tokens, tokens, need_weights=False)[0]
        else:
            out = self.layer(tokens)  # eval + no_grad: PyTorch's fused fast path, unless a mode is active
        return out.transpose(1, 2).reshape(x.shape)


@pytest.mark.parametrize("kind", ["mha", "encoder-layer"])
def test_attention_inside_torch_modules(kind):
    model = Transformer(kind).eval()
    graph = export_graph(model, SHAPE, DYNAMIC_HW)
    assert "Softmax" in ops_of(graph)
    assert_matches(graph, model, [SHAPE] + OTHER_SHAPES, exact=False)


@pytest.mark.parametrize("dynamic", [set(), DYNAMIC_HW], ids=["static", "dynamic"])
def test_export_lists_attention_rewrites_with_modules(tmp_path, dynamic):
    model_file = tmp_path / "net.py"
    model_file.write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=3):\n"
        "        super().__init__()\n"
        "        self.stem = nn.Conv2d(3, 16, 4, stride=4)\n"
        "        self.block = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)\n"
        "        self.head = nn.Conv2d(16, num_classes, 1)\n"
        "    def forward(self, x):\n"
        "        f = self.stem(x)\n"
        "        t = self.block(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(f.shape)\n"
        "        return self.head(t)\n"
    )
    result = export_model(ExportRequest(source=f"{model_file}:Net", out_dir=tmp_path / "d", input_shape=(1, 3, 64, 96),
                                        dynamic=dynamic))
    assert result.parity["passed"] and len(result.parity["checks"]) == (2 if dynamic else 1)
    assert any(r.startswith("model.block.self_attn (MultiheadAttention): scaled_dot_product_attention")
               for r in result.rewrites), result.rewrites


def test_dropout_in_eval_is_refused_naming_the_module(tmp_path):
    model_file = tmp_path / "drop.py"
    model_file.write_text(
        "import torch.nn.functional as F\nfrom torch import nn\n"
        "class Mixer(nn.Module):\n"
        "    def forward(self, t):\n"
        "        return F.scaled_dot_product_attention(t, t, t, dropout_p=0.1)\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=3):\n"
        "        super().__init__()\n"
        "        self.conv, self.mixer = nn.Conv2d(3, num_classes, 1), Mixer()\n"
        "    def forward(self, x):\n"
        "        f = self.conv(x)\n"
        "        return self.mixer(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(f.shape)\n"
    )
    out = tmp_path / "d"
    with pytest.raises(ExportError) as info:
        export_model(ExportRequest(source=f"{model_file}:Net", out_dir=out, input_shape=(1, 3, 8, 12)))
    message = str(info.value)
    assert "model.mixer (Mixer)" in message and "dropout_p=0.1" in message and "self.training" in message
    assert not out.exists()


def test_opset_14_keeps_the_exporters_own_conversion():
    """The rewrite is for opsets below 14 only; from 14 on the exporter converts attention
    itself (and the graph still matches PyTorch)."""
    model = Attention("causal").eval()
    below, at_14 = [], []
    export_graph(model, SHAPE, set(), opset=13, rewritten=below)
    graph = export_graph(model, SHAPE, set(), opset=14, rewritten=at_14)
    assert any("scaled_dot_product_attention" in r for r in below) and at_14 == []
    assert_matches(graph, model, [SHAPE], exact=False)
