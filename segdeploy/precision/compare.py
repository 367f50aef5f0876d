"""`--calib-method best`: calibrate with every method, keep the one that agrees best with FP32.

minmax, entropy and percentile each calibrate on the *same* images (each with its own
range cache, so a second build reuses all three), the Q/DQ graph for the requested target
is made from each, and each is compared with the FP32 graph on evaluation images that
calibration did not see where there are any: the val split (a sibling `val/images` as in
CamVid's DIR/train + DIR/val, or the folder's `splits/val.txt`), else the folder's other
images, else (nothing else at hand) the calibration images themselves; the record says
which. The winner has the highest argmax
agreement; ties go to the higher agreement mIoU, then the lower relative error, then
the order minmax, entropy, percentile. Only the winner is written as the artifact; the
whole table goes into its manifest entry.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np

from segdeploy.atomic import atomic_path
from segdeploy.backends.onnxruntime import OrtRunner
from segdeploy.errors import UsageError
from segdeploy.export.parity import compare_logits
from segdeploy.metrics import ConfusionMatrix, agreement_from_counts
from segdeploy.precision.calibration import CALIB_METHODS, CalibrationSet, reader_for
from segdeploy.precision.graphs import FP32, Int8Maker, _record_graph, _relative
from segdeploy.precision.quantize import quantize_graph, target_for

BEST = "best"
EVAL_IMAGES = 32  # evaluation images at most, spread evenly over those at hand
TIE_ORDER = {method: i for i, method in enumerate(CALIB_METHODS)}
RULE = "highest argmax agreement; ties: higher agreement mIoU, lower rel error, then minmax < entropy < percentile"


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


def score_graphs(fp32: Path, graphs: dict[str, Path], reader, num_classes: int) -> dict[str, dict]:
    """Each graph vs FP32, one evaluation batch at a time (logits of big inputs are large)."""
    matrices = {name: ConfusionMatrix(num_classes) for name in graphs}
    checks: dict[str, list[dict]] = {name: [] for name in graphs}
    runners = {name: OrtRunner(path) for name, path in graphs.items()}
    with OrtRunner(fp32) as reference, contextlib.ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        for i in range(len(reader)):
            batch = reader.load_batch(i)
            expected = next(iter(reference.infer(batch).values()))
            for name, runner in runners.items():
                got = next(iter(runner.infer(batch).values()))
                checks[name].append(compare_logits(expected, got))
                matrices[name].update(expected.argmax(axis=1), got.argmax(axis=1))
    return {name: _figures(checks[name], matrices[name]) for name in graphs}


def _figures(checks: list[dict], matrix: ConfusionMatrix) -> dict:
    pixels = agreement_from_counts(matrix.counts)
    return {
        "argmax_agreement": pixels["pixel_agreement"],
        "min_argmax_agreement": float(min(c["argmax_agreement"] for c in checks)),
        "agreement_miou": pixels["miou_vs_reference"],
        "max_rel_error": float(max(c["rel_error"] for c in checks)),
        "max_abs_error": float(max(c["max_abs_error"] for c in checks)),
    }


def pick_best(rows: list[dict]) -> dict:
    """The winning row (see RULE); deterministic for equal figures."""
    def key(row):
        miou = row["agreement_miou"]
        return (-row["argmax_agreement"], -(miou if miou == miou else -1.0), row["max_rel_error"], TIE_ORDER[row["method"]])

    return min(rows, key=key)


def make_best_int8(maker: Int8Maker, target_name: str) -> str:
    """Calibrate with each method, write and record only the best INT8 graph for `target_name`."""
    options = maker.options
    if not 0 < options.percentile <= 100:  # fail before minutes of minmax/entropy calibration
        raise UsageError(f"--percentile must be in (0, 100], got {options.percentile}")
    target = target_for(target_name)
    prepared, manifest = maker.prepared(), maker.manifest
    graphs = {method: maker.scratch() / f"int8-{method}.onnx" for method in CALIB_METHODS}
    runs = {method: _calibrate(maker, method, prepared, graphs[method], target) for method in CALIB_METHODS}
    evaluation, described = evaluation_set(maker.calib)
    if len(evaluation.images) < reader_for(manifest, maker.calib).batch:  # too few for one batch of a static-batch model
        evaluation, described = maker.calib, f"the {len(maker.calib.images)} calibration images themselves ({described}: fewer than one batch)"
    maker.step(f"measuring each INT8 graph vs FP32 on {described}")
    reader = reader_for(manifest, evaluation)
    scores = score_graphs(manifest.verify(FP32), graphs, reader, int(manifest.data["model"]["num_classes"]))
    rows = [{"method": m, **scores[m], **runs[m]} for m in CALIB_METHODS]
    winner = pick_best(rows)
    with atomic_path(manifest.directory / target.filename) as tmp:
        shutil.copyfile(graphs[winner["method"]], tmp)
    parity = {"reference": FP32, "inputs": described, "batches": len(reader),
              **{k: winner[k] for k in ("argmax_agreement", "min_argmax_agreement", "max_abs_error", "max_rel_error")}}
    calibration = {
        "folder": str(maker.calib.folder), "images": len(maker.calib.images), "requested": maker.calib.requested,
        "method": winner["method"], "percentile": winner["percentile"], "cache": winner["cache"],
        "reused_cache": winner["reused_cache"], "seconds": winner["calibration_seconds"],
        "comparison": {"picked": winner["method"], "rule": RULE, "evaluated_on": described, "rows": rows},
    }
    _record_graph(manifest, target.artifact, target.filename, "int8", target_name, parity=parity, calibration=calibration,
                  settings={**target.settings(), "format": "QDQ", "why": target.why,
                            "exclude_nodes": options.exclude_nodes, "exclude_ops": options.exclude_ops})
    return target.artifact


def _calibrate(maker: Int8Maker, method: str, prepared: Path, out: Path, target) -> dict:
    """Quantize with `method` (calibrating unless its range cache exists); times and cache."""
    options = maker.options
    cache = maker.cache_path(method)
    fresh = not cache.is_file()
    maker.step(f"calibrating on {len(maker.calib.images)} images ({method})" if fresh else f"reusing calibration ranges {cache.name}")
    start = time.perf_counter()
    quantize_graph(prepared, out, target, reader=reader_for(maker.manifest, maker.calib, maker.on_batch), cache_path=cache,
                   method=method, percentile=options.percentile, exclude_nodes=options.exclude_nodes,
                   exclude_ops=options.exclude_ops)
    seconds = round(time.perf_counter() - start, 2)
    relative = _relative(cache, maker.manifest.directory)
    return {
        "percentile": options.percentile if method == "percentile" else None,
        # calibration + Q/DQ insertion; with a reused cache, what making that cache took (if recorded)
        "calibration_seconds": seconds if fresh else _seconds_when_cached(maker.manifest, relative),
        "quantize_seconds": seconds,
        "reused_cache": not fresh,
        "cache": relative,
    }


def _seconds_when_cached(manifest, cache: str) -> float | None:
    """The calibration time recorded when `cache` was made, by this or another INT8 artifact."""
    for entry in manifest.artifacts.values():
        calibration = entry.get("calibration") or {}
        rows = calibration.get("comparison", {}).get("rows", []) + [calibration]
        for row in rows:
            seconds = row.get("calibration_seconds", row.get("seconds"))
            if row.get("cache") == cache and seconds is not None:
                return seconds
    return None
