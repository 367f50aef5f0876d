"""Run a serialized engine with the name-based API (TensorRT ≥ 8.5, TensorRT-RTX).

`set_input_shape` / `set_tensor_address` / `execute_async_v3`, device buffers through
pycuda or cuda-python, one CUDA stream, page-locked host buffers, async copies, dynamic
shapes per call. Unverified here (no GPU on the build machine): see the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeploy.backends.base import Runner
from segdeploy.backends.tensorrt.builder import make_logger
from segdeploy.backends.tensorrt.device import gpu_info, sm_number
from segdeploy.backends.tensorrt.flavour import Flavour, describe_record, dims, load_tensorrt
from segdeploy.errors import SegdeployError


def check_compatible(record, flavour: Flavour, gpu: dict | None, rebuild: str) -> None:
    """Refuse an engine built for another TensorRT or GPU, saying which and what to do.

    `record` is the engine's manifest entry (`manifest.records.Artifact`)."""
    built = record.tensorrt
    here = flavour.label()
    if built is None or built.flavour != flavour.name or (built.version != flavour.version and not _forward_ok(record, flavour)):
        raise SegdeployError(f"the engine was built with {describe_record(built)}, this machine has {here}", rebuild)
    if gpu is None:
        raise SegdeployError("running a TensorRT engine needs an NVIDIA GPU and none is visible here",
                             "use the onnxruntime artifacts on CPU-only machines")
    here_sm = sm_number(gpu["compute_capability"])
    targets = [c for c in record.compute_capabilities or [] if c[:1].isdigit()]
    built_gpu = record.built_on_gpu or {}
    if flavour.is_rtx:
        ok = here_sm in {sm_number(c) for c in targets} if targets else here_sm >= 80
    else:
        ok = (not built_gpu or sm_number(built_gpu["compute_capability"]) == here_sm
              or (record.hardware_compatibility_level == "ampere_plus" and here_sm >= 80))
    if not ok:
        wanted = ", ".join(targets) or built_gpu.get("compute_capability", "SM80+")
        raise SegdeployError(
            f"the engine targets compute capability {wanted}; this GPU ({gpu['name']}) is {gpu['compute_capability']}", rebuild)


def _forward_ok(record, flavour: Flavour) -> bool:
    """Version-compatible engines load on the same or a newer TensorRT of the same major version."""
    built = record.tensorrt.version
    if "VERSION_COMPATIBLE" not in (record.builder_flags or []):
        return False
    as_tuple = lambda v: tuple(int(p) for p in v.split(".")[:3] if p.isdigit())  # noqa: E731
    return as_tuple(flavour.version) >= as_tuple(built) and as_tuple(flavour.version)[:1] == as_tuple(built)[:1]


def invalidity_reasons(trt, diagnostics: int) -> list[str]:
    """Names of the bits set in TensorRT-RTX's EngineInvalidityDiagnostics mask."""
    enum = getattr(trt, "EngineInvalidityDiagnostics", None)
    names = [n for n in dir(enum) if n.isupper()] if enum is not None else []
    return [n.lower().replace("_", " ") for n in names if int(diagnostics) & int(getattr(enum, n))]


