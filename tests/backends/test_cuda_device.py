"""segdeploy's CUDA plumbing on a real GPU, without TensorRT: buffers, copies, events and CUDA-graph
capture/replay through the driver API. TrtRunner uses exactly these pieces around an engine's
enqueue; here the enqueue is a stand-in, a device-to-device copy, whose result can be checked."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.backends.tensorrt.device import gpu_info

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(gpu_info() is None, reason="needs a CUDA GPU (none here); unverified on this machine")]


@pytest.fixture
def cuda():
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed")
    from segdeploy.backends.tensorrt.cuda import load_cuda

    lib = load_cuda()
    yield lib
    lib.close()


def _d2d(cuda, dst: int, src: int, nbytes: int) -> bool:
    """The stand-in enqueue: one device-to-device copy on the runner's stream."""
    kind = cuda.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    cuda._check(cuda.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, cuda.stream))
    return True


def test_buffers_round_trip_through_the_device(cuda):
    rng = np.random.default_rng(0)
    data = rng.standard_normal(4096).astype(np.float32)
    nbytes = data.nbytes
    device, host = cuda.device_alloc(nbytes), cuda.host_empty(nbytes)
    host[:nbytes] = data.view(np.uint8)
    cuda.to_device(device, host, nbytes)
    host[:nbytes] = 0
    cuda.to_host(host, device, nbytes)
    cuda.synchronize()
    np.testing.assert_array_equal(host[:nbytes].view(np.float32), data)
    cuda.free(device, host)


def test_events_time_device_work(cuda):
    nbytes = 256 << 20
    a, b = cuda.device_alloc(nbytes), cuda.device_alloc(nbytes)
    start, end = cuda.new_event(), cuda.new_event()
    cuda.record(start)
    for _ in range(8):
        _d2d(cuda, b, a, nbytes)
    cuda.record(end)
    cuda.synchronize()
    ms = cuda.elapsed_ms(start, end)
    assert 0 < ms < 10_000  # 2 GiB of copies: measurably more than nothing, far less than seconds
    for event in (start, end):
        cuda.destroy_event(event)
    for pointer in (a, b):
        cuda._check(cuda.cudart.cudaFree(pointer))


def test_graph_replay_reads_the_inputs_of_each_call(cuda):
    """Capture once, then replay with new input values: the output follows the input (a replay that
    re-ran stale work, or a capture that executed instead of recording, would fail)."""
    from segdeploy.backends.tensorrt.cuda_graph import CudaGraph

    n = 1 << 16
    nbytes = n * 4
    src, dst = cuda.device_alloc(nbytes), cuda.device_alloc(nbytes)
    host_in, host_out = cuda.host_empty(nbytes), cuda.host_empty(nbytes)
    host_out[:nbytes] = 0
    cuda.to_device(dst, host_out, nbytes)
    cuda.synchronize()
    graph = CudaGraph.capture("shape", cuda.stream_handle, lambda: _d2d(cuda, dst, src, nbytes))
    cuda.to_host(host_out, dst, nbytes)
    cuda.synchronize()
    assert not host_out[:nbytes].any()  # capturing records the copy; it does not run it
    for value in (1.5, -2.0, 7.25):
        host_in[:nbytes] = np.full(n, value, np.float32).view(np.uint8)
        cuda.to_device(src, host_in, nbytes)
        graph.launch(cuda.stream_handle)
        cuda.to_host(host_out, dst, nbytes)
        cuda.synchronize()
        np.testing.assert_array_equal(host_out[:nbytes].view(np.float32), np.full(n, value, np.float32))
    graph.close()
    cuda.free(src, host_in)
    cuda.free(dst, host_out)


def test_a_failed_enqueue_ends_the_capture_and_leaves_the_stream_usable(cuda):
    from segdeploy.backends.tensorrt.cuda_graph import CudaGraph
    from segdeploy.errors import SegdeployError

    with pytest.raises(SegdeployError, match="could not enqueue"):
        CudaGraph.capture("shape", cuda.stream_handle, lambda: False)
    nbytes = 1024
    device, host = cuda.device_alloc(nbytes), cuda.host_empty(nbytes)
    host[:nbytes] = 3
    cuda.to_device(device, host, nbytes)  # the stream is out of capture mode: plain work runs
    host[:nbytes] = 0
    cuda.to_host(host, device, nbytes)
    cuda.synchronize()
    assert (host[:nbytes] == 3).all()
    cuda.free(device, host)
