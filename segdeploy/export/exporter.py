"""`export_model`: torch → verified ONNX in a deploy directory.

Load, rewrite export blockers, trace to ONNX, infer shapes, simplify, prove parity, write the
manifest. It creates (or replaces, with `force`) a deploy directory holding `model.onnx` and
`manifest.json`; nothing is left behind when any step fails, and an export --force interrupted
at any point leaves the old export or the new one, never a mix (`manifest.locking.commit`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
import torch

from segdeploy.atomic import new_directory, staged_path
from segdeploy.classes import ClassInfo, load_classes
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.export.fused import LABELS_NAME, Fusion, check_channels, fuse, graph_shape, sample_input
from segdeploy.export.onnx_export import DYNAMIC_AXES, INPUT_NAME, OUTPUT_NAME, torch_to_onnx
from segdeploy.export.proof import ParityThresholds, prove_parity
from segdeploy.export.rewrites import rewrite_export_blockers
from segdeploy.export.simplify import infer_shapes, simplify
from segdeploy.export.wrapper import wrap_for_export
from segdeploy.faults import fault_point
from segdeploy.manifest import FILENAME, Manifest, tool_versions
from segdeploy.manifest.locking import commit, deploy_lock, is_bookkeeping, journal, repair_if_abandoned
from segdeploy.manifest.names import FP32_GRAPH, ONNX
from segdeploy.manifest.records import (
    FusionRecord,
    InputRecord,
    ModelRecord,
    OutputRecord,
    ParityProof,
    PipelineState,
    TensorInfo,
)
from segdeploy.models.loading import LoadedModel, load_model, weights_fingerprint
from segdeploy.preprocess import Preprocess

DEFAULT_INPUT = (1, 3, 512, 512)
MAX_INPUT_ELEMENTS = 2**28  # 1 GiB of float32 input


@dataclass
class ExportRequest:
    source: str
    out_dir: Path | None = None
    input_shape: tuple[int, int, int, int] | None = None
    opset: int = 11
    dynamic: set[str] = field(default_factory=set)
    simplify: bool = True
    num_classes: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    weights: Path | None = None
    weights_key: str | None = None
    unsafe_load: bool = False
    preprocess: Preprocess = field(default_factory=Preprocess)
    classes_file: Path | None = None
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    force: bool = False
    fusion: Fusion = field(default_factory=Fusion)  # --fuse-preprocess / --fuse-argmax
    pipeline: PipelineState | None = None  # written with the export: marks the directory as a pipeline's


@dataclass
class ExportResult:
    directory: Path
    onnx_path: Path
    manifest: Manifest
    parity: dict
    rewrites: list[str]


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """'1x3x512x1024' → (1, 3, 512, 1024)."""
    parts = [p.strip() for p in re.split(r"[x,×]", text.strip().lower())]
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"malformed --input-shape {text!r}: expected NxCxHxW with positive integers, e.g. 1x3x512x1024")
    shape = tuple(int(p) for p in parts)
    if math.prod(shape) > MAX_INPUT_ELEMENTS:  # the traced sample alone; the model's activations are far larger
        raise UsageError(f"--input-shape {text} is {math.prod(shape) * 4 / 2**30:.0f} GiB as float32: too large to export",
                         "export at the resolution you deploy; --dynamic height,width for several")
    return shape  # type: ignore[return-value]


def parse_dynamic(text: str | None) -> set[str]:
    if not text:
        return set()
    names = {p.strip().lower() for p in text.split(",") if p.strip()}
    if "all" in names:
        return set(DYNAMIC_AXES)
    unknown = names - set(DYNAMIC_AXES)
    if unknown:
        raise UsageError(f"--dynamic takes a subset of batch,height,width (or all); got {', '.join(sorted(unknown))}")
    return names


def export_model(request: ExportRequest, step: Callable[[str], None] = lambda _: None) -> ExportResult:
    """Run the whole export; `step` is told what is happening (for progress display)."""
    step("loading model")
    loaded = load_model(
        request.source,
        num_classes=request.num_classes,
        model_kwargs=request.model_kwargs,
        weights=request.weights,
        weights_key=request.weights_key,
        unsafe_load=request.unsafe_load,
    )
    shape = _input_shape(request, loaded)
    out_dir = Path(request.out_dir or Path("deploy") / loaded.name)
    if out_dir.is_dir():
        repair_if_abandoned(out_dir)  # an export that died mid-way is finished or undone before we judge the folder
    _check_out_dir(out_dir, request.force)  # fail fast, before minutes of work
    # Locked for the whole export; the new graph and manifest replace the old pair together (a journal
    # commit), so an interruption at any point leaves the old export or the new one, never a mix.
    with new_directory(out_dir), deploy_lock(out_dir, "export"), journal(out_dir, "export"):
        _check_out_dir(out_dir, request.force)  # again: another command may have written meanwhile
        return _export_into(request, loaded, shape, out_dir, step, _replaced_manifest(out_dir))


def _export_into(request: ExportRequest, loaded: LoadedModel, shape, out_dir: Path, step,
                 old: Manifest | None) -> ExportResult:
    model = loaded.module
    loaded.info["weights_fingerprint"] = weights_fingerprint(model)  # before rewrites change the module
    rewrites = rewrite_export_blockers(model) if loaded.kind != "torchscript" else []
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(*shape, generator=generator)
    step("checking the model's output")
    wrapper, logits = wrap_for_export(model, sample)
    num_classes = int(logits.shape[1])
    if request.num_classes is not None and request.num_classes != num_classes:
        raise SegdeployError(f"the model outputs {num_classes} classes but --num-classes is {request.num_classes}")
    # A classes.json may list fewer classes than the model outputs when the extra ones are its void/ignore class
    # (CamVid models trained with void as a 12th class): they are appended, named and coloured from it.
    classes = (load_classes(request.classes_file).for_outputs(num_classes, request.classes_file) if request.classes_file
               else ClassInfo.default(num_classes))

    fusion = request.fusion
    exported = fuse(wrapper, fusion, request.preprocess, loaded.kind)
    step(f"exporting to ONNX (opset {request.opset})")
    traced_with = sample_input(shape, fusion, generator) if fusion.preprocess else sample
    graph = torch_to_onnx(exported, traced_with, opset=request.opset,
                          dynamic=request.dynamic, input_layout="NHWC" if fusion.preprocess else "NCHW",
                          output_layout="NHW" if fusion.argmax else "NCHW",
                          output_name=LABELS_NAME if fusion.argmax else OUTPUT_NAME, rewritten=rewrites)
    step("inferring shapes")
    graph = infer_shapes(graph)
    if request.simplify:
        step("simplifying with onnxsim")
        graph = infer_shapes(simplify(graph))
    onnx_path = out_dir / FP32_GRAPH.file
    with staged_path(onnx_path) as graph_file:  # under a temp name until the commit
        onnx.save(graph, str(graph_file))
        step("proving parity in onnxruntime")
        shapes = [graph_shape(s, fusion) for s in _parity_shapes(shape, request.dynamic, loaded)]
        parity = prove_parity(exported, graph_file, shapes, request.thresholds, uint8_input=fusion.preprocess)
    manifest = _new_manifest(request, loaded, shape, classes, graph, parity, rewrites,
                             bool(getattr(wrapper, "upsample", False)), out_dir, graph_file)
    with staged_path(out_dir / FILENAME) as manifest_file:
        manifest_file.write_text(manifest.dumps(), encoding="utf-8")
    fault_point("export:staged")
    stale = [a.file for a in (old.artifacts.values() if old else []) if a.file not in (FP32_GRAPH.file, FILENAME)]
    commit(out_dir, {FP32_GRAPH.file: graph_file, FILENAME: manifest_file}, remove=stale)
    return ExportResult(out_dir, onnx_path, manifest, parity, rewrites)


def _input_shape(request: ExportRequest, loaded: LoadedModel) -> tuple[int, int, int, int]:
    spec = _spec_of(loaded)
    shape = request.input_shape or (spec.default_input if spec else DEFAULT_INPUT)
    multiple = spec.size_multiple if spec else 1
    check_channels(shape, request.fusion)
    if shape[2] % multiple or shape[3] % multiple:
        raise UsageError(f"{loaded.name} needs height and width divisible by {multiple}; got {shape[2]}x{shape[3]}")
    if spec is not None and not spec.dynamic_hw and {"height", "width"} & request.dynamic:
        raise UsageError(
            f"{loaded.name} does not support dynamic height/width export",
            "export one static --input-shape per resolution you deploy",
        )
    return shape


def _spec_of(loaded: LoadedModel):
    if loaded.kind != "registry":
        return None
    from segdeploy.models import get_spec

    return get_spec(loaded.name)


def _parity_shapes(shape, dynamic: set[str], loaded: LoadedModel) -> list[tuple[int, ...]]:
    """The export shape, plus one other (non-square) shape exercising every dynamic axis."""
    shapes = [tuple(shape)]
    if not dynamic:
        return shapes
    n, c, h, w = shape
    spec = _spec_of(loaded)
    step = max(spec.size_multiple if spec else _common_power_of_two(h, w), 16)
    other = [n + 1 if "batch" in dynamic else n, c, h, w]
    if "height" in dynamic:
        other[2] = h + 2 * step
    if "width" in dynamic:
        other[3] = w + step
    if other[2] == other[3]:  # keep it non-square (an H/W swap must show), moving only a dynamic axis
        other[2 if "height" in dynamic else 3] += step
    shapes.append(tuple(other))
    return shapes


def _common_power_of_two(h: int, w: int, limit: int = 32) -> int:
    """The largest power of two up to `limit` dividing both sizes: a model of unknown
    constraints exported at 64×96 probably needs multiples of 32 (e.g. an encoder-decoder
    with skip connections), so the second parity size keeps that."""
    step = 1
    while step < limit and h % (2 * step) == 0 and w % (2 * step) == 0:
        step *= 2
    return step


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SegdeployError(f"{out_dir} exists and is not a directory", "choose another -o/--out")
    if Manifest.exists(out_dir) and not force:
        raise SegdeployError(f"{out_dir} already holds an export", "pass --force to replace it, or choose another -o/--out")
    # segdeploy's own lock/journal/temp files (left by an interrupted first export) do not count
    if out_dir.is_dir() and not Manifest.exists(out_dir) and any(not is_bookkeeping(p.name) for p in out_dir.iterdir()) and not force:
        raise SegdeployError(f"{out_dir} is not empty and is not a deploy directory", "choose another -o/--out")


def _replaced_manifest(out_dir: Path) -> Manifest | None:
    """The manifest an export --force replaces (its artifacts are removed afterwards); None when there
    is none, or when it is unreadable: then its files cannot be told apart from the user's, and stay."""
    if not Manifest.exists(out_dir):
        return None
    try:
        return Manifest.load(out_dir)
    except SegdeployError:
        return None


