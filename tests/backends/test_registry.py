"""The backend registry: Segmenter's preference per machine, and what each backend builds."""

from __future__ import annotations

from segdeploy.backends.registry import BACKENDS, preference
from segdeploy.manifest.names import FP32_GRAPH, INT8_GRAPHS, openvino_ir, tensorrt_engine


def _ranks(order: list[str], backend: str) -> list[int]:
    return [order.index(name) for name in BACKENDS[backend].preference]


def test_openvino_comes_after_tensorrt_and_before_onnxruntime_on_x86():
    for machine in ("x86_64", "AMD64"):
        order = preference(machine)
        assert max(_ranks(order, "tensorrt")) < min(_ranks(order, "openvino"))
        assert max(_ranks(order, "openvino")) < min(_ranks(order, "onnxruntime"))
        assert order.index(openvino_ir("int8").name) < order.index(openvino_ir("bf16").name) < order.index(
            openvino_ir("fp32").name)


def test_openvino_comes_last_off_x86():
    order = preference("aarch64")
    assert order[:3] == [tensorrt_engine(p).name for p in ("int8", "fp16", "fp32")]
    assert max(_ranks(order, "onnxruntime")) < min(_ranks(order, "openvino"))
    assert order.index(INT8_GRAPHS["onnxruntime"].name) < order.index(FP32_GRAPH.name)
    assert sorted(order) == sorted(preference("x86_64"))  # the same artifacts, only ordered differently
