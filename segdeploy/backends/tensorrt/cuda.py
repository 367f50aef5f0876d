"""Device memory, page-locked host memory and a stream, through pycuda or cuda-python.

Only what the TensorRT runner needs. pycuda is preferred when both are installed; it
works on the device's primary context, which is the one TensorRT's runtime uses.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from segdeploy.errors import SegdeployError

INSTALL_HINT = "pip install pycuda (or cuda-python); on Jetson: pip install pycuda after installing JetPack"


def load_cuda():
    """A `PyCuda` or `CudaPython` object; a clear error if neither package is installed."""
    try:
        import pycuda.driver  # noqa: F401  # pyright: ignore[reportMissingImports]  (optional, not installed by dev)
    except ImportError:
        pass
    else:
        return PyCuda()
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6  # pyright: ignore[reportAttributeAccessIssue]
        except ImportError:
            from cuda import cudart  # older cuda-python  # pyright: ignore[reportAttributeAccessIssue]
    except ImportError:
        raise SegdeployError("running a TensorRT engine needs pycuda or cuda-python, and neither is installed", INSTALL_HINT) from None
    return CudaPython(cudart)


class PyCuda:
    name = "pycuda"

    def __init__(self):
        import pycuda.driver as driver  # pyright: ignore[reportMissingImports]

        driver.init()
        self.driver = driver
        self.context = driver.Device(0).retain_primary_context()
        self.context.push()
        self.stream = driver.Stream()

    @property
    def stream_handle(self) -> int:
        return self.stream.handle

    def device_alloc(self, nbytes: int):
        return self.driver.mem_alloc(max(nbytes, 1))

    @staticmethod
    def device_ptr(allocation) -> int:
        return int(allocation)

    def host_empty(self, nbytes: int) -> np.ndarray:
        return self.driver.pagelocked_empty(max(nbytes, 1), dtype=np.uint8)

    def to_device(self, device, host: np.ndarray, nbytes: int) -> None:
        self.driver.memcpy_htod_async(device, host[:nbytes], self.stream)

    def to_host(self, host: np.ndarray, device, nbytes: int) -> None:
        self.driver.memcpy_dtoh_async(host[:nbytes], device, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def new_event(self):
        return self.driver.Event()

    def record(self, event) -> None:
        event.record(self.stream)

    @staticmethod
    def elapsed_ms(start, end) -> float:
        """Device time between two recorded events (the stream must have been synchronized)."""
        return float(end.time_since(start))

    @staticmethod
    def destroy_event(event) -> None:
        del event  # pycuda releases an event when it is collected

    def free(self, device, host) -> None:
        device.free()
        del host  # page-locked host memory is released when its array is collected

    def close(self) -> None:
        self.context.pop()


class CudaPython:
    name = "cuda-python"

    def __init__(self, cudart):
        self.cudart = cudart
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise SegdeployError(f"CUDA call failed: {self.cudart.cudaGetErrorString(err)[1]}")
        return values[0] if len(values) == 1 else values

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def device_alloc(self, nbytes: int) -> int:
        return self._check(self.cudart.cudaMalloc(max(nbytes, 1)))

    @staticmethod
    def device_ptr(allocation) -> int:
        return int(allocation)

    def host_empty(self, nbytes: int) -> np.ndarray:
        pointer = self._check(self.cudart.cudaMallocHost(max(nbytes, 1)))
        return np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(int(pointer)))

    def to_device(self, device, host: np.ndarray, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(int(device), host.ctypes.data, nbytes, kind, self.stream))

    def to_host(self, host: np.ndarray, device, nbytes: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, int(device), nbytes, kind, self.stream))

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def new_event(self):
        return self._check(self.cudart.cudaEventCreate())

    def record(self, event) -> None:
        self._check(self.cudart.cudaEventRecord(event, self.stream))

    def elapsed_ms(self, start, end) -> float:
        """Device time between two recorded events (the stream must have been synchronized)."""
        return float(self._check(self.cudart.cudaEventElapsedTime(start, end)))

    def destroy_event(self, event) -> None:
        self._check(self.cudart.cudaEventDestroy(event))

    def free(self, device, host: np.ndarray) -> None:
        self._check(self.cudart.cudaFree(int(device)))
        self._check(self.cudart.cudaFreeHost(host.ctypes.data))

    def close(self) -> None:
        self._check(self.cudart.cudaStreamDestroy(self.stream))