def _resolvable(source: str, kind: str) -> str:
    """Absolute paths for file sources, so bench can rebuild the PyTorch model from any folder."""
    if kind == "torchscript":
        return str(Path(source).resolve())
    target, _, attr = source.rpartition(":")
    if kind == "factory" and target.endswith(".py"):
        return f"{Path(target).resolve()}:{attr}"
    return source


def _io_records(shape, dynamic: set[str], fusion: Fusion) -> dict:
    """The manifest's input/output records (see `segdeploy.graph_spec`); unfused exports keep the original form."""
    records = {
        "input": InputRecord(INPUT_NAME, list(shape), "float32", sorted(dynamic)),
        "output": OutputRecord(OUTPUT_NAME, "float32", "NCHW"),
    }
    if not fusion.any:
        return records
    if fusion.preprocess:
        records["input"] = InputRecord(INPUT_NAME, list(graph_shape(shape, fusion)), "uint8", sorted(dynamic),
                                       layout="NHWC", channel_order="RGB")
    else:
        records["input"].layout = "NCHW"
    records["output"] = (OutputRecord(LABELS_NAME, "int32", "NHW", kind="labels") if fusion.argmax
                         else OutputRecord(OUTPUT_NAME, "float32", "NCHW", kind="logits"))
    records["fused"] = FusionRecord(**fusion.to_dict())
    return records


