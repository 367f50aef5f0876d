"""INT8 within an mIoU budget: quantize, measure, keep the fewest costly layers in float, confirm.

`make_within_budget` is what `segdeploy build --precision int8 --miou-budget X` runs:

0. split the evaluation set into a *choice* part and a disjoint *confirmation* part (`confirm`:
   alternating blocks of consecutive images, or `--confirm-data`); measure FP32 and naive INT8 on
   both, and refuse a budget below the confirmation's own noise (`confirm.check_noise`);
1. quantize the whole graph (the naive INT8 graph) and measure its mIoU drop on the choice
   part (`EvalSet`: vs labels, or agreement with FP32 when unlabelled);
2. within budget → that graph is the artifact (nothing kept in float);
3. otherwise rank the quantized nodes by leave-one-out sensitivity on calibration batches
   (`sensitivity.rank_nodes`, ties broken by name, optionally in worker processes) and search the
   smallest k such that the top-k kept in float meet the budget: k = 1, 2, 4, … until one passes,
   then bisection between the last failing and the first passing k. The drop is not exactly
   monotone in k, so the result is the smallest *found* k, not a proven minimum; every k reported
   was measured on the choice part, and the same inputs give the same k (no randomness);
   then each kept node, least sensitive first, is put back to INT8 if the budget still holds
   (`_Search.prune`: one-at-a-time ranking misses nodes that only matter together);
4. if even every quantized node but one in float misses the budget, stop with an error that
   says so: the only graph that meets it is the float one (build fp32/fp16 instead);
5. measure the chosen graph once on the confirmation part, with an interval; a drop there above
   the budget stops the build with what would meet it, unless `--accept-unconfirmed` (then the
   record says so).

The record (budget, both parts, naive and final drop on each, the interval, kept nodes, every
candidate tried and onnxruntime latency of FP32 / naive INT8 / mixed) goes into the artifact's
manifest entry.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest.names import FP32_GRAPH
from segdeploy.manifest.records import MixedPrecisionRecord
from segdeploy.precision.confirm import Confirmation, check_noise, open_parts
from segdeploy.precision.drift import check_batches
from segdeploy.precision.evalset import EvalSet
from segdeploy.precision.qdq_edit import keep_float, quantized_nodes
from segdeploy.precision.sensitivity import rank_nodes

TOP_RANKED_RECORDED = 20  # sensitivity rows kept in the manifest (the full list can be long)
PRUNE_LIMIT = 32  # evaluations spent trying to put kept layers back to INT8


@dataclass
class BudgetOptions:
    miou_budget: float  # mIoU points INT8 may lose against the FP32 graph
    eval_data: Path | None = None
    eval_limit: int | None = None
    confirm_data: Path | None = None  # confirmation images; default: blocks of the evaluation set (`confirm`)
    split_block: int | None = None  # consecutive images per block of the split (default `confirm.SPLIT_BLOCK`)
    accept_unconfirmed: bool = False  # write a graph whose budget the confirmation missed, marked so
    workers: int = 1  # processes for the sensitivity ranking
    latency_iterations: int = 20


def budget_options(miou_budget: float | None, eval_data: Path | None = None, eval_limit: int | None = None,
                   **more) -> BudgetOptions | None:
    """The CLI's budget options as one value (`more`: the other `BudgetOptions` fields); options of the
    search without a budget are a mistake, not a no-op."""
    if miou_budget is None:
        defaults = {"accept_unconfirmed": False, "workers": 1}
        given = [name for name, value in {"eval_data": eval_data, "eval_limit": eval_limit, **more}.items()
                 if value is not None and value != defaults.get(name)]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise UsageError(f"{flags} only apply with --miou-budget")
        return None
    return BudgetOptions(miou_budget, eval_data, eval_limit,
                         **{name: value for name, value in more.items() if value is not None})


def check_budget(options: BudgetOptions | None, precisions: list[str]) -> None:
    if options is None:
        return
    if "int8" not in precisions:
        raise UsageError("--miou-budget applies to --precision int8")
    if not options.miou_budget >= 0:
        raise UsageError(f"--miou-budget must be >= 0 mIoU points, got {options.miou_budget}")
    for flag, value in (("--workers", options.workers), ("--split-block", options.split_block)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UsageError(f"{flag} must be a whole number >= 1, got {value}")


def make_within_budget(maker, target: str, options: BudgetOptions, step: Callable[[str], None], warn) -> str:
    """Build and record the INT8 graph for `target` that meets the budget on the choice part and
    confirm it on the confirmation part (`confirm`); returns its artifact name."""
    manifest = maker.manifest
    fp32_path = manifest.verify(FP32_GRAPH.name)
    step("preparing the evaluation set (choice and confirmation parts)")
    parts = open_parts(manifest, options, maker.calib)
    if parts.choice.warning:
        warn(parts.choice.warning)
    with tempfile.TemporaryDirectory(prefix="segdeploy-mixed-") as scratch:
        naive_path = Path(scratch) / "naive.onnx"
        step(f"quantizing the whole graph (naive INT8, {target})")
        maker.quantize(target, naive_path)
        step(f"evaluating FP32 and naive INT8 on {parts.choice.images} + {parts.confirmation.images} images")
        reference = parts.choice.reference(fp32_path)
        parts.confirmation.reference(fp32_path)
        naive_on_confirmation = Confirmation.measure(parts.confirmation, naive_path, options.miou_budget)
        check_noise(options.miou_budget, naive_on_confirmation.standard_error, parts.confirmation)
        _warn_if_below_noise(options.miou_budget, naive_on_confirmation.standard_error, parts.confirmation, warn)
        naive_miou, naive_drop, noise = parts.choice.drop_with_noise(naive_path)
        search = _Search(parts.choice, onnx.load(str(maker.prepared())), onnx.load(str(naive_path)), Path(scratch), options)
        kept, ranking, final_miou, final_drop = [], [], naive_miou, naive_drop
        if naive_drop > options.miou_budget:
            ranking = _rank(search, manifest, maker, options, step)
            kept, best = search.smallest_prefix([r["node"] for r in ranking], step)
            kept, best = search.prune(kept, best, step)
            final_miou, final_drop = best["miou"], best["drop"]
        step(f"confirming on {parts.confirmation.images} images the choice did not see")
        confirmation = _confirm(search, kept, naive_on_confirmation, parts, (final_drop, naive_drop), options, warn)
        step("timing FP32, naive INT8 and mixed graphs (onnxruntime)")
        latency = search.latency(fp32_path, naive_path, kept)
    record = MixedPrecisionRecord(
        budget_miou_drop=options.miou_budget,
        eval={"description": parts.choice.description, "images": parts.choice.images, "labelled": parts.choice.labelled,
              "warning": parts.choice.warning},
        fp32_miou=round(reference, 4),
        naive={"miou": round(naive_miou, 4), "drop": round(naive_drop, 4)},
        drop_standard_error=round(noise, 4) if noise is not None else None,
        final={"miou": round(final_miou, 4), "drop": round(final_drop, 4)},
        kept_float=kept,
        quantized_nodes=len(ranking) if ranking else len(quantized_nodes(search.naive)),
        sensitivity_top=[_short(r) for r in ranking[:TOP_RANKED_RECORDED]],
        trace=search.trace,
        latency_ms=latency,
        split=parts.split,
        confirmation=confirmation.to_record(),
    )
    return maker.make(target, keep_float=kept, record={"mixed_precision": record})


def _rank(search: "_Search", manifest, maker, options: BudgetOptions, step) -> list[dict]:
    """Leave-one-out sensitivity on calibration batches, in `options.workers` processes, with progress."""
    how = f", {options.workers} processes" if options.workers > 1 else ""
    step(f"ranking quantized layers by sensitivity (leave-one-out on calibration batches{how})")
    batches, _ = check_batches(manifest, maker.calib)
    progress = lambda done, total: step(f"ranking quantized layers by sensitivity: {done}/{total}{how}")  # noqa: E731
    return rank_nodes(search.fp32, search.naive, [search.evalset.spec.feed(b) for b in batches], on_node=progress,
                      workers=options.workers)


def _confirm(search: "_Search", kept: list[str], naive: Confirmation, parts, choice_drops: tuple[float, float],
             options: BudgetOptions, warn) -> Confirmation:
    """The chosen graph on the confirmation part; an unconfirmed budget stops the build unless accepted."""
    if kept:
        graph = search.graph(kept)
        confirmation = Confirmation.measure(parts.confirmation, graph, options.miou_budget)
        graph.unlink()
    else:
        confirmation = naive  # naive INT8 is the chosen graph
    confirmation.naive_drop = naive.drop
    if not confirmation.confirmed:
        if not options.accept_unconfirmed:
            raise confirmation.refusal(parts.choice.images, *choice_drops)
        confirmation.accepted_unconfirmed = True
        warn(confirmation.miss(parts.choice.images, choice_drops[0]) + "; written marked unconfirmed (--accept-unconfirmed)")
    return confirmation


def _warn_if_below_noise(budget: float, noise: float | None, evalset: EvalSet, warn) -> None:
    """A budget smaller than twice the drop's own uncertainty selects and confirms layers on noise: say so."""
    if noise is not None and budget < 2 * noise:
        warn(f"the budget ({budget} mIoU) is below twice the evaluation noise (naive INT8's drop has a standard "
             f"error of {noise:.2f} points over the {evalset.images} confirmation images): the layers chosen may not "
             "hold on other images; evaluate on more images (--eval-data, --confirm-data)")


