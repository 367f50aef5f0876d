"""`--calib-method best`: calibrate with every method, keep the one that agrees best with FP32.

minmax, mean-minmax, entropy and percentile each calibrate on the *same* images (each with its
own range cache, so a second build reuses them all), the Q/DQ graph for the requested target
is made from each, and each is compared with the FP32 graph on evaluation images that
calibration did not see where there are any: the val split (a sibling `val/images` as in
CamVid's DIR/train + DIR/val, or the folder's `splits/val.txt`), else the folder's other
images, else (nothing else at hand) the calibration images themselves; the record says
which. The winner has the highest argmax
agreement; ties go to the higher agreement mIoU, then the lower relative error, then
the order minmax, mean-minmax, entropy, percentile. Only the winner is written as the artifact; the
whole table goes into its manifest entry.
"""

from __future__ import annotations

import shutil

import numpy as np

from segdeploy.atomic import atomic_path
from segdeploy.errors import UsageError
from segdeploy.precision.calibration import CALIB_METHODS, CalibrationSet, batch_reader, batch_size
from segdeploy.manifest.names import FP32_GRAPH
from segdeploy.manifest.records import DriftRecord, MethodComparison
from segdeploy.precision.drift import compare_graphs
from segdeploy.precision.graphs import Int8Maker, Quantized, relative_path

BEST = "best"
EVAL_IMAGES = 32  # evaluation images at most, spread evenly over those at hand
TIE_ORDER = {method: i for i, method in enumerate(CALIB_METHODS)}
RULE = "highest argmax agreement; ties: higher agreement mIoU, lower rel error, then minmax < mean-minmax < entropy < percentile"


def evaluation_set(calib: CalibrationSet) -> tuple[CalibrationSet, str]:
    """Images to judge the methods on, and a sentence saying which they are."""
    from segdeploy.data import find_images

    used = set(calib.images)
    val_list = calib.folder / "splits" / "val.txt"
    sibling = calib.folder.parent / "val"  # CamVid-style DIR/train + DIR/val
    if calib.folder.name != "val" and (sibling / "images").is_dir():
        pool = [p for p in find_images(sibling) if p not in used]
        where = f"val images of {sibling}"
    elif val_list.is_file():
        stems = {line.strip() for line in val_list.read_text(encoding="utf-8").splitlines() if line.strip()}
        pool = [p for p in find_images(calib.folder) if p.stem in stems and p not in used]
        where = f"val images of {calib.folder} (splits/val.txt) not used for calibration"
    else:
        pool = [p for p in find_images(calib.folder) if p not in used]
        where = f"held-out images of {calib.folder} (not used for calibration)"
    if not pool:
        return calib, f"the {len(calib.images)} calibration images themselves (no other images in {calib.folder})"
    picks = sorted(set(np.linspace(0, len(pool) - 1, min(EVAL_IMAGES, len(pool))).round().astype(int).tolist()))
    chosen = tuple(pool[i] for i in picks)
    return CalibrationSet(calib.folder, chosen, len(chosen)), f"{len(chosen)} {where}"


def pick_best(rows: list[dict]) -> dict:
    """The winning row (see RULE); deterministic for equal figures. Graphs that output class maps
    (fused argmax) have no relative error: ties then go straight to the method order."""
    def key(row):
        miou = row["agreement_miou"]
        rel = row["max_rel_error"]
        return (-row["argmax_agreement"], -(miou if miou == miou else -1.0), 0.0 if rel is None else rel, TIE_ORDER[row["method"]])

    return min(rows, key=key)


def make_best_int8(maker: Int8Maker, target_name: str) -> str:
    """Calibrate with each method, write and record only the best INT8 graph for `target_name`."""
    options = maker.options
    if options.percentile is not None and not 0 < options.percentile <= 100:  # fail before minutes of calibration
        raise UsageError(f"--percentile must be in (0, 100], got {options.percentile}")
    target = maker.target(target_name)
    manifest = maker.manifest
    graphs = {method: maker.scratch() / f"int8-{method}.onnx" for method in CALIB_METHODS}
    runs = {method: maker.quantize(target_name, graphs[method], method=method) for method in CALIB_METHODS}
    evaluation, described = evaluation_set(maker.calib)
    if len(evaluation.images) < batch_size(manifest):  # fewer than one static batch
        evaluation, described = maker.calib, f"the {len(maker.calib.images)} calibration images themselves ({described}: fewer than one batch)"
    maker.step(f"measuring each INT8 graph vs FP32 on {described}")
    batches = list(batch_reader(manifest, evaluation.images, "evaluation images"))
    scores = compare_graphs(manifest, manifest.verify(FP32_GRAPH.name), graphs, batches)
    rows = [{"method": m, **_row(scores[m]), **_run_row(maker, target_name, runs[m])} for m in CALIB_METHODS]
    winner = pick_best(rows)
    with atomic_path(manifest.directory / target.filename) as tmp:
        shutil.copyfile(graphs[winner["method"]], tmp)
    parity = DriftRecord(reference=FP32_GRAPH.name, inputs=described, **scores[winner["method"]])
    calibration = maker.calibration_record(target_name, winner["method"])
    calibration.seconds = winner["calibration_seconds"]
    calibration.comparison = MethodComparison(picked=winner["method"], rule=RULE, evaluated_on=described, rows=rows)
    return maker.record(target, parity, calibration, runs[winner["method"]])


def _row(figures: dict) -> dict:
    """A method's figures in the comparison table."""
    keys = ("argmax_agreement", "min_argmax_agreement", "agreement_miou", "max_rel_error", "max_abs_error")
    return {k: figures[k] for k in keys}


def _run_row(maker: Int8Maker, target_name: str, run: Quantized) -> dict:
    """A method's calibration in the comparison table: times and cache."""
    seconds = round(run.seconds, 2)
    relative = relative_path(run.cache, maker.manifest.directory)
    return {
        "percentile": maker.percentile(target_name) if run.method == "percentile" else None,
        # calibration + Q/DQ insertion; with a reused cache, what making that cache took (if recorded)
        "calibration_seconds": seconds if run.fresh else _seconds_when_cached(maker.manifest, relative),
        "quantize_seconds": seconds,
        "reused_cache": not run.fresh,
        "cache": relative,
    }


def _seconds_when_cached(manifest, cache: str) -> float | None:
    """The calibration time recorded when `cache` was made, by this or another INT8 artifact."""
    for entry in manifest.artifacts.values():
        calibration = entry.calibration
        if calibration is None:
            continue
        rows = calibration.comparison.rows if calibration.comparison else []
        found = [r.get("calibration_seconds") for r in rows if r.get("cache") == cache]
        found.append(calibration.seconds if calibration.cache == cache else None)
        seconds = next((s for s in found if s is not None), None)
        if seconds is not None:
            return seconds
    return None