def _new_manifest(request, loaded, shape, classes, graph, parity, rewrites, upsampled, out_dir, graph_file) -> Manifest:
    """The new export's manifest (not saved: `commit` puts it in place with the graph staged at `graph_file`)."""
    inputs, outputs = TensorInfo.graph_io(graph)
    model = ModelRecord(
        name=loaded.name,
        source=_resolvable(loaded.source, loaded.kind),
        source_kind=loaded.kind,
        num_classes=classes.num_classes,
        num_classes_arg=request.num_classes,
        model_kwargs=request.model_kwargs,
        weights=str(Path(request.weights).resolve()) if request.weights else None,
        weights_key=request.weights_key,  # bench rebuilds the reference from the same nested state_dict
        unsafe_load=request.unsafe_load or None,  # … and asks again before unpickling it
        weights_ignored_keys=loaded.info.get("weights_ignored_keys", []),
        weights_fingerprint=loaded.info["weights_fingerprint"],
        rewrites=rewrites,
        upsampled_output=upsampled,
    )
    manifest = Manifest.new(out_dir, model=model, **_io_records(shape, request.dynamic, request.fusion),
                            preprocess=request.preprocess, classes=classes, pipeline=request.pipeline)
    manifest.add_artifact(
        FP32_GRAPH.name, FP32_GRAPH.file, kind=ONNX, precision="fp32", backend="onnxruntime", opset=request.opset,
        simplified=request.simplify, inputs=inputs, outputs=outputs, parity=ParityProof.from_dict(parity, "parity"),
        tool_versions=tool_versions("torch", "torchvision", "onnx", "onnxruntime", "onnxsim"), staged=graph_file,
    )
    return manifest