class TrtRunner(Runner):
    """Runs a TensorRT engine; `record` is its manifest entry (`Artifact`, for the compatibility check)."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, record=None, *, rebuild_hint: str = "",
                 cuda_graph: bool = False):
        super().__init__()
        self.path = Path(engine_path)
        self.cuda_graph = cuda_graph  # replay the enqueue as a CUDA graph (recaptured when shapes change)
        self._graph = None
        self.record = record
        self.rebuild_hint = rebuild_hint or "rebuild it on this machine with `segdeploy build DEPLOY_DIR --backend tensorrt`"
        self.buffers: dict[str, tuple] = {}
        self.events: list = []
        self.last_device_ms: dict[str, float] | None = None  # CUDA-event times of the last infer()

    def _activate(self) -> None:
        flavour = load_tensorrt()
        if self.record is not None:
            check_compatible(self.record, flavour, gpu_info(), self.rebuild_hint)
        from segdeploy.backends.tensorrt.cuda import load_cuda

        # The flavour, not its module, is kept: `flavour.api` is what the type checker reads as TensorRT's API.
        self.flavour, self.logger = flavour, make_logger(flavour)
        self.cuda = load_cuda()
        try:
            self._load_engine(flavour)
            # start, inputs copied, engine done, outputs copied: H2D, compute and D2H apart
            self.events = [self.cuda.new_event() for _ in range(4)]
        except BaseException:
            self.cuda.close()
            raise

    def _load_engine(self, flavour: Flavour) -> None:
        trt = flavour.api
        self.runtime = trt.Runtime(self.logger)
        data = self.path.read_bytes()
        self._check_validity(flavour, data)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            detail = " | ".join(self.logger.errors[-2:]) or "no detail"
            raise SegdeployError(f"{flavour.label()} cannot load {self.path.name}: {detail}", self.rebuild_hint)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def _check_validity(self, flavour: Flavour, data: bytes) -> None:
        # TensorRT-RTX reads the engine header and says whether this system can run it.
        engine_validity = getattr(self.runtime, "get_engine_validity", None)  # TensorRT-RTX only
        if engine_validity is None:
            return
        validity, diagnostics = engine_validity(data)
        if validity == getattr(self.flavour.api, "EngineValidity").INVALID:  # TensorRT-RTX only
            raise SegdeployError(
                f"{flavour.label()} cannot run {self.path.name} here: {', '.join(invalidity_reasons(self.flavour.api, diagnostics)) or 'invalid'}",
                self.rebuild_hint,
            )

    def _deactivate(self) -> None:
        self._drop_graph()
        for device, host, _ in self.buffers.values():
            self.cuda.free(device, host)
        self.buffers.clear()
        for event in self.events:
            self.cuda.destroy_event(event)
        self.events = []
        del self.context, self.engine, self.runtime  # the objects TensorRT frees; the runner can be activated again
        self.cuda.close()

    def _buffer(self, name: str, nbytes: int):
        """Device + page-locked host buffers for a tensor, grown when a call needs more."""
        current = self.buffers.get(name)
        if current is None or current[2] < nbytes:
            if current is not None:
                self.cuda.free(current[0], current[1])
            current = (self.cuda.device_alloc(nbytes), self.cuda.host_empty(nbytes), nbytes)
            self.buffers[name] = current
            self.context.set_tensor_address(name, self.cuda.device_ptr(current[0]))
        return current

    def _infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(batch) != set(self.inputs):
            raise SegdeployError(f"inputs {sorted(batch)} do not match the engine's {sorted(self.inputs)}")
        start, copied_in, computed, copied_out = self.events
        self.cuda.record(start)
        for name in self.inputs:
            array = np.ascontiguousarray(batch[name], dtype=self.flavour.api.nptype(self.engine.get_tensor_dtype(name)))
            self._check_profile(name, array.shape)
            if not self.context.set_input_shape(name, array.shape):
                raise SegdeployError(f"the engine rejected input {name} of shape {'x'.join(map(str, array.shape))}")
            device, host, _ = self._buffer(name, array.nbytes)
            host[: array.nbytes] = array.reshape(-1).view(np.uint8)
            self.cuda.to_device(device, host, array.nbytes)
        shapes = {}
        for name in self.outputs:
            shape = dims(self.context.get_tensor_shape(name))
            dtype = np.dtype(self.flavour.api.nptype(self.engine.get_tensor_dtype(name)))
            shapes[name] = (shape, dtype)
            self._buffer(name, int(np.prod(shape)) * dtype.itemsize)
        self.cuda.record(copied_in)
        self._enqueue(tuple((n, tuple(batch[n].shape)) for n in self.inputs))
        self.cuda.record(computed)
        for name, (shape, dtype) in shapes.items():
            device, host, _ = self.buffers[name]
            self.cuda.to_host(host, device, int(np.prod(shape)) * dtype.itemsize)
        self.cuda.record(copied_out)
        self.cuda.synchronize()
        self.last_device_ms = {"h2d": self.cuda.elapsed_ms(start, copied_in),
                               "compute": self.cuda.elapsed_ms(copied_in, computed),
                               "d2h": self.cuda.elapsed_ms(computed, copied_out)}
        return {
            name: host[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape).copy()
            for name, (shape, dtype) in shapes.items()
            for host in [self.buffers[name][1]]
        }

    def _execute(self) -> bool:
        return bool(self.context.execute_async_v3(self.cuda.stream_handle))

    def _enqueue(self, shapes: tuple) -> None:
        """Run the engine on the stream: directly, or by replaying its captured CUDA graph."""
        if not self.cuda_graph:
            if not self._execute():
                raise SegdeployError(f"TensorRT failed to run {self.path.name}: {' | '.join(self.logger.errors[-2:])}")
            return
        # A graph bakes in shapes and buffer addresses: capture again when either changes.
        key = (shapes, tuple(self.cuda.device_ptr(b[0]) for b in self.buffers.values()))
        if self._graph is None or self._graph.key != key:
            self._drop_graph()
            # One plain enqueue first, as TensorRT asks after a shape change: it settles
            # deferred work (shape-dependent allocations) that must not land in the graph.
            if not self._execute():
                raise SegdeployError(f"TensorRT failed to run {self.path.name}: {' | '.join(self.logger.errors[-2:])}")
            self.cuda.synchronize()
            from segdeploy.backends.tensorrt.cuda_graph import CudaGraph

            self._graph = CudaGraph.capture(key, self.cuda.stream_handle, self._execute)
        self._graph.launch(self.cuda.stream_handle)

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        fixed = dims(self.engine.get_tensor_shape(name))
        if all(d >= 0 for d in fixed):
            if fixed != tuple(shape):
                raise SegdeployError(f"the engine takes {name} of shape {'x'.join(map(str, fixed))}, got {'x'.join(map(str, shape))}")
            return
        lo, _, hi = (dims(s) for s in self.engine.get_tensor_profile_shape(name, 0))
        if len(shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
            raise SegdeployError(
                f"input {name} {'x'.join(map(str, shape))} is outside the engine's profile "
                f"{'x'.join(map(str, lo))} … {'x'.join(map(str, hi))}",
                "rebuild with wider --min-shapes/--max-shapes",
            )
