"""`segdeploy bench`: latency, accuracy and drift of every artifact and the PyTorch reference.

`run_bench(deploy_dir, options)` is the one entry point; it returns the report (the
content of bench.json), the gate results, and the files it wrote.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from segdeploy.atomic import check_writable_dir
from segdeploy.bench.accuracy import measure_accuracy
from segdeploy.bench.environment import environment
from segdeploy.bench.gates import GateOptions, GateResult, check_gates, load_baseline
from segdeploy.timing import summarize, time_interleaved
from segdeploy.bench.targets import REFERENCE, Target, select_targets
from segdeploy.classes import ClassMapping, match_classes
from segdeploy.errors import SegdeployError, UsageError, printable
from segdeploy.evaluation.batches import BatchReader
from segdeploy.evaluation.engine import graph_predictor
from segdeploy.evaluation.outputs import class_map_batch, class_maps
from segdeploy.graph_spec import GraphSpec
from segdeploy.manifest import Manifest, now_iso
from segdeploy.manifest.locking import deploy_lock
from segdeploy.preprocess import Preprocess

SCHEMA = "segdeploy/bench"
SCHEMA_VERSION = 1


@dataclass
class BenchOptions:
    data: Path | None = None  # default: the project's calib/ (val split)
    data_format: str = "auto"
    split: str | None = None
    artifacts: list[str] | None = None
    backends: list[str] | None = None
    warmup: int = 10
    warmup_seconds: float | None = None
    iterations: int | None = 50
    duration: float | None = None
    batch: int = 1
    rounds: int = 5  # latency: targets timed in interleaved rounds, order rotated each round
    threads: int | None = None
    cuda_graph: bool = False  # TensorRT engines: replay the enqueue as a CUDA graph
    limit: int | None = None
    eval_batch: int = 4
    report_dir: Path | None = None
    plots: bool = True
    gates: GateOptions = field(default_factory=GateOptions)
    baseline_path: Path | None = None
    unsafe_load: bool = False  # rebuild the reference from a checkpoint exported with --unsafe-load


@dataclass
class BenchResult:
    report: dict
    gates: list[GateResult]
    files: list[Path]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def run_bench(deploy_dir, options: BenchOptions, step: Callable[[str], None] = lambda _: None,
              on_batch: Callable[[int], None] | None = None) -> BenchResult:
    """Measure, then write the reports. The report folder is checked writable before any work, and
    if writing still fails the results go to a fallback file (named in the error). The deploy
    directory is locked meanwhile, so no build replaces an artifact mid-measurement."""
    report_dir = Path(options.report_dir or Path(deploy_dir) / "bench")
    Manifest.load(deploy_dir)  # a missing or foreign directory is refused before anything else
    with deploy_lock(deploy_dir, "bench", optional=True):
        return _run_bench(deploy_dir, options, report_dir, step, on_batch)


def _run_bench(deploy_dir, options: BenchOptions, report_dir: Path, step, on_batch) -> BenchResult:
    manifest = Manifest.load(deploy_dir)
    reference, targets, skipped = select_targets(manifest, options.artifacts, options.backends, options.threads,
                                                 options.cuda_graph, options.unsafe_load)
    identity = model_identity(manifest)
    if options.baseline_path is not None:
        options.gates.baseline = load_baseline(options.baseline_path, SCHEMA, identity)
    dataset, classes = _open_data(manifest, options)
    if options.gates.max_miou_drop is not None and not dataset.has_labels:
        raise UsageError("--max-miou-drop needs labelled data", "use --min-agreement to gate on drift alone")
    preprocess = manifest.preprocess
    graph = GraphSpec.of(manifest)
    # The PyTorch reference is the unfused model; artifacts take what their (maybe fused) graph takes.
    specs = {t.name: graph.unfused() if t.name == REFERENCE else graph for t in [reference, *targets]}
    eval_batch = _batch_size(graph, options.eval_batch, "evaluation")
    _batch_size(graph, options.batch, "--batch")
    check_writable_dir(report_dir)  # a report that cannot be written fails now, not after minutes of measuring
    everything = [reference, *targets]
    with contextlib.ExitStack() as stack:
        runners = {t.name: stack.enter_context(_opened(t, step)) for t in everything}
        predictors = {t.name: graph_predictor(runners[t.name], specs[t.name]) for t in everything}
        step(f"accuracy: {len(everything)} targets over {min(len(dataset), options.limit or len(dataset))} images")
        accuracy = measure_accuracy(predictors, REFERENCE, dataset, preprocess, graph.input_hw,
                                    classes=classes, batch_size=eval_batch,
                                    limit=options.limit, on_batch=on_batch)
        step(f"latency: {len(everything)} targets, interleaved")
        latency = _latency(runners, specs, dataset, preprocess, options)
        examples = _examples(predictors, dataset, preprocess, graph.input_hw, manifest) if options.plots else None
    report = _report(manifest, identity, everything, skipped, accuracy, latency, options)
    gates = check_gates(report, options.gates, REFERENCE)
    report["gates"] = {"passed": all(g.passed for g in gates), "results": [g.to_dict() for g in gates]}
    from segdeploy.bench.reports import save_elsewhere, write_reports

    step("writing reports")
    try:
        files = write_reports(report, report_dir, examples, plots=options.plots)
    except OSError as exc:  # the work is done: never lose it
        raise save_elsewhere(report, report_dir, exc) from None
    return BenchResult(report, gates, files)


def model_identity(manifest: Manifest) -> dict:
    return {"name": manifest.model.name, "num_classes": manifest.model.num_classes, "input_shape": manifest.input.shape}


def _open_data(manifest: Manifest, options: BenchOptions):
    """The dataset to bench on, and how the model's classes are scored against its labels."""
    from segdeploy.data import default_calib_dir, open_dataset

    path = options.data or default_calib_dir()
    split = options.split if options.data else (options.split or "val")
    if not Path(path).exists():
        raise SegdeployError(f"dataset not found: {path}", "pass --data DIR (images/ + labels/ + classes.json, or images only)")
    dataset = open_dataset(path, options.data_format, split=split)
    if dataset.classes is None:
        dataset.classes = manifest.classes
        return dataset, ClassMapping.same(manifest.classes)
    return dataset, match_classes(manifest.classes, dataset.classes, path)


