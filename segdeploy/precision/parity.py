"""How far a precision graph drifts from the FP32 graph, measured in onnxruntime on the CPU.

Reported, never hidden, and never a gate here: `segdeploy bench` owns thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from segdeploy.backends.onnxruntime import OrtRunner
from segdeploy.export.parity import LABELS_NOTE, compare_outputs


def graph_parity(reference: Path, candidate: Path, batches: Iterable[dict[str, np.ndarray]], inputs: str) -> dict:
    """Argmax agreement and errors of `candidate` vs `reference` over `batches` (first output)."""
    checks = []
    with OrtRunner(reference) as ref, OrtRunner(candidate) as cand:
        for batch in batches:
            expected = next(iter(ref.infer(batch).values()))
            got = next(iter(cand.infer(batch).values()))
            checks.append(compare_outputs(expected, got))
    if not checks:
        return {"reference": str(reference.name), "inputs": inputs, "batches": 0}
    if any(c.get("labels_only") for c in checks):
        return {"reference": reference.name, "inputs": inputs, "batches": len(checks), "compared": LABELS_NOTE,
                "argmax_agreement": float(np.mean([c["argmax_agreement"] for c in checks])),
                "min_argmax_agreement": float(min(c["argmax_agreement"] for c in checks))}
    return {
        "reference": reference.name,
        "inputs": inputs,
        "batches": len(checks),
        "argmax_agreement": float(np.mean([c["argmax_agreement"] for c in checks])),
        "min_argmax_agreement": float(min(c["argmax_agreement"] for c in checks)),
        "max_abs_error": float(max(c.get("max_abs_error", float("inf")) for c in checks)),
        "max_rel_error": float(max(c.get("rel_error", float("inf")) for c in checks)),
    }


def random_batches(spec, count: int = 2, seed: int = 20251123) -> list[dict[str, np.ndarray]]:
    """Seeded inputs of the graph's kind (`GraphSpec`): a fallback when no calibration images are at hand."""
    rng = np.random.default_rng(seed)
    return [{spec.input_name: spec.random_input(rng)} for _ in range(count)]