def _short(row: dict) -> dict:
    return {"node": row["node"], "op": row["op"], "gain": float(f"{row['gain']:.4g}")}


class _Search:
    """Evaluates sets of nodes kept in float on the evaluation set, each set once, in a trace."""

    def __init__(self, evalset: EvalSet, fp32: onnx.ModelProto, naive: onnx.ModelProto, scratch: Path, options):
        self.evalset, self.fp32, self.naive, self.scratch, self.options = evalset, fp32, naive, scratch, options
        self.results: dict[tuple, dict] = {}
        self.trace: list[dict] = []

    def graph(self, nodes: list[str]) -> Path:
        path = self.scratch / f"candidate-{len(self.trace)}.onnx"
        onnx.save(keep_float(self.naive, self.fp32, nodes), str(path))
        return path

    def evaluate(self, nodes: list[str], phase: str, step, **about) -> dict:
        key = tuple(nodes)
        if key not in self.results:
            step(f"evaluating with {len(nodes)} layer(s) in float ({phase})")
            path = self.graph(nodes)
            miou, drop = self.evalset.drop(path)
            path.unlink()
            self.results[key] = {"phase": phase, "k": len(nodes), **about, "miou": round(miou, 4), "drop": round(drop, 4),
                                 "meets_budget": drop <= self.options.miou_budget}
            self.trace.append(self.results[key])
        return self.results[key]

    def smallest_prefix(self, ranked: list[str], step) -> tuple[list[str], dict]:
        """Doubling, then bisection (see the module docstring); raises when no k < all meets the budget."""
        limit = len(ranked) - 1  # all of them in float is the FP32 graph, not an INT8 one
        failing, k = 0, 1
        while k <= limit and not self.evaluate(ranked[:k], "top-k", step)["meets_budget"]:
            failing, k = k, (limit if k < limit < 2 * k else 2 * k)
        if k > limit:
            self._impossible(ranked)
        passing = k
        while passing - failing > 1:
            middle = (failing + passing) // 2
            if self.evaluate(ranked[:middle], "top-k", step)["meets_budget"]:
                passing = middle
            else:
                failing = middle
        return ranked[:passing], self.results[tuple(ranked[:passing])]

    def prune(self, kept: list[str], best: dict, step) -> tuple[list[str], dict]:
        """Try to put each kept node back to INT8, least sensitive first; keep the removal if the budget
        still holds. The ranking is measured one node at a time, so a prefix can carry nodes that
        only mattered alongside others; this drops them (at most PRUNE_LIMIT evaluations)."""
        for node in list(reversed(kept))[:PRUNE_LIMIT]:
            if len(kept) == 1:
                break
            trial = [n for n in kept if n != node]
            result = self.evaluate(trial, "prune", step, back_to_int8=node)
            if result["meets_budget"]:
                kept, best = trial, result
        return kept, best

    def _impossible(self, ranked: list[str]) -> None:
        best = min(self.results.values(), key=lambda r: r["drop"]) if self.results else None
        tried = f"; the best found keeps {best['k']} of {len(ranked)} in float and drops {best['drop']:.2f}" if best else ""
        raise SegdeployError(
            f"INT8 cannot meet --miou-budget {self.options.miou_budget} on {self.evalset.description}: "
            f"only the all-float graph does{tried}",
            "raise the budget, evaluate on more images (a small set is noisy), or build fp16/fp32",
        )

    def latency(self, fp32: Path, naive: Path, kept: list[str]) -> dict:
        """Median onnxruntime CPU latency (ms) of one evaluation batch, graphs timed interleaved."""
        from segdeploy.backends.onnxruntime import OrtRunner
        from segdeploy.timing import summarize, time_interleaved

        graphs = {"fp32": fp32, "naive_int8": naive}
        if kept:
            graphs["mixed_int8"] = self.graph(kept)
        feed = self.evalset.feed(0)
        with contextlib.ExitStack() as stack:
            runners = {name: stack.enter_context(OrtRunner(path)) for name, path in graphs.items()}
            samples = time_interleaved({n: (lambda r=r: r.infer(feed)) for n, r in runners.items()}, rounds=3, warmup=3,
                                       iterations=self.options.latency_iterations)
        out = {name: round(summarize(s).median, 3) for name, s in samples.items()}
        out.setdefault("mixed_int8", None)  # nothing kept in float: the naive graph is the artifact
        out.update({"batch": self.evalset.batches[0].size, "iterations": self.options.latency_iterations,
                    "provider": "CPUExecutionProvider"})
        return out
