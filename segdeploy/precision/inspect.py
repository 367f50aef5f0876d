"""`segdeploy inspect precision`: per-layer quantization error of an INT8 graph, worst first, and a plot.

The INT8 graph is compared with the FP32 graph it was made from, re-prepared the same way
(`prepare_graph`), on a few real images preprocessed as the manifest says: by default the
images the artifact was calibrated on (those are what its ranges were fitted to).
See `sensitivity.tensor_errors` for the two SQNR figures of each row.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import FP32_GRAPH, ONNX, int8_graph_names



@dataclass
class PrecisionReport:
    artifact: str
    inputs: str
    rows: list[dict]
    plot: Path | None

    def to_dict(self, limit: int | None = None) -> dict:
        rows = self.rows[:limit] if limit else self.rows
        return {"artifact": self.artifact, "inputs": self.inputs, "tensors": len(self.rows), "rows": rows,
                "plot": str(self.plot) if self.plot else None}


def inspect_precision(deploy_dir, artifact: str | None = None, *, data: Path | None = None, images: int = 4,
                      plot_limit: int = 30, out: Path | None = None, plot: bool = True) -> PrecisionReport:
    """Quantization error of every quantized tensor of `artifact` (an INT8 graph), worst first."""
    from segdeploy.precision.quantize import prepare_graph
    from segdeploy.precision.sensitivity import tensor_errors

    if images < 1:
        raise UsageError(f"--images must be at least 1, got {images}")
    manifest = Manifest.load(deploy_dir)
    name = _int8_artifact(manifest, artifact)
    qdq_path = manifest.verify(name)
    batches, described = _batches(manifest, name, data, images)
    with tempfile.TemporaryDirectory(prefix="segdeploy-inspect-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        prepare_graph(manifest.verify(FP32_GRAPH.name), prepared)
        rows = tensor_errors(onnx.load(str(prepared)), onnx.load(str(qdq_path)), batches)
    if not rows:
        raise SegdeployError(f"{name} has no Q/DQ pairs: nothing is quantized")
    path = None
    if plot:
        path = Path(out) if out else manifest.directory / f"precision.{name}.png"
        write_plot(rows[:plot_limit], path, f"{manifest.model.name} {name}: worst {min(plot_limit, len(rows))} of {len(rows)}")
    return PrecisionReport(name, described, rows, path)


def _int8_artifact(manifest: Manifest, wanted: str | None) -> str:
    if wanted is not None:
        entry = manifest.artifact(wanted)
        if entry.precision != "int8" or entry.kind != ONNX:
            raise UsageError(f"{wanted} is not an INT8 ONNX graph; inspect one of: {', '.join(_int8_names(manifest)) or 'none'}")
        return wanted
    names = _int8_names(manifest)
    if not names:
        raise SegdeployError(f"{manifest.directory} has no INT8 graph", f"run `segdeploy build {manifest.directory} -p int8` first")
    return names[0]


def _int8_names(manifest: Manifest) -> list[str]:
    return [n for n in int8_graph_names() if n in manifest.artifacts]


def _batches(manifest: Manifest, name: str, data: Path | None, count: int):
    from segdeploy.data import default_calib_dir
    from segdeploy.precision.calibration import reader_for, select_images

    calibration = manifest.artifact(name).calibration
    folder = data or (Path(calibration.folder) if calibration else default_calib_dir())
    if not folder.is_dir():
        raise SegdeployError(f"image folder not found: {folder}", "pass --data DIR with a few representative images")
    chosen = select_images(folder, count, warn=lambda _: None)
    reader = reader_for(manifest, chosen)
    return [reader.feed(i) for i in range(len(reader))], f"{len(reader)} batch(es) of images from {folder}"


def write_plot(rows: list[dict], path: Path, title: str) -> Path:
    """Horizontal bars per tensor (dB, higher is better), worst at the top: its worst channel, the whole
    tensor, and the whole tensor vs FP32."""
    from segdeploy.plotting import pyplot, save_figure

    plt = pyplot()
    labels = [f"{r['kind'][0]}: {_short(r['tensor'])}" for r in rows]
    series = [("worst_channel_sqnr_db", "worst channel (the sort key)"), ("sqnr_db", "whole tensor, the pair's own error"),
              ("sqnr_vs_fp32_db", "whole tensor vs FP32 (all error so far)")]
    figure, axis = plt.subplots(figsize=(9, 0.36 * len(rows) + 1.5))
    positions = range(len(rows))
    for offset, (key, label) in zip((-0.27, 0.0, 0.27), series):
        axis.barh([p + offset for p in positions], [_finite(r[key]) for r in rows], height=0.27, label=label)
    axis.set_yticks(list(positions), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("SQNR (dB)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="lower right")
    return save_figure(plt, figure, path)


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _finite(value) -> float:
    import math

    return 0.0 if value is None or not math.isfinite(value) else value
