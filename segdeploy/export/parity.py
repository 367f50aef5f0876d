"""The parity proof: the exported graph, run in onnxruntime, must reproduce PyTorch.

Float64 arbiter. Some models are *float32-sensitive*: a max-pool window whose two largest
values differ by less than float32 rounding resolves either way, and SegNet's unpooling
then moves a value by a pixel. PyTorch's own float32 run is one such rounding, not the
model's exact function. When the graph misses the thresholds against PyTorch float32, the
model is run once more in float64 on the same input, and the input passes only if the
graph meets the *same* thresholds against that float64 result **and** is at least as close
to it as PyTorch float32 is (rel error and argmax agreement). Both comparisons go into the
record. A wrong graph (a moved index, a swapped axis) is far from float64 too and fails.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segdeploy.errors import ParityError


@dataclass(frozen=True)
class ParityThresholds:
    min_agreement: float = 0.999  # argmax agreement, fraction of pixels
    max_rel_error: float = 1e-3  # max abs error / range of the PyTorch logits


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
    seed: int = 20251123,
) -> dict:
    """Run PyTorch and onnxruntime on fresh random inputs of each shape; raise ParityError on failure."""
    from segdeploy.backends.onnxruntime import OrtRunner

    generator = torch.Generator().manual_seed(seed)
    arbiter = Float64Arbiter(model)
    with OrtRunner(onnx_path) as runner:
        checks = [_check_shape(model, runner, shape, input_name, generator, thresholds, arbiter) for shape in shapes]
    report = _summarise(checks, thresholds)
    if not report["passed"]:
        worst = min(checks, key=lambda c: (_passes(c, thresholds), c.get("argmax_agreement", 0.0)))
        raise ParityError(_failure_message(worst, thresholds), "the graph does not compute what the model does")
    return report


def _meets(check: dict, thresholds: ParityThresholds) -> bool:
    return (
        "shape_mismatch" not in check
        and check["argmax_agreement"] >= thresholds.min_agreement
        and check["rel_error"] <= thresholds.max_rel_error
    )


class Float64Arbiter:
    """The model in float64 (a copy, made on first use), to tell float32 rounding from a wrong graph."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._double: nn.Module | None = None
        self.unavailable: str | None = None

    def reference(self, sample: torch.Tensor) -> np.ndarray | None:
        if self.unavailable is None and self._double is None:
            try:
                self._double = copy.deepcopy(self.model).double()
            except Exception as exc:  # a TorchScript or exotic module may refuse to copy/convert
                self.unavailable = f"cannot make a float64 copy: {str(exc).strip().splitlines()[0][:120]}"
        if self._double is None:
            return None
        try:
            with torch.no_grad():
                return self._double(sample.double()).numpy()
        except RuntimeError as exc:  # e.g. a float32 constant inside the model
            self.unavailable = f"the model does not run in float64: {str(exc).strip().splitlines()[0][:120]}"
            return None

    def arbitrate(self, check: dict, sample: torch.Tensor, reference: np.ndarray, candidate: np.ndarray, thresholds) -> dict:
        """`check` failed against float32; decide against float64 and record both figures."""
        exact = self.reference(sample)
        if exact is None:
            return {**check, "float64_unavailable": self.unavailable}
        torch32 = compare_logits(exact, reference)
        graph = compare_logits(exact, candidate)
        sensitive = not _meets(torch32, thresholds)  # PyTorch float32 itself misses the exact result
        return {
            "shape": check["shape"],
            "reference": "pytorch-float64",
            **graph,
            "vs_pytorch_float32": {k: v for k, v in check.items() if k != "shape"},
            "pytorch_float32_vs_float64": torch32,
            "no_worse_than_pytorch_float32": graph["rel_error"] <= torch32["rel_error"]
            and graph["argmax_agreement"] >= torch32["argmax_agreement"],
            "float32_sensitive": sensitive,
            "note": (
                f"{'float32-sensitive model' if sensitive else 'float64 check'}: PyTorch fp32 vs fp64 rel error {torch32['rel_error']:.1e}, agreement "
                f"{torch32['argmax_agreement']:.4%}; ONNX vs fp64 rel error {graph['rel_error']:.1e}, "
                f"agreement {graph['argmax_agreement']:.4%}"
            ),
        }


def _check_shape(model: nn.Module, runner, shape, input_name: str, generator: torch.Generator, thresholds, arbiter) -> dict:
    """PyTorch vs the graph on one fresh random input of `shape` (float64 arbitrates a miss)."""
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
    check = {"shape": list(shape), "reference": "pytorch-float32", **compare_logits(reference, candidate)}
    if _meets(check, thresholds) or "shape_mismatch" in check:
        return check
    return arbiter.arbitrate(check, sample, reference, candidate, thresholds)


def _passes(check: dict, thresholds: ParityThresholds) -> bool:
    return _meets(check, thresholds) and check.get("no_worse_than_pytorch_float32", True)


def _summarise(checks: list[dict], thresholds: ParityThresholds) -> dict:
    """Figures are against each check's deciding reference (named in `references`)."""
    return {
        "passed": all(_passes(c, thresholds) for c in checks),
        "references": sorted({c["reference"] for c in checks}),
        "float32_sensitive": any(c.get("float32_sensitive", False) for c in checks),
        "min_argmax_agreement": min(c.get("argmax_agreement", 0.0) for c in checks),
        "max_abs_error": max(c.get("max_abs_error", float("inf")) for c in checks),
        "max_rel_error": max(c.get("rel_error", float("inf")) for c in checks),
        "thresholds": {"min_agreement": thresholds.min_agreement, "max_rel_error": thresholds.max_rel_error},
        "checks": checks,
    }


def _failure_message(check: dict, thresholds: ParityThresholds) -> str:
    shape = _fmt(check["shape"])
    if "shape_mismatch" in check:
        ref, got = check["shape_mismatch"]
        return f"parity failed at input {shape}: ONNX output shape {_fmt(got)} != PyTorch {_fmt(ref)}"
    first = check.get("vs_pytorch_float32", check)
    message = f"parity failed at input {shape}: {_figures(first, thresholds)}"
    if check["reference"] == "pytorch-float64":
        further = "" if check["no_worse_than_pytorch_float32"] else ", further from it than PyTorch float32 is"
        message += f"; against PyTorch float64 too: {_figures(check, thresholds)}{further} ({check['note']})"
    elif "float64_unavailable" in check:
        message += f"; no float64 arbiter ({check['float64_unavailable']})"
    return message


def _figures(check: dict, thresholds: ParityThresholds) -> str:
    return (
        f"argmax agreement {check['argmax_agreement']:.4%} (min {thresholds.min_agreement:.2%}), "
        f"relative error {check['rel_error']:.2e} (max {thresholds.max_rel_error:.0e}), "
        f"max abs error {check['max_abs_error']:.3g}"
    )


def _fmt(shape) -> str:
    return "x".join(str(int(d)) for d in shape)