def _batch_size(graph: GraphSpec, wanted: int, what: str) -> int:
    if wanted < 1:
        raise UsageError(f"{what} batch size must be >= 1")
    static = graph.batch
    if graph.batch_dynamic:
        return wanted
    if what == "--batch" and wanted != static:
        raise UsageError(f"the graph has a static batch of {static}; re-export with --dynamic batch to bench --batch {wanted}")
    return static


@contextlib.contextmanager
def _opened(target: Target, step):
    step(f"loading {target.name}")
    with target.open() as runner:
        yield runner


def _latency(runners: dict, specs: dict[str, GraphSpec], dataset, preprocess: Preprocess, options: BenchOptions) -> dict:
    """Pure inference (a preprocessed batch) and end to end (decoded image → class map at image size),
    every target timed in interleaved rounds (see `time_interleaved`). End to end includes only the
    host work a target needs: a fused graph's caller resizes (and skips argmax) and nothing more."""
    image = dataset[0].image
    hw = next(iter(specs.values())).input_hw
    canvas, geometry = preprocess.resize_image(image, hw)
    feeds = {name: {spec.input_name: spec.graph_input(np.repeat(canvas[None], options.batch, axis=0), preprocess)}
             for name, spec in specs.items()}

    def end_to_end(runner, spec: GraphSpec):
        def call() -> None:
            canvases = np.stack([preprocess.resize_image(image, hw)[0] for _ in range(options.batch)])
            output = next(iter(runner.infer({spec.input_name: spec.graph_input(canvases, preprocess)}).values()))
            for class_map in class_map_batch(output):
                Preprocess.restore(class_map, geometry)
        return call

    timing = dict(warmup=options.warmup, warmup_seconds=options.warmup_seconds, iterations=options.iterations,
                  duration=options.duration, rounds=options.rounds)
    # GPU runners expose each call's CUDA-event times (H2D, compute, D2H); keep those of timed calls.
    device: dict[str, list[dict]] = {name: [] for name in runners}
    keep = {name: (lambda n=name, r=r: device[n].append(r.last_device_ms))
            for name, r in runners.items() if hasattr(r, "last_device_ms")}
    pure = time_interleaved({name: (lambda r=r, n=name: r.infer(feeds[n])) for name, r in runners.items()},
                            on_sample=keep, **timing)
    e2e = time_interleaved({name: end_to_end(r, specs[name]) for name, r in runners.items()}, **timing)
    report = {}
    for name in runners:
        report[name] = {"inference": summarize(pure[name], options.batch).to_dict(),
                        "end_to_end": summarize(e2e[name], options.batch).to_dict(),
                        "samples_ms": [round(v, 4) for v in pure[name]]}
        if device[name]:
            report[name]["device_ms"] = device_breakdown(device[name], options.batch)
    return report


