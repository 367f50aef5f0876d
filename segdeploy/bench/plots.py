"""PNG plots of a bench report, and the pipeline's Pareto plot (through `segdeploy.plotting`)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from segdeploy.plotting import literal, pyplot, save_figure
from segdeploy.visualize import colourise


def write_plots(report: dict, directory: Path, examples: dict | None) -> list[Path]:
    plt = pyplot()
    written = [save_figure(plt, latency_distribution(plt, report), directory / "latency.png"),
               save_figure(plt, latency_vs_miou(plt, report), directory / "latency_vs_miou.png")]
    if report["data"]["labelled"]:
        written.append(save_figure(plt, per_class_iou(plt, report), directory / "per_class_iou.png"))
    if examples is not None:
        written.append(save_figure(plt, overlays(plt, report, examples), directory / "examples.png"))
    return written


def latency_distribution(plt, report: dict):
    figure, axis = plt.subplots(figsize=(7, 3.5))
    names = [n for n, t in report["targets"].items() if t.get("latency")]
    # Matplotlib 3.10 replaced vert=False with orientation="horizontal" (vert warns from 3.11); 3.7 has only vert
    sideways = {"orientation": "horizontal"} if "orientation" in inspect.signature(axis.boxplot).parameters else {"vert": False}
    axis.boxplot([report["targets"][n]["latency"]["samples_ms"] for n in names], showfliers=True, **sideways)
    axis.set_yticks(range(1, len(names) + 1), names)
    axis.set_xlabel("inference latency per batch (ms)")
    axis.set_title("latency distribution")
    return figure


def latency_vs_miou(plt, report: dict):
    figure, axis = plt.subplots(figsize=(6, 4))
    key = "miou" if report["data"]["labelled"] else "miou_vs_reference"
    for name, target in report["targets"].items():
        x = ((target.get("latency") or {}).get("inference") or {}).get("median")
        y = (target.get("accuracy") or {}).get(key, 100.0 if name == report["reference"] else None)
        if x is not None and y is not None:
            axis.scatter([x], [y])
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("median inference latency (ms)")
    axis.set_ylabel("mIoU (%)" if key == "miou" else "mIoU vs PyTorch (%)")
    axis.set_title("latency vs accuracy")
    return figure


def per_class_iou(plt, report: dict):
    targets = report["targets"]
    classes = list(targets[report["reference"]]["accuracy"]["per_class_iou"])
    figure, axis = plt.subplots(figsize=(max(6, len(classes) * 0.7), 3.8))
    width = 0.8 / max(1, len(targets))
    for index, (name, target) in enumerate(targets.items()):
        values = [np.nan if v is None else v for v in target["accuracy"]["per_class_iou"].values()]
        axis.bar(np.arange(len(classes)) + index * width, values, width, label=name)
    axis.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, [literal(c) for c in classes], rotation=45, ha="right")
    axis.set_ylabel("IoU (%)")
    axis.legend(fontsize=7)
    axis.set_title("per-class IoU")
    return figure


def overlays(plt, report: dict, examples: dict):
    reference = report["reference"]
    others = [n for n in examples["maps"] if n != reference] or [reference]
    columns = ["image", "label", reference, "artifact", "disagreement"]
    figure, axes = plt.subplots(len(others), len(columns), figsize=(3 * len(columns), 2.4 * len(others)), squeeze=False)
    ref_map = examples["maps"][reference]
    for row, name in enumerate(others):
        label = examples["label"]
        panels = [examples["image"],
                  colourise(label, examples["palette"]) if label is not None else np.zeros_like(examples["image"]),
                  colourise(ref_map, examples["palette"]), colourise(examples["maps"][name], examples["palette"]),
                  (ref_map != examples["maps"][name]).astype(np.uint8) * 255]
        for col, panel in enumerate(panels):
            axis = axes[row][col]
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255)
            axis.set_axis_off()
            axis.set_title(name if col == 3 else columns[col], fontsize=8)
    figure.suptitle(f"example: {literal(examples['stem'])}", fontsize=9)
    return figure


def pareto_plot(rows: list[dict], front: list[int], path: Path) -> Path:
    """Latency vs mIoU over every (model, artifact) of a pipeline, the Pareto front joined by a line."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for index, row in enumerate(rows):
        axis.scatter([row["p50_ms"]], [row["miou"]], marker="o" if index in front else "x")
        axis.annotate(f"{row['model']}:{row['artifact']}", (row["p50_ms"], row["miou"]), textcoords="offset points",
                      xytext=(4, 3), fontsize=7)
    ordered = sorted((rows[i]["p50_ms"], rows[i]["miou"]) for i in front)
    axis.plot([p[0] for p in ordered], [p[1] for p in ordered], linestyle="--", linewidth=1)
    axis.set_xlabel("median inference latency (ms)")
    axis.set_ylabel("mIoU (%)")
    axis.set_title("latency vs mIoU (Pareto front dashed)")
    return save_figure(plt, figure, path)
