"""What TensorRT makes of a graph: the parsed network (CPU) and the built engine's layers (GPU).

`network_layers` parses an ONNX graph the way `build_engine` does and lists TensorRT's layers
with the layer types that feed them, so a test can see on a CPU that every convolution reads
a dequantized input (explicit INT8). `engine_layers` asks the engine inspector what each
layer of a built engine runs with; deserializing an engine needs a GPU, so it works only there
(build with `EngineOptions(detailed_layers=True)`, or the engine keeps layer names only).
"""

from __future__ import annotations

import json
from pathlib import Path

from segdeploy.backends.tensorrt.flavour import Flavour, load_tensorrt
from segdeploy.errors import SegdeployError


def network_layers(onnx_path: Path, flavour: Flavour | None = None) -> list[dict]:
    """[{"name", "type", "inputs": [type of the layer producing each input, or "input"/"constant"],
    "input_dtypes", "output_dtypes": [TensorRT data type names, e.g. "FLOAT", "HALF"]}]."""
    from segdeploy.backends.tensorrt.builder import make_logger, parse_onnx

    flavour = flavour or load_tensorrt()
    _builder, network, _parser = parse_onnx(flavour, Path(onnx_path), make_logger(flavour))
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producers = {layer.get_output(o).name: layer for layer in layers for o in range(layer.num_outputs)}

    def source(tensor) -> str:
        if tensor is None:
            return "constant"  # an optional input left empty, or weights given as layer attributes
        layer = producers.get(tensor.name)
        return _type_name(layer.type) if layer is not None else "input"

    def dtype(tensor) -> str | None:
        return None if tensor is None else _type_name(tensor.dtype)

    return [{"name": layer.name, "type": _type_name(layer.type),
             "inputs": [source(layer.get_input(i)) for i in range(layer.num_inputs)],
             "input_dtypes": [dtype(layer.get_input(i)) for i in range(layer.num_inputs)],
             "output_dtypes": [dtype(layer.get_output(i)) for i in range(layer.num_outputs)]} for layer in layers]


def engine_layers(engine_path: Path, flavour: Flavour | None = None) -> list[dict]:
    """The engine inspector's JSON description of each layer (needs a GPU to deserialize the engine)."""
    from segdeploy.backends.tensorrt.builder import make_logger

    flavour = flavour or load_tensorrt()
    trt = flavour.api
    logger = make_logger(flavour)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        detail = " | ".join(logger.errors[-2:]) or "no detail"
        raise SegdeployError(f"{flavour.label()} cannot load {Path(engine_path).name} to inspect it: {detail}",
                             "inspecting an engine needs the GPU and TensorRT it was built for")
    inspector = engine.create_engine_inspector()
    described = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return [layer if isinstance(layer, dict) else {"Name": layer} for layer in described.get("Layers", [])]


def _type_name(member) -> str:
    """'CONVOLUTION' from LayerType.CONVOLUTION, 'FLOAT' from DataType.FLOAT."""
    return str(member).split(".")[-1]
