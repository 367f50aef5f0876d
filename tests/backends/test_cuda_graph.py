"""CUDA-graph replay in TrtRunner: when it captures, recaptures and frees (GPU-free test doubles),
and, on a GPU, that graph replay gives the same outputs as plain enqueues."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from segdeploy.backends.tensorrt import cuda_graph
from segdeploy.backends.tensorrt.device import gpu_info
from segdeploy.backends.tensorrt.flavour import Flavour
from segdeploy.backends.tensorrt.runner import TrtRunner
from segdeploy.errors import SegdeployError


class _Log:
    def __init__(self):
        self.calls: list[str] = []


class _Cuda:
    """Host memory standing in for device memory; every call logged."""

    stream_handle = 7

    def __init__(self, log):
        self.log = log

    def device_alloc(self, nbytes):
        return bytearray(nbytes)

    @staticmethod
    def device_ptr(allocation):
        return id(allocation)

    def host_empty(self, nbytes):
        return np.zeros(nbytes, np.uint8)

    def to_device(self, device, host, nbytes):
        device[:nbytes] = host[:nbytes].tobytes()

    def to_host(self, host, device, nbytes):
        host[:nbytes] = np.frombuffer(bytes(device[:nbytes]), np.uint8)

    def synchronize(self):
        self.log.calls.append("sync")

    def record(self, event):
        pass

    def elapsed_ms(self, start, end):
        return 0.0

    def free(self, device, host):
        pass


class _Engine:
    def get_tensor_shape(self, name):
        return (-1, 4)

    def get_tensor_profile_shape(self, name, index):
        return (1, 4), (1, 4), (8, 4)

    def get_tensor_dtype(self, name):
        return "float32"


class _Context:
    """y = x + 1, computed when 'enqueued' (the fake stream runs work at once)."""

    def __init__(self, runner, log):
        self.runner, self.log, self.shape = runner, log, None

    def set_input_shape(self, name, shape):
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shape

    def set_tensor_address(self, name, pointer):
        pass

    def execute_async_v3(self, stream):
        self.log.calls.append("enqueue")
        x_dev, y_dev = self.runner.buffers["x"][0], self.runner.buffers["y"][0]
        n = int(np.prod(self.shape)) * 4
        y = np.frombuffer(bytes(x_dev[:n]), np.float32) + 1
        y_dev[:n] = y.tobytes()
        return True


class _Graph:
    """Stands in for a captured graph: replaying it re-runs the captured enqueue."""

    def __init__(self, key, enqueue, log):
        self.key, self.enqueue, self.log = key, enqueue, log

    def launch(self, stream):
        self.log.calls.append("launch")
        self.enqueue()

    def close(self):
        self.log.calls.append("close")


class _Trt:
    @staticmethod
    def nptype(dtype):
        return np.float32


def _runner(monkeypatch, log) -> TrtRunner:
    def capture(key, stream, enqueue):
        log.calls.append("capture")
        return _Graph(key, enqueue, log)

    monkeypatch.setattr(cuda_graph.CudaGraph, "capture", staticmethod(capture))
    runner = TrtRunner("fake.engine", cuda_graph=True)
    runner.flavour, runner.cuda, runner.engine = Flavour(module=_Trt(), name="tensorrt", version="10.3.0"), _Cuda(log), _Engine()
    runner.context, runner.logger = _Context(runner, log), type("L", (), {"errors": []})()
    runner.inputs, runner.outputs, runner.events = ["x"], ["y"], [object()] * 4
    runner.is_active = True
    return runner


def test_graph_captured_once_per_shape_and_replayed(monkeypatch):
    """What must hold, not the exact order of calls: per input shape one capture, after one plain
    enqueue; every later call replays it on that call's own data; a new shape frees the old graph
    before capturing again."""
    log = _Log()
    runner = _runner(monkeypatch, log)
    rng = np.random.default_rng(0)
    for _ in range(3):  # new values each call: a replay that skipped this call's copies would return stale output
        x = rng.standard_normal((2, 4)).astype(np.float32)
        np.testing.assert_array_equal(runner.infer({"x": x})["y"], x + 1)
    assert Counter(log.calls)["capture"] == 1 and Counter(log.calls)["launch"] == 3
    assert log.calls.index("enqueue") < log.calls.index("capture")  # the new shape settled before capture
    log.calls.clear()
    for _ in range(2):
        x5 = rng.standard_normal((5, 4)).astype(np.float32)
        np.testing.assert_array_equal(runner.infer({"x": x5})["y"], x5 + 1)
    counts = Counter(log.calls)
    assert (counts["close"], counts["capture"], counts["launch"]) == (1, 1, 2)
    assert log.calls.index("close") < log.calls.index("capture")
    log.calls.clear()
    runner._drop_graph()
    assert log.calls == ["close"] and runner._graph is None


def test_without_cuda_graph_nothing_is_captured(monkeypatch):
    log = _Log()
    runner = _runner(monkeypatch, log)
    runner.cuda_graph = False
    x = np.zeros((1, 4), np.float32)
    np.testing.assert_array_equal(runner.infer({"x": x})["y"], x + 1)
    runner.infer({"x": x})
    assert Counter(log.calls)["enqueue"] == 2 and not {"capture", "launch"} & set(log.calls)


def test_missing_driver_is_one_clear_error(monkeypatch):
    import ctypes

    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    monkeypatch.setattr(cuda_graph.CudaGraph, "_lib", None)
    with pytest.raises(SegdeployError, match=r"needs the CUDA driver \(libcuda\.so\.1\)") as err:
        cuda_graph.CudaGraph.capture((), 0, lambda: True)
    assert "without --cuda-graph" in str(err.value)


@pytest.mark.gpu
@pytest.mark.skipif(gpu_info() is None, reason="CUDA-graph replay needs a CUDA GPU (none here); unverified on this machine")
def test_cuda_graph_replay_matches_plain_enqueue(deploy):
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.manifest import Manifest

    directory = deploy("dynamic")
    build_artifacts(directory, ["fp32"], "tensorrt", BuildOptions(min_shapes={"input": (1, 3, 64, 96)},
                                                                  max_shapes={"input": (2, 3, 128, 192)}))
    manifest = Manifest.load(directory)
    path, record = manifest.verify("trt-fp32"), manifest.artifact("trt-fp32")
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype(np.float32) for shape in [(1, 3, 96, 128), (2, 3, 128, 160), (1, 3, 96, 128)]]
    with TrtRunner(path, record) as plain, TrtRunner(path, record, cuda_graph=True) as graphed:
        for x in inputs:
            for _ in range(2):  # first call captures, second replays
                np.testing.assert_allclose(graphed.infer({"input": x})["logits"], plain.infer({"input": x})["logits"],
                                           rtol=1e-5, atol=1e-5)
