"""Helpers for checking exported graphs in onnxruntime against the PyTorch module itself."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

DYNAMIC_HW = {"height", "width"}


def export_graph(model: nn.Module, shape, dynamic: set, opset: int = 11, rewritten: list | None = None) -> onnx.ModelProto:
    """segdeploy's own export step (rewrites active), on one N×C×H×W input named `input`;
    `rewritten` receives the operator-level rewrites made."""
    from segdeploy.export.onnx_export import torch_to_onnx

    dynamic = set(dynamic) | ({"batch"} if dynamic else set())
    sample = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return torch_to_onnx(model, sample, opset=opset, dynamic=dynamic, rewritten=rewritten)


def ops_of(graph: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in graph.graph.node}


def run_graph(graph: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def assert_matches(graph: onnx.ModelProto, model: nn.Module, shapes, *, exact: bool, extra=(), seed: int = 1) -> None:
    """The graph equals PyTorch (bit for bit when `exact`, else to float32 rounding) on random
    inputs of every shape in `shapes`, and on the `extra` inputs as given."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(*shape, generator=generator) for shape in shapes] + list(extra)
    for x in inputs:
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(run_graph(graph, x))
        assert got.shape == expected.shape, f"shape {tuple(got.shape)} != {tuple(expected.shape)} at {tuple(x.shape)}"
        if exact:
            assert torch.equal(got, expected), f"max diff {(got - expected).abs().max():.3g} at {tuple(x.shape)}"
        else:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()) + 1e-7)
