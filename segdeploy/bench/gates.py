"""CI gates: thresholds on accuracy drift and latency, or a comparison with a baseline bench.json.

A gate never passes because something was skipped: a target the baseline has and this run
lacks fails, and so does a gate whose figure is missing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from segdeploy.errors import SegdeployError, UsageError

LATENCY_STATS = ("p50", "p90", "p99")


@dataclass
class GateOptions:
    max_miou_drop: float | None = None  # mIoU points below the PyTorch reference
    min_agreement: float | None = None  # % of pixels agreeing with PyTorch
    max_latency_ms: float | None = None
    latency_stat: str = "p50"
    baseline: dict | None = None
    max_slowdown: float | None = None  # ratio to the baseline's latency (e.g. 1.10)
    baseline_miou_tolerance: float = 0.5  # mIoU points below the baseline's

    def __post_init__(self) -> None:
        """Impossible thresholds are usage errors before any measuring, not verdicts after it."""
        if self.latency_stat not in LATENCY_STATS:
            raise UsageError(f"--latency-stat must be one of {', '.join(LATENCY_STATS)}, got {self.latency_stat!r}")
        limits = {"--max-miou-drop": (self.max_miou_drop, 0, None), "--min-agreement": (self.min_agreement, 0, 100),
                  "--max-latency-ms": (self.max_latency_ms, None, None), "--max-slowdown": (self.max_slowdown, None, None),
                  "--baseline-miou-tolerance": (self.baseline_miou_tolerance, 0, None)}
        for option, (value, low, high) in limits.items():  # low None: must be > 0
            if value is None:
                continue
            if not math.isfinite(value) or value < (low or 0) or (low is None and value <= 0) or (high is not None and value > high):
                span = f"{low}-{high}" if high is not None else (f">= {low}" if low is not None else "> 0")
                unit = " (a percentage of pixels: 99.5 means 99.5 %)" if option == "--min-agreement" else ""
                raise UsageError(f"{option} must be a number {span}{unit}, got {value}")

    def any(self) -> bool:
        return any(v is not None for v in (self.max_miou_drop, self.min_agreement, self.max_latency_ms, self.baseline))


@dataclass
class GateResult:
    gate: str
    target: str
    value: float | None
    limit: float
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def load_baseline(path: Path, schema: str, model_identity: dict) -> dict:
    """A previous bench.json for the same model (same architecture, classes and input)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegdeployError(f"baseline not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegdeployError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise SegdeployError(f"{path} is not a segdeploy bench report (schema {data.get('schema') if isinstance(data, dict) else None!r})")
    if data.get("model") != model_identity:
        raise SegdeployError(
            f"baseline {path} is for another model ({_identity(data.get('model'))}, not {_identity(model_identity)})",
            "compare against a bench.json of the same deploy directory",
        )
    return data


def _identity(model: dict | None) -> str:
    if not isinstance(model, dict):
        return "unknown"
    return f"{model.get('name')}, {model.get('num_classes')} classes, input {model.get('input_shape')}"


def check_gates(report: dict, options: GateOptions, reference: str) -> list[GateResult]:
    targets = {k: v for k, v in report["targets"].items() if k != reference}
    results: list[GateResult] = []
    for name, target in targets.items():
        accuracy = target.get("accuracy", {})
        latency = (target.get("latency") or {}).get("inference")
        if options.max_miou_drop is not None:
            drop = None if accuracy.get("delta_miou") is None else -accuracy["delta_miou"]
            results.append(_at_most("max-miou-drop", name, drop, options.max_miou_drop, "mIoU points below PyTorch"))
        if options.min_agreement is not None:
            results.append(_at_least("min-agreement", name, accuracy.get("pixel_agreement"), options.min_agreement,
                                     "% pixels agreeing with PyTorch"))
        if options.max_latency_ms is not None:
            value = latency.get(_stat_key(options.latency_stat)) if latency else None
            results.append(_at_most(f"max-latency-ms ({options.latency_stat})", name, value, options.max_latency_ms, "ms"))
    if options.baseline is not None:
        results.extend(_baseline_gates(report, options, reference))
    return results


def _baseline_gates(report: dict, options: GateOptions, reference: str) -> list[GateResult]:
    results = []
    stat = _stat_key(options.latency_stat)
    for name, old in options.baseline["targets"].items():
        if name == reference:
            continue
        new = report["targets"].get(name)
        if new is None:
            results.append(GateResult("baseline", name, None, 0, False, "in the baseline but not benched now"))
            continue
        if options.max_slowdown is not None:
            old_ms = ((old.get("latency") or {}).get("inference") or {}).get(stat)
            new_ms = ((new.get("latency") or {}).get("inference") or {}).get(stat)
            ratio = new_ms / old_ms if old_ms and new_ms is not None else None
            results.append(_at_most("max-slowdown", name, ratio, options.max_slowdown,
                                    f"× the baseline's {options.latency_stat} ({old_ms} ms)"))
        old_miou = (old.get("accuracy") or {}).get("miou")
        if old_miou is not None:
            new_miou = (new.get("accuracy") or {}).get("miou")
            drop = None if new_miou is None else round(old_miou - new_miou, 4)
            results.append(_at_most("baseline-miou", name, drop, options.baseline_miou_tolerance,
                                    f"mIoU points below the baseline's {old_miou:.2f}"))
    return results


def _stat_key(stat: str) -> str:
    return "median" if stat == "p50" else stat


def _at_most(gate: str, target: str, value, limit: float, unit: str) -> GateResult:
    if value is None:
        return GateResult(gate, target, None, limit, False, "no figure to check (not measured)")
    value = value + 0.0  # -0.0 → 0.0 for display
    return GateResult(gate, target, value, limit, value <= limit, f"{value:.4g} {unit} (limit {limit:g})")


def _at_least(gate: str, target: str, value, limit: float, unit: str) -> GateResult:
    if value is None:
        return GateResult(gate, target, None, limit, False, "no figure to check (not measured)")
    return GateResult(gate, target, value, limit, value >= limit, f"{value:.4g} {unit} (minimum {limit:g})")
