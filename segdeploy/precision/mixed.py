"""INT8 within an mIoU budget: quantize, measure, and keep the fewest costly layers in float.

`make_within_budget` is what `segdeploy build --precision int8 --miou-budget X` runs:

1. quantize the whole graph (the naive INT8 graph) and measure its mIoU drop on the
   evaluation set (`EvalSet`: vs labels, or agreement with FP32 when unlabelled);
2. within budget → that graph is the artifact (nothing kept in float);
3. otherwise rank the quantized nodes by leave-one-out sensitivity on calibration batches
   (`sensitivity.rank_nodes`, ties broken by name) and search the smallest k such that the
   top-k kept in float meet the budget: k = 1, 2, 4, … until one passes, then bisection
   between the last failing and the first passing k. The drop is not exactly monotone in
   k, so the result is the smallest *found* k, not a proven minimum; every k reported was
   measured on the evaluation set, and the same inputs give the same k (no randomness);
   then each kept node, least sensitive first, is put back to INT8 if the budget still holds
   (`_Search.prune`: one-at-a-time ranking misses nodes that only matter together);
4. if even every quantized node but one in float misses the budget, stop with an error that
   says so: the only graph that meets it is the float one (build fp32/fp16 instead).

The record (budget, evaluation set, naive and final drop, kept nodes, every candidate tried
and onnxruntime latency of FP32 / naive INT8 / mixed) goes into the artifact's manifest entry.
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
    latency_iterations: int = 20


def budget_options(miou_budget: float | None, eval_data: Path | None, eval_limit: int | None) -> BudgetOptions | None:
    """The CLI's three options as one value; evaluation options without a budget are a mistake, not a no-op."""
    if miou_budget is None:
        if eval_data is not None or eval_limit is not None:
            raise UsageError("--eval-data and --eval-limit only apply with --miou-budget")
        return None
    return BudgetOptions(miou_budget, eval_data, eval_limit)


def check_budget(options: BudgetOptions | None, precisions: list[str]) -> None:
    if options is None:
        return
    if "int8" not in precisions:
        raise UsageError("--miou-budget applies to --precision int8")
    if not options.miou_budget >= 0:
        raise UsageError(f"--miou-budget must be >= 0 mIoU points, got {options.miou_budget}")


def make_within_budget(maker, target: str, options: BudgetOptions, step: Callable[[str], None], warn) -> str:
    """Build and record the INT8 graph for `target` that meets the budget; returns its artifact name."""
    manifest = maker.manifest
    fp32_path = manifest.verify(FP32_GRAPH.name)
    step("preparing the evaluation set")
    evalset = EvalSet.open(manifest, options.eval_data, options.eval_limit, maker.calib.folder)
    if evalset.warning:
        warn(evalset.warning)
    with tempfile.TemporaryDirectory(prefix="segdeploy-mixed-") as scratch:
        naive_path = Path(scratch) / "naive.onnx"
        step(f"quantizing the whole graph (naive INT8, {target})")
        maker.quantize(target, naive_path)
        step(f"evaluating FP32 and naive INT8 on {evalset.description}")
        reference = evalset.reference(fp32_path)
        naive_miou, naive_drop, noise = evalset.drop_with_noise(naive_path)
        _warn_if_below_noise(options.miou_budget, noise, evalset, warn)
        search = _Search(evalset, onnx.load(str(maker.prepared())), onnx.load(str(naive_path)), Path(scratch), options)
        kept, ranking, final_miou, final_drop = [], [], naive_miou, naive_drop
        if naive_drop > options.miou_budget:
            step("ranking quantized layers by sensitivity (leave-one-out on calibration batches)")
            batches, _ = check_batches(manifest, maker.calib)
            ranking = rank_nodes(search.fp32, search.naive, [evalset.spec.feed(b) for b in batches])
            kept, best = search.smallest_prefix([r["node"] for r in ranking], step)
            kept, best = search.prune(kept, best, step)
            final_miou, final_drop = best["miou"], best["drop"]
        step("timing FP32, naive INT8 and mixed graphs (onnxruntime)")
        latency = search.latency(fp32_path, naive_path, kept)
    record = MixedPrecisionRecord(
        budget_miou_drop=options.miou_budget,
        eval={"description": evalset.description, "images": evalset.images, "labelled": evalset.labelled,
              "warning": evalset.warning},
        fp32_miou=round(reference, 4),
        naive={"miou": round(naive_miou, 4), "drop": round(naive_drop, 4)},
        drop_standard_error=round(noise, 4) if noise is not None else None,
        final={"miou": round(final_miou, 4), "drop": round(final_drop, 4)},
        kept_float=kept,
        quantized_nodes=len(ranking) if ranking else len(quantized_nodes(search.naive)),
        sensitivity_top=[_short(r) for r in ranking[:TOP_RANKED_RECORDED]],
        trace=search.trace,
        latency_ms=latency,
    )
    return maker.make(target, keep_float=kept, record={"mixed_precision": record})


def _warn_if_below_noise(budget: float, noise: float | None, evalset: EvalSet, warn) -> None:
    """A budget smaller than the drop's own uncertainty selects layers on noise: say so."""
    if noise is not None and budget < 2 * noise:
        warn(f"the budget ({budget} mIoU) is below twice the evaluation noise (naive INT8's drop has a standard "
             f"error of {noise:.2f} points over these {evalset.images} images): the layers chosen may not hold "
             "on other images; evaluate on more images (--eval-data, --eval-limit)")


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
