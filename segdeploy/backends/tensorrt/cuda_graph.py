"""CUDA graph capture of one TensorRT enqueue, through the CUDA driver API (libcuda).

Works under both buffer libraries: pycuda has no graph API and cuda-python's changed its
signatures between releases, but the driver entry points used here have been stable since
CUDA 11.4 and exist wherever a GPU does. A runtime stream (cuda-python) and a driver stream
(pycuda) are the same handle, so either library's stream can be captured.

What is captured is what trtexec's `--useCudaGraph` captures: the engine's enqueue only.
Copies stay outside, so CUDA events still time H2D, compute and D2H apart.
"""

from __future__ import annotations

import ctypes
from typing import Callable

from segdeploy.errors import SegdeployError

# cudaStreamCaptureModeThreadLocal: other threads may keep using CUDA while this one captures.
CAPTURE_MODE_THREAD_LOCAL = 1
NO_GRAPH_HINT = "bench without --cuda-graph"


def _driver():
    """libcuda with the few prototypes needed; loaded on first use."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise SegdeployError("--cuda-graph needs the CUDA driver (libcuda.so.1), which is not installed here",
                             NO_GRAPH_HINT) from None
    p, u, i = ctypes.c_void_p, ctypes.c_ulonglong, ctypes.c_int
    prototypes = {
        "cuStreamBeginCapture_v2": [p, i],
        "cuStreamEndCapture": [p, ctypes.POINTER(p)],
        "cuGraphInstantiateWithFlags": [ctypes.POINTER(p), p, u],
        "cuGraphLaunch": [p, p],
        "cuGraphExecDestroy": [p],
        "cuGraphDestroy": [p],
        "cuGetErrorString": [i, ctypes.POINTER(ctypes.c_char_p)],
    }
    for name, args in prototypes.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise SegdeployError(f"this CUDA driver has no {name} (CUDA ≥ 11.4 needed for --cuda-graph)",
                                 NO_GRAPH_HINT) from None
        function.argtypes, function.restype = args, i
    return lib


class CudaGraph:
    """One captured and instantiated enqueue; relaunch it with `launch()`, free it with `close()`."""

    _lib = None

    def __init__(self, key, graph: ctypes.c_void_p, executable: ctypes.c_void_p):
        self.key, self._graph, self._exec = key, graph, executable

    @classmethod
    def lib(cls):
        if cls._lib is None:
            cls._lib = _driver()
        return cls._lib

    @classmethod
    def _check(cls, result: int, what: str) -> None:
        if result != 0:
            message = ctypes.c_char_p()
            cls.lib().cuGetErrorString(result, ctypes.byref(message))
            text = message.value.decode() if message.value else f"CUresult {result}"
            raise SegdeployError(f"cannot {what} a CUDA graph of this engine: {text}", NO_GRAPH_HINT)

    @classmethod
    def capture(cls, key, stream_handle: int, enqueue: Callable[[], bool]) -> "CudaGraph":
        """Capture what `enqueue` puts on the stream; `enqueue` returns False when it failed."""
        lib, stream = cls.lib(), ctypes.c_void_p(stream_handle)
        cls._check(lib.cuStreamBeginCapture_v2(stream, CAPTURE_MODE_THREAD_LOCAL), "start")
        graph = ctypes.c_void_p()
        try:
            queued = enqueue()
        finally:
            # Always end the capture, or the stream stays unusable.
            ended = lib.cuStreamEndCapture(stream, ctypes.byref(graph))
        if not queued:
            if graph.value:
                lib.cuGraphDestroy(graph)
            raise SegdeployError("TensorRT could not enqueue the engine while capturing a CUDA graph "
                                 "(some engines, e.g. with data-dependent shapes, cannot be captured)", NO_GRAPH_HINT)
        cls._check(ended, "capture")
        executable = ctypes.c_void_p()
        result = lib.cuGraphInstantiateWithFlags(ctypes.byref(executable), graph, 0)
        if result != 0:
            lib.cuGraphDestroy(graph)
        cls._check(result, "instantiate")
        return cls(key, graph, executable)

    def launch(self, stream_handle: int) -> None:
        self._check(self.lib().cuGraphLaunch(self._exec, ctypes.c_void_p(stream_handle)), "launch")

    def close(self) -> None:
        lib = self.lib()
        if self._exec:
            lib.cuGraphExecDestroy(self._exec)
        if self._graph:
            lib.cuGraphDestroy(self._graph)
        self._exec = self._graph = None
