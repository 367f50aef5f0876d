"""The parity proof of an export: the graph, run in onnxruntime, must reproduce PyTorch.

Float64 arbiter. Some models are *float32-sensitive*: a max-pool window whose two largest
values differ by less than float32 rounding resolves either way, and SegNet's unpooling
then moves a value by a pixel. PyTorch's float32 run and onnxruntime's are two such
roundings, neither the model's exact function; which windows flip in each is chance
(measured on full-width SegNet: sometimes PyTorch's run deviates from float64, sometimes
onnxruntime's, sometimes both). When the graph misses the thresholds against PyTorch
float32, the model is run in float64 on the same input, and the input passes when

* the graph meets the same thresholds against float64, or
* the model is ill-conditioned there and the graph is within its float32 noise: the
  noise is how far PyTorch float32 lands from float64, or how far float64 itself moves
  when the input changes by a relative 1e-5 (≈ 170 float32 ulps, about what rounding
  accumulates through a deep network), whichever is larger; the graph must be within twice
  that (relative error, and disagreeing pixels). Twice, because a flip's error is the value
  it moves, so two equally valid roundings that flip the same window have equal errors.

Every figure goes into the record. A well-conditioned model's noise is tiny, so it gets
no slack; a wrong graph (a moved index, a swapped axis) is far outside any noise.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from segdeploy.errors import ParityError, UsageError
from segdeploy.evaluation.compare import compare_outputs, summarize
from segdeploy.export.degenerate import check_not_degenerate


@dataclass(frozen=True)
class ParityThresholds:
    min_agreement: float = 0.999  # argmax agreement, fraction of pixels
    max_rel_error: float = 1e-3  # max abs error / range of the PyTorch logits

    def __post_init__(self) -> None:
        # an impossible threshold is the user's mistake, not a parity failure to blame on the graph
        if not (math.isfinite(self.min_agreement) and 0 <= self.min_agreement <= 1):
            raise UsageError(f"--min-agreement is a fraction of pixels between 0 and 1 (0.999 = 99.9 %), got {self.min_agreement}")
        if not (math.isfinite(self.max_rel_error) and self.max_rel_error > 0):
            raise UsageError(f"--max-rel-error must be a positive number (1e-3 = 0.1 % of the logit range), got {self.max_rel_error}")


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
    arbiter = Float64Arbiter(model)
    with OrtRunner(onnx_path) as runner:
        checks = [_check_shape(model, runner, shape, input_name, generator, thresholds, arbiter, uint8_input) for shape in shapes]
    report = _summarise(checks, thresholds)
    if not report["passed"]:
        worst = min(checks, key=lambda c: (_passes(c, thresholds), c.get("argmax_agreement", 0.0)))
        raise ParityError(_failure_message(worst, thresholds), "the graph does not compute what the model does")
    return report


def _meets(check: dict, thresholds: ParityThresholds) -> bool:
    return (
        "shape_mismatch" not in check
        and check["argmax_agreement"] >= thresholds.min_agreement
        and (check.get("labels_only") or check["rel_error"] <= thresholds.max_rel_error)
    )


NOISE_FACTOR = 2.0  # how far beyond the measured float32 noise a graph may land (see the module doc)
# Noise that flips more than 10× the pixels the thresholds allow is not float32 rounding
# (a nondeterministic model, or one that float32 cannot represent): no allowance then.
NOISE_CAP = 10.0


class Float64Arbiter:
    """The model in float64 (a copy, made on first use), to tell float32 rounding from a wrong graph."""

    JITTER = 1e-5  # relative input perturbation that measures the model's conditioning

    def __init__(self, model: nn.Module):
        self.model = model
        self._double: nn.Module | None = None
        self.unavailable: str | None = None

    def jittered(self, sample: torch.Tensor) -> np.ndarray | None:
        """The float64 model on the input scaled by (1 + 1e-5·N(0,1)), seeded: deterministic."""
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return self.reference(sample.double() * (1 + self.JITTER * noise))

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
        torch32 = compare_outputs(exact, reference)
        graph = compare_outputs(exact, candidate)
        result = {
            "shape": check["shape"],
            "reference": "pytorch-float64",
            **graph,
            "vs_pytorch_float32": {k: v for k, v in check.items() if k != "shape"},
            "pytorch_float32_vs_float64": torch32,
        }
        if _meets(graph, thresholds):
            sensitive = not _meets(torch32, thresholds)
            return {**result, "float32_sensitive": sensitive, "within_float32_noise": True,
                    "note": f"{'float32-sensitive model' if sensitive else 'float64 check'}: PyTorch fp32 vs fp64 "
                            f"{_short(torch32)}; ONNX vs fp64 {_short(graph)}"}
        moved = self.jittered(sample)
        jitter = compare_outputs(exact, moved) if moved is not None else torch32
        noise = {"rel_error": max(torch32.get("rel_error", 0.0), jitter.get("rel_error", 0.0)),
                 "argmax_agreement": min(torch32["argmax_agreement"], jitter["argmax_agreement"])}
        sensitive = not _meets(noise, thresholds)
        plausible = 1 - noise["argmax_agreement"] <= NOISE_CAP * (1 - thresholds.min_agreement)
        within = sensitive and plausible and graph.get("rel_error", 0.0) <= NOISE_FACTOR * noise["rel_error"] \
            and 1 - graph["argmax_agreement"] <= NOISE_FACTOR * (1 - noise["argmax_agreement"])
        return {
            **result,
            "float64_jitter_1e-5_vs_float64": jitter,
            "float32_noise": noise,
            "float32_sensitive": sensitive,
            "within_float32_noise": within,
            "note": (
                f"{_condition(sensitive, plausible)}: PyTorch fp32 vs fp64 "
                f"{_short(torch32)}; fp64 with 1e-5 input jitter vs fp64 {_short(jitter)}; ONNX vs fp64 {_short(graph)}"
            ),
        }


def _condition(sensitive: bool, plausible: bool) -> str:
    if not sensitive:
        return "well-conditioned model"
    return "float32-sensitive model" if plausible else "output too unstable to be float32 rounding (nondeterministic model?)"


def _short(check: dict) -> str:
    error = f"rel error {check['rel_error']:.1e}, " if "rel_error" in check else ""
    return f"{error}agreement {check['argmax_agreement']:.4%}"


def _check_shape(model: nn.Module, runner, shape, input_name: str, generator: torch.Generator, thresholds, arbiter,
                 uint8_input: bool) -> dict:
    """PyTorch vs the graph on one fresh random input of `shape` (float64 arbitrates a miss)."""
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
    check_not_degenerate(reference, shape)  # say so before blaming the graph
    try:
        candidate = next(iter(runner.infer({input_name: sample.numpy()}).values()))
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0][:300]
        raise ParityError(
            f"the exported graph cannot run at input {_fmt(shape)}: {first}",
            "the model fixes a size internally; export with a static --input-shape (no --dynamic height,width)",
        ) from None
    check = {"shape": list(shape), "reference": "pytorch-float32", **compare_outputs(reference, candidate)}
    if _meets(check, thresholds) or "shape_mismatch" in check:
        return check
    return arbiter.arbitrate(check, sample, reference, candidate, thresholds)


def _passes(check: dict, thresholds: ParityThresholds) -> bool:
    if check.get("reference") == "pytorch-float64":
        return bool(check["within_float32_noise"])
    return _meets(check, thresholds)


def _summarise(checks: list[dict], thresholds: ParityThresholds) -> dict:
    """Figures (`evaluation.compare.summarize`) are against each check's deciding reference (named in `references`)."""
    figures = summarize(checks)
    figures.pop("batches")
    return {
        "passed": all(_passes(c, thresholds) for c in checks),
        "references": sorted({c["reference"] for c in checks}),
        "float32_sensitive": any(c.get("float32_sensitive", False) for c in checks),
        **figures,
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
        further = ", beyond the model's own float32 noise" if check["float32_sensitive"] else ""
        message += f"; against PyTorch float64 too: {_figures(check, thresholds)}{further} ({check['note']})"
    elif "float64_unavailable" in check:
        message += f"; no float64 arbiter ({check['float64_unavailable']})"
    return message


def _figures(check: dict, thresholds: ParityThresholds) -> str:
    if check.get("labels_only"):
        return f"class-map agreement {check['argmax_agreement']:.4%} (min {thresholds.min_agreement:.2%})"
    return (
        f"argmax agreement {check['argmax_agreement']:.4%} (min {thresholds.min_agreement:.2%}), "
        f"relative error {check['rel_error']:.2e} (max {thresholds.max_rel_error:.0e}), "
        f"max abs error {check['max_abs_error']:.3g}"
    )


def _fmt(shape) -> str:
    return "x".join(str(int(d)) for d in shape)
