"""The deploy directory's typed records: what `manifest.json` holds, field by field.

Each record is written in exactly one place (named in its docstring) and read through its
attributes. The JSON layout is schema version 1 (see docs/design.md, "The deploy
directory", for every field and an example).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segdeploy.manifest.schema import Record, keeps_unknown, optional


@dataclass
class TensorInfo(Record):
    """A graph or engine input/output: name, shape (ints, or axis names where dynamic), dtype."""

    name: str
    shape: list[int | str]
    dtype: str
    unknown: dict = keeps_unknown()

    @classmethod
    def graph_io(cls, model) -> tuple[list["TensorInfo"], list["TensorInfo"]]:
        """The inputs (initializers excluded) and outputs of an ONNX graph (`onnx.ModelProto`)."""
        import onnx

        def describe(value) -> "TensorInfo":
            tensor = value.type.tensor_type
            dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
            return cls(value.name, dims, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name)

        initializers = {init.name for init in model.graph.initializer}
        return ([describe(v) for v in model.graph.input if v.name not in initializers],
                [describe(v) for v in model.graph.output])


@dataclass
class ModelRecord(Record):
    """Where the PyTorch model came from, so bench can rebuild it (written by `export`)."""

    name: str
    source: str  # registry name, absolute file.py:Factory, package.module:Factory or TorchScript path
    source_kind: str  # registry | factory | torchscript
    num_classes: int
    num_classes_arg: int | None = None  # --num-classes as given (None: the builder's default)
    model_kwargs: dict = field(default_factory=dict)
    weights: str | None = None  # absolute path of the checkpoint
    weights_key: str | None = optional()  # --weights-key: the nested state_dict bench reloads
    unsafe_load: bool | None = optional()  # True: exported with --unsafe-load (bench asks for it again)
    weights_ignored_keys: list[str] = field(default_factory=list)
    weights_fingerprint: str | None = None  # sha256 over the state_dict: bench refuses other weights
    rewrites: list[str] = field(default_factory=list)  # export blockers rewritten (module: what)
    upsampled_output: bool = False  # logits were smaller than the input: bilinear upsampling appended
    unknown: dict = keeps_unknown()


@dataclass
class InputRecord(Record):
    """The graph's input as exported (written by `export`; read through `GraphSpec`)."""

    name: str
    shape: list[int]  # as the graph takes it: N×3×H×W, or N×H×W×3 with --fuse-preprocess
    dtype: str = "float32"
    dynamic_axes: list[str] = field(default_factory=list)  # of batch, height, width
    layout: str | None = optional()  # NCHW | NHWC; absent before fusion existed (= NCHW)
    channel_order: str | None = optional()  # RGB, for the uint8 input of a fused graph
    unknown: dict = keeps_unknown()


@dataclass
class OutputRecord(Record):
    """The graph's output as exported (written by `export`)."""

    name: str
    dtype: str = "float32"
    layout: str = "NCHW"  # NCHW (logits) | NHW (class map)
    kind: str | None = optional()  # logits | labels; absent before fusion existed (= logits)
    unknown: dict = keeps_unknown()


@dataclass
class FusionRecord(Record):
    """What `--fuse-preprocess` / `--fuse-argmax` put into the graph (written by `export`)."""

    preprocess: bool = False
    argmax: bool = False
    unknown: dict = keeps_unknown()


@dataclass
class ParityProof(Record):
    """The export's parity proof against PyTorch (`export.proof.prove_parity`); per-check details in `checks`."""

    passed: bool
    references: list[str]  # pytorch-float32, and pytorch-float64 where the arbiter decided
    float32_sensitive: bool
    min_argmax_agreement: float
    max_abs_error: float | None  # None: class maps compared (fused argmax)
    max_rel_error: float | None
    thresholds: dict[str, float]
    checks: list[dict]  # one per input shape: figures and, when arbitrated, the float64 figures
    argmax_agreement: float | None = optional()
    compared: str | None = optional()  # set when class maps were compared
    unknown: dict = keeps_unknown()


@dataclass
class DriftRecord(Record):
    """A precision graph against the FP32 graph on a few batches (`precision.drift.graph_drift`)."""

    reference: str  # the artifact compared against
    inputs: str  # which images (or synthetic inputs), in words
    batches: int
    argmax_agreement: float | None = optional()  # mean over batches
    min_argmax_agreement: float | None = optional()
    max_abs_error: float | None = optional()  # None: class maps compared
    max_rel_error: float | None = optional()
    agreement_miou: float | None = optional()
    compared: str | None = optional()
    unknown: dict = keeps_unknown()


@dataclass
class MethodComparison(Record):
    """`--calib-method best`: every method's row and the pick (`precision.compare.make_best_int8`)."""

    picked: str
    rule: str
    evaluated_on: str
    rows: list[dict]
    unknown: dict = keeps_unknown()


@dataclass
class CalibrationRecord(Record):
    """The calibration an INT8 graph was made with (`precision.graphs.Int8Maker.calibration_record`)."""

    folder: str
    images: int
    requested: int
    method: str
    percentile: float | None
    cache: str  # range cache file, relative to the deploy directory when inside it
    reused_cache: bool
    seconds: float | None  # calibration + Q/DQ insertion; None when the cache was reused
    comparison: MethodComparison | None = optional()
    unknown: dict = keeps_unknown()


