"""The parity proof: the exported graph, run in onnxruntime, must reproduce PyTorch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segdeploy.errors import ParityError


@dataclass(frozen=True)
class ParityThresholds:
    min_agreement: float = 0.999  # argmax agreement, fraction of pixels
    max_rel_error: float = 1e-3  # max abs error / range of the PyTorch logits


LABELS_NOTE = "class maps (fused argmax): pixel agreement only, no logits to compare"


def is_labels(output: np.ndarray) -> bool:
    """An N×H×W integer class map (a fused-argmax graph's output), not N×C×H×W logits."""
    return output.ndim == 3 and np.issubdtype(output.dtype, np.integer)


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """`compare_logits`, or agreement only when both outputs are class maps."""
    if is_labels(reference) or is_labels(candidate):
        return compare_labels(reference, candidate)
    return compare_logits(reference, candidate)


def compare_labels(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Pixel agreement of two class maps (a logits array is reduced to its argmax first)."""
    ref = reference if is_labels(reference) else reference.argmax(axis=1)
    cand = candidate if is_labels(candidate) else candidate.argmax(axis=1)
    if ref.shape != cand.shape:
        return {"shape_mismatch": [list(ref.shape), list(cand.shape)], "argmax_agreement": 0.0}
    return {"argmax_agreement": float(np.mean(ref == cand)), "labels_only": True}


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max abs error, error relative to the reference's logit range, argmax agreement."""
    if reference.shape != candidate.shape:
        return {"shape_mismatch": [list(reference.shape), list(candidate.shape)], "argmax_agreement": 0.0}
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    span = float(reference.max() - reference.min()) or 1.0
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    max_abs = float(diff.max()) if diff.size else 0.0
    return {"max_abs_error": max_abs, "rel_error": max_abs / span, "argmax_agreement": agreement}


def prove_parity(
    model: nn.Module,
    onnx_path,
    shapes: list[tuple[int, ...]],
    thresholds: ParityThresholds,
    *,
    input_name: str = "input",
    uint8_input: bool = False,
    seed: int = 20251123,
) -> dict:
    """Run PyTorch and onnxruntime on fresh random inputs of each shape; raise ParityError on failure.

    `shapes` are in the graph's layout; `uint8_input` feeds random 0-255 pixels (fused
    preprocessing) instead of N(0, 1) values. A class-map output is compared by agreement only.
    """
    from segdeploy.backends.onnxruntime import OrtRunner

    generator = torch.Generator().manual_seed(seed)
    with OrtRunner(onnx_path) as runner:
        checks = [_check_shape(model, runner, shape, input_name, generator, uint8_input) for shape in shapes]
    report = _summarise(checks, thresholds)
    if not report["passed"]:
        worst = min(checks, key=lambda c: c.get("argmax_agreement", 0.0))
        raise ParityError(_failure_message(worst, thresholds), "the graph does not compute what the model does")
    return report


def _check_shape(model: nn.Module, runner, shape, input_name: str, generator: torch.Generator, uint8_input: bool) -> dict:
    """PyTorch vs the graph on one fresh random input of `shape`."""
    if uint8_input:
        sample = torch.randint(0, 256, tuple(shape), dtype=torch.uint8, generator=generator)
    else:
        sample = torch.randn(*shape, generator=generator)
    try:
        with torch.no_grad():
            reference = model(sample).numpy()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise ParityError(
            f"the model itself cannot run at input {_fmt(shape)} in PyTorch ({first})",
            "it does not support dynamic height/width; export a static --input-shape",
        ) from None
    try:
        candidate = next(iter(runner.infer({input_name: sample.numpy()}).values()))
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0][:300]
        raise ParityError(
            f"the exported graph cannot run at input {_fmt(shape)}: {first}",
            "the model fixes a size internally; export with a static --input-shape (no --dynamic height,width)",
        ) from None
    return {"shape": list(shape), **compare_outputs(reference, candidate)}


def _summarise(checks: list[dict], thresholds: ParityThresholds) -> dict:
    ok = all(
        "shape_mismatch" not in c
        and c["argmax_agreement"] >= thresholds.min_agreement
        and (c.get("labels_only") or c["rel_error"] <= thresholds.max_rel_error)
        for c in checks
    )
    labels = any(c.get("labels_only") for c in checks)
    report = {
        "passed": ok,
        "min_argmax_agreement": min(c.get("argmax_agreement", 0.0) for c in checks),
        "max_abs_error": None if labels else max(c.get("max_abs_error", float("inf")) for c in checks),
        "max_rel_error": None if labels else max(c.get("rel_error", float("inf")) for c in checks),
        "thresholds": {"min_agreement": thresholds.min_agreement, "max_rel_error": thresholds.max_rel_error},
        "checks": checks,
    }
    if labels:
        report["compared"] = LABELS_NOTE
    return report


def _failure_message(check: dict, thresholds: ParityThresholds) -> str:
    shape = _fmt(check["shape"])
    if "shape_mismatch" in check:
        ref, got = check["shape_mismatch"]
        return f"parity failed at input {shape}: ONNX output shape {_fmt(got)} != PyTorch {_fmt(ref)}"
    if check.get("labels_only"):
        return (f"parity failed at input {shape}: class-map agreement {check['argmax_agreement']:.4%} "
                f"(min {thresholds.min_agreement:.2%})")
    return (
        f"parity failed at input {shape}: argmax agreement {check['argmax_agreement']:.4%} "
        f"(min {thresholds.min_agreement:.2%}), relative error {check['rel_error']:.2e} "
        f"(max {thresholds.max_rel_error:.0e}), max abs error {check['max_abs_error']:.3g}"
    )


def _fmt(shape) -> str:
    return "x".join(str(int(d)) for d in shape)