def device_breakdown(timings: list[dict], batch: int) -> dict:
    """Per-phase statistics (ms) of the CUDA-event timings of the timed calls."""
    return {phase: summarize([t[phase] for t in timings], batch).to_dict() for phase in ("h2d", "compute", "d2h")}


def _examples(predictors, dataset, preprocess: Preprocess, input_hw, manifest: Manifest) -> dict:
    sample = dataset[0]
    batch = BatchReader(dataset, preprocess, input_hw, 1, limit=1)[0]
    n = manifest.model.num_classes
    maps = {name: class_maps(predict(batch), batch.geometries, input_hw, n)[0] for name, predict in predictors.items()}
    return {"stem": printable(sample.stem), "image": sample.image, "label": sample.label, "maps": maps,
            "palette": manifest.classes.palette}


def _mixed_precision(manifest: Manifest, entry) -> dict | None:
    """The INT8-within-budget record of an artifact, or of the graph an engine was built from."""
    parent = manifest.artifacts.get(entry.parent) if entry.parent else None
    record = entry.mixed_precision or (parent.mixed_precision if parent else None)
    if record is None:
        return None
    keys = ("budget_miou_drop", "eval", "fp32_miou", "naive", "final", "drop_standard_error", "kept_float", "quantized_nodes",
            "latency_ms", "split", "confirmation")
    return {k: getattr(record, k) for k in keys if getattr(record, k) is not None}


def _report(manifest, identity, everything, skipped, accuracy, latency, options) -> dict:
    targets = {}
    for target in everything:
        entry = manifest.artifacts.get(target.name)  # None for the PyTorch reference
        targets[target.name] = {
            "backend": target.backend,
            "precision": target.precision,
            "graph_target": target.target or None,
            "cuda_graph": target.cuda_graph,
            "file": entry.file if entry else None,
            "sha256": entry.sha256 if entry else None,
            "latency": latency.get(target.name),
            "accuracy": accuracy["targets"].get(target.name, {}),
        }
        mixed = _mixed_precision(manifest, entry) if entry else None
        if mixed:
            targets[target.name]["mixed_precision"] = mixed
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": now_iso(),
        "deploy_dir": printable(str(manifest.directory)),
        "model": identity,
        "data": {"path": printable(str(options.data or "calib/")), "images": accuracy["images"], "labelled": accuracy["labelled"]},
        "settings": {"batch": options.batch, "threads": options.threads, "rounds": options.rounds, "warmup": options.warmup,
                     "cuda_graph": options.cuda_graph,
                     "warmup_seconds": options.warmup_seconds, "iterations": options.iterations,
                     "duration": options.duration, "limit": options.limit},
        "environment": environment(options.threads),
        "reference": REFERENCE,
        "targets": targets,
        "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
        **({"class_mapping": accuracy["class_mapping"]} if accuracy["labelled"] else {}),
    }
