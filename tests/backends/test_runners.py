"""Runners: onnxruntime (runs here) and TensorRT (compatibility rules here; inference needs a GPU)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segdeploy.backends.onnxruntime import OrtRunner, available_providers, resolve_providers
from segdeploy.backends.tensorrt.device import gpu_info
from segdeploy.backends.tensorrt.flavour import Flavour
from segdeploy.backends.tensorrt.runner import TrtRunner, check_compatible, invalidity_reasons
from segdeploy.manifest.records import Artifact
from segdeploy.errors import SegdeployError

from tests.helpers import requires_tensorrt


@pytest.fixture
def affine(tmp_path):
    """y = 2x + 1 as an ONNX graph with a dynamic batch."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])]
    inits = [numpy_helper.from_array(np.array(2, np.float32), "two"), numpy_helper.from_array(np.array(1, np.float32), "one")]
    graph = helper.make_graph(nodes, "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    path = tmp_path / "affine.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_ort_runner_named_io_and_dynamic_batch(affine):
    with OrtRunner(affine, threads=1) as runner:
        for n in (1, 3):
            x = np.arange(4 * n, dtype=np.float32).reshape(n, 4)
            out = runner.infer({"x": x})
            assert list(out) == ["y"]
            np.testing.assert_allclose(out["y"], 2 * x + 1)
    assert not runner.is_active


def test_ort_runner_refuses_wrong_names_and_inactive_use(affine):
    runner = OrtRunner(affine)
    with pytest.raises(SegdeployError, match="not active"):
        runner.infer({"x": np.zeros((1, 4), np.float32)})
    with runner, pytest.raises(SegdeployError, match="do not match"):
        runner.infer({"image": np.zeros((1, 4), np.float32)})


def test_providers():
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers(["CPU"]) == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in available_providers()
    with pytest.raises(SegdeployError, match="available"):
        resolve_providers(["NoSuchThingExecutionProvider"])


class _FakeModule:
    __version__ = "1.7.1.116"


RTX = Flavour(module=_FakeModule(), name="tensorrt_rtx", version="1.7.1.116")
TRT10 = Flavour(module=_FakeModule(), name="tensorrt", version="10.3.0")
ORIN = {"name": "Orin", "compute_capability": "8.7"}
RTX4090 = {"name": "RTX 4090", "compute_capability": "8.9"}


def _record(flavour="tensorrt_rtx", version="1.7.1.116", **extra):
    """An engine's manifest entry, as the compatibility check reads it."""
    return Artifact.from_dict({"file": "model.fp32.engine", "sha256": "0" * 64, "bytes": 1, "created": "2025-01-01",
                               "kind": "engine", "precision": "fp32", "backend": "tensorrt",
                               "tensorrt": {"flavour": flavour, "version": version}, **extra})


def test_compat_other_flavour_is_refused_with_both_named():
    with pytest.raises(SegdeployError, match=r"built with TensorRT-RTX 1\.7\.1\.116, this machine has TensorRT 10\.3\.0") as err:
        check_compatible(_record(), TRT10, ORIN, "rebuild on the Jetson")
    assert "rebuild on the Jetson" in str(err.value)


def test_compat_other_version_refused_unless_version_compatible():
    record = _record("tensorrt", "10.1.0", built_on_gpu=ORIN, builder_flags=[])
    with pytest.raises(SegdeployError, match="10.1.0"):
        check_compatible(record, TRT10, ORIN, "rebuild")
    record.builder_flags = ["VERSION_COMPATIBLE"]
    check_compatible(record, TRT10, ORIN, "rebuild")  # newer 10.x loads a version-compatible 10.1 engine


def test_compat_other_gpu_refused():
    record = _record("tensorrt", "10.3.0", built_on_gpu=ORIN)
    with pytest.raises(SegdeployError, match=r"targets compute capability 8\.7; this GPU \(RTX 4090\) is 8\.9"):
        check_compatible(record, TRT10, RTX4090, "rebuild")
    record.hardware_compatibility_level = "ampere_plus"
    check_compatible(record, TRT10, RTX4090, "rebuild")


def test_compat_rtx_targets():
    check_compatible(_record(compute_capabilities=["portable (TensorRT-RTX default: SM80 and later)"]), RTX, RTX4090, "r")
    with pytest.raises(SegdeployError, match="86"):
        check_compatible(_record(compute_capabilities=["86"]), RTX, RTX4090, "r")
    with pytest.raises(SegdeployError, match="7.5"):
        check_compatible(_record(compute_capabilities=[]), RTX, {"name": "RTX 2080", "compute_capability": "7.5"}, "r")


def test_compat_without_gpu():
    with pytest.raises(SegdeployError, match="needs an NVIDIA GPU"):
        check_compatible(_record(), RTX, None, "r")


@requires_tensorrt
def test_rtx_invalidity_reasons_decoded():
    trt = pytest.importorskip("tensorrt_rtx")
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    validity, diagnostics = runtime.get_engine_validity(b"not an engine" * 64)
    assert validity == trt.EngineValidity.INVALID
    assert "malformed engine" in invalidity_reasons(trt, diagnostics)


@pytest.mark.gpu
@pytest.mark.skipif(gpu_info() is None, reason="TensorRT inference needs a CUDA GPU (none here); TrtRunner is unverified on this machine")
def test_trt_runner_matches_onnxruntime(deploy, calib_dir):
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.manifest import Manifest

    directory = deploy("dynamic")
    build_artifacts(directory, ["fp32"], "tensorrt", BuildOptions(min_shapes={"input": (1, 3, 64, 96)},
                                                                  max_shapes={"input": (2, 3, 128, 192)}))
    manifest = Manifest.load(directory)
    x = np.random.default_rng(0).standard_normal((2, 3, 128, 160)).astype(np.float32)
    with OrtRunner(directory / "model.onnx") as ort_runner, TrtRunner(manifest.verify("trt-fp32"), manifest.artifact("trt-fp32")) as trt_runner:
        expected = ort_runner.infer({"input": x})["logits"]
        got = trt_runner.infer({"input": x})["logits"]
    assert np.mean(expected.argmax(1) == got.argmax(1)) > 0.999


def test_torch_runner_matches_the_module():
    import torch

    from segdeploy.backends.torch import TorchRunner

    conv = torch.nn.Conv2d(3, 2, 1)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 10)).astype(np.float32)
    with TorchRunner(conv) as runner:
        out = runner.infer({"input": x})["logits"]
    weight, bias = conv.weight.detach().numpy()[:, :, 0, 0], conv.bias.detach().numpy()
    np.testing.assert_allclose(out, np.einsum("oc,nchw->nohw", weight, x) + bias[None, :, None, None], rtol=1e-5, atol=1e-5)