@dataclass
class BiasCorrectionRecord(Record):
    """Whether and how an INT8 graph's float biases absorbed weight rounding's mean output shift
    (`precision.bias_correction.correct_biases`; `off()` when not asked for)."""

    enabled: bool
    mode: str | None = optional()  # weights | activations
    images: int | None = optional()  # calibration images the shift was measured on
    layers_corrected: int | None = optional()
    layers_skipped: dict[str, str] = field(default_factory=dict)  # node → why
    largest_shift: dict | None = optional()  # node, value (the largest |shift| of any channel)
    threshold: float | None = optional()  # layers with |shift| ≥ threshold × |bias| (or a 0 bias) left alone; None: none
    unknown: dict = keeps_unknown()

    @classmethod
    def off(cls) -> "BiasCorrectionRecord":
        return cls(enabled=False)


@dataclass
class MixedPrecisionRecord(Record):
    """INT8 within an mIoU budget (`precision.mixed.make_within_budget`)."""

    budget_miou_drop: float
    eval: dict  # the choice part: description, images, labelled, warning
    fp32_miou: float  # on the choice part, like naive and final
    naive: dict[str, float]  # miou, drop
    final: dict[str, float]
    kept_float: list[str]
    quantized_nodes: int
    latency_ms: dict
    drop_standard_error: float | None = None
    sensitivity_top: list[dict] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    split: dict | None = optional()  # how the choice and confirmation parts were made (`precision.confirm`)
    confirmation: dict | None = optional()  # the chosen graph on the confirmation part: drop, interval, naive_drop, confirmed
    unknown: dict = keeps_unknown()


@dataclass
class TensorRTVersion(Record):
    flavour: str  # tensorrt | tensorrt_rtx
    version: str
    unknown: dict = keeps_unknown()


@dataclass
class CompanionFile(Record):
    """A file an artifact needs beside its main one (an OpenVINO IR's weights, its compiled blob);
    `Manifest.add_artifact` computes the record and `Manifest.verify` checks it with the main file."""

    file: str
    sha256: str
    bytes: int
    unknown: dict = keeps_unknown()


@dataclass
class OpenVinoRecord(Record):
    """What an OpenVINO artifact was compiled for and what it computed in (`backends.openvino.build_artifact`)."""

    version: str  # the OpenVINO that compiled it (a compiled blob is used only with the same version)
    device: str  # as asked: CPU | GPU | NPU | AUTO, or an indexed one (GPU.1)
    capabilities: dict[str, list[str]]  # each physical device's OPTIMIZATION_CAPABILITIES
    runtime_precisions: dict[str, int]  # compute layers of the execution graph per runtime precision (f32, bf16, u8…)
    unknown: dict = keeps_unknown()


@dataclass
class Artifact(Record):
    """One file of the deploy directory (`Manifest.add_artifact` computes file, sha256, bytes, created).

    Writers: `export` (the FP32 graph), `precision.graphs.record_graph` (FP16/INT8 graphs),
    `backends.onnxruntime.build_artifact`, `backends.tensorrt.artifact.build_engine_artifact` and
    `backends.openvino.build_artifact`. Backend-specific details go into `settings`; the TensorRT
    fields below are what the engine compatibility check reads, `openvino` what the OpenVINO
    runner and availability check read.
    """

    file: str
    sha256: str
    bytes: int
    created: str
    kind: str  # names.ONNX | names.ENGINE | names.OPENVINO_IR
    precision: str  # fp32 | fp16 | bf16 | int8
    backend: str  # the runtime that runs it: onnxruntime | tensorrt | openvino
    target: str | None = optional()  # the runtime family a precision graph was made for: any | onnxruntime | tensorrt | onnxruntime-cpu | openvino
    parent: str | None = optional()  # the artifact it was made from
    opset: int | None = optional()
    simplified: bool | None = optional()
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    parity: ParityProof | DriftRecord | None = optional()
    calibration: CalibrationRecord | None = optional()
    bias_correction: BiasCorrectionRecord | None = optional()
    mixed_precision: MixedPrecisionRecord | None = optional()
    settings: dict[str, Any] | None = optional()
    tool_versions: dict[str, str] = field(default_factory=dict)
    tensorrt: TensorRTVersion | None = optional()
    compute_capabilities: list[str] | None = optional()
    built_on_gpu: dict | None = optional()
    builder_flags: list[str] | None = optional()
    hardware_compatibility_level: str | None = optional()
    companions: dict[str, CompanionFile] | None = optional()  # role (weights, compiled) → file beside `file`
    openvino: OpenVinoRecord | None = optional()
    unknown: dict = keeps_unknown()


@dataclass
class BuildState(Record):
    key: str
    artifacts: list[str]
    unknown: dict = keeps_unknown()


@dataclass
class PipelineState(Record):
    """What `pipeline` last exported and built here, to reuse work whose inputs are unchanged (`pipeline.py`)."""

    export_key: str
    builds: dict[str, BuildState] = field(default_factory=dict)
    unknown: dict = keeps_unknown()
