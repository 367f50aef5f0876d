"""How far precision graphs drift from the FP32 graph, measured in onnxruntime on the CPU.

Reported, never hidden, and never a gate here: `segdeploy bench` owns thresholds. Every
graph-against-graph figure of a build (the drift record of each FP16/INT8 graph, the
`--calib-method best` table) comes from `compare_graphs`, which runs the evaluation engine at
model resolution with the FP32 graph as the reference.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from segdeploy.backends.onnxruntime import OrtRunner
from segdeploy.evaluation.batches import Batch, synthetic_batches
from segdeploy.evaluation.compare import summarize
from segdeploy.evaluation.engine import evaluate, graph_predictor
from segdeploy.graph_spec import GraphSpec
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import FP32_GRAPH
from segdeploy.manifest.records import DriftRecord
from segdeploy.precision.calibration import CalibrationSet, batch_reader

CHECK_BATCHES = 4  # calibration batches a new graph is compared on against FP32
_REFERENCE = "reference"


def check_batches(manifest: Manifest, calib: CalibrationSet | None) -> tuple[list[Batch], str]:
    """A few real images (preprocessed as recorded) when there are some, else seeded noise; and what they are."""
    if calib is not None:
        reader = batch_reader(manifest, calib.images)
        count = min(CHECK_BATCHES, len(reader))
        return [reader[i] for i in range(count)], f"{count} calibration batch(es) from {calib.folder}"
    spec = GraphSpec.of(manifest)
    kind = "uint8 pixel" if spec.fused_preprocess else "N(0,1)"
    return synthetic_batches(spec), f"2 random {kind} inputs (no calibration images at hand)"


def compare_graphs(manifest: Manifest, reference: Path, candidates: dict[str, Path], batches: list[Batch]) -> dict[str, dict]:
    """Each candidate graph against `reference` on the same batches (model resolution): the one summary
    of per-batch comparisons (`evaluation.compare.summarize`) plus the agreement mIoU."""
    spec = GraphSpec.of(manifest)
    with contextlib.ExitStack() as stack:
        runners = {name: stack.enter_context(OrtRunner(path)) for name, path in {_REFERENCE: reference, **candidates}.items()}
        result = evaluate({name: graph_predictor(runner, spec) for name, runner in runners.items()}, batches,
                          num_classes=manifest.model.num_classes, reference=_REFERENCE,
                          resolution="model", compare_outputs=True)
    figures = {}
    for name in candidates:
        agreement = result[name].agreement()
        figures[name] = {**summarize(result[name].outputs.checks),
                         "agreement_miou": agreement["miou_vs_reference"] if agreement else None}
    return figures


def graph_drift(manifest: Manifest, candidate: Path, batches: list[Batch], described: str) -> DriftRecord:
    """The drift record of one precision graph: against the FP32 graph on `batches` (`described`)."""
    figures = compare_graphs(manifest, manifest.verify(FP32_GRAPH.name), {"candidate": candidate}, batches)["candidate"]
    return DriftRecord(reference=FP32_GRAPH.name, inputs=described, **figures)
