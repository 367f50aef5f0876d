"""The registry of artifact names and files: every artifact a deploy directory can hold.

Code refers to artifacts through these constants and functions, never by repeating a
literal such as "onnx-fp32". A new kind of artifact (a new backend's compiled model, a new
precision graph) gets its name and file here, and its record fields in `records.Artifact`
(or, backend-specific, in its `settings`). See docs/design.md, "The deploy directory".
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # bf16: OpenVINO only (`registry.BackendSpec.precisions`)

# Artifact kinds: what the file is, which decides which runner opens it.
ONNX = "onnx"  # an ONNX graph (FP32 export, precision graphs, onnxruntime-optimized graphs)
ENGINE = "engine"  # a serialized TensorRT engine
OPENVINO_IR = "openvino"  # an OpenVINO IR (.xml, its weights in a companion .bin)


@dataclass(frozen=True)
class ArtifactName:
    """An artifact's name in the manifest and its file in the deploy directory."""

    name: str
    file: str


FP32_GRAPH = ArtifactName("onnx-fp32", "model.onnx")  # the verified export: every other artifact derives from it
FP16_GRAPH = ArtifactName("onnx-fp16", "model.fp16.onnx")
# INT8 Q/DQ graphs, one per target family (see precision.quantize.TARGETS, which must agree: tested).
INT8_GRAPHS = {
    "onnxruntime": ArtifactName("onnx-int8-ort", "model.int8-ort.onnx"),
    "tensorrt": ArtifactName("onnx-int8-trt", "model.int8-trt.onnx"),
}


def ort_optimized(precision: str) -> ArtifactName:
    """A precision graph saved with onnxruntime's CPU graph optimizations (`build --ort-optimize`)."""
    return ArtifactName(f"ort-{precision}", f"model.{precision}.ort.onnx")


def tensorrt_engine(precision: str) -> ArtifactName:
    """A TensorRT engine built from the precision graph of `precision`."""
    return ArtifactName(f"trt-{precision}", f"model.{precision}.engine")


def openvino_ir(precision: str) -> ArtifactName:
    """An OpenVINO IR of a precision graph; its weights are the companion `.bin` of the same stem."""
    return ArtifactName(f"ov-{precision}", f"model.{precision}.ov.xml")


def openvino_blob(precision: str, device: str) -> str:
    """The file of an `ov-<precision>` model compiled for `device` (`build --ov-cache`), a companion of the IR."""
    return f"model.{precision}.{device.lower()}.ov.blob"


def int8_graph_names() -> list[str]:
    """The INT8 graphs' names, onnxruntime's first (what `inspect precision` looks at by default)."""
    return [graph.name for graph in INT8_GRAPHS.values()]
