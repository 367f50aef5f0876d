"""The registry of artifact names is the only place the package spells them."""

from __future__ import annotations

import ast
from pathlib import Path

from segdeploy.backends.registry import BACKENDS, preference
from segdeploy.manifest.names import FP16_GRAPH, FP32_GRAPH, INT8_GRAPHS, PRECISIONS, openvino_ir, ort_optimized, tensorrt_engine
from segdeploy.precision.quantize import TARGETS

PACKAGE = Path(__file__).resolve().parents[2] / "segdeploy"
NAMES = {FP32_GRAPH.name, FP16_GRAPH.name, *(g.name for g in INT8_GRAPHS.values()),
         *(f(p).name for f in (ort_optimized, tensorrt_engine, openvino_ir) for p in PRECISIONS)}


def test_quantize_targets_agree_with_the_registry():
    for target, graph in INT8_GRAPHS.items():
        assert (TARGETS[target].artifact, TARGETS[target].filename) == (graph.name, graph.file)
    assert set(INT8_GRAPHS) == {spec.graph_target for spec in BACKENDS.values()}


def test_segmenter_preference_names_registered_artifacts():
    assert preference() and set(preference()) <= NAMES and len(set(preference())) == len(preference())


def test_no_module_spells_an_artifact_name():
    """String constants equal to an artifact name appear only in manifest/names.py (and in
    precision/quantize.py's TARGETS, checked equal above)."""
    allowed = {PACKAGE / "manifest" / "names.py", PACKAGE / "precision" / "quantize.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert found == []
