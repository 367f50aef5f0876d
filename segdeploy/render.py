"""Every human rendering of a result: the terminal output of each command and the text of bench.md.

One place, so a figure reads the same wherever it appears. Functions here format; they never
print (`cli.console` prints, `bench.reports` writes files). Results come in as the dicts and
result objects the library returns; `--json` prints those dicts themselves.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

BENCH_COLUMNS = ("artifact", "backend", "precision", "p50 ms", "p90 ms", "p99 ms", "img/s", "e2e p50 ms",
                 "mIoU", "ΔmIoU", "agree %", "worst ΔIoU")
PIPELINE_COLUMNS = ("model", "artifact", "backend", "precision", "p50 ms", "p99 ms", "img/s", "mIoU", "ΔmIoU", "agree %")


def fmt_number(value, digits: int = 2, signed: bool = False) -> str:
    """A table cell: fixed digits, optional sign, an en dash for a missing figure."""
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


# -- models / export -------------------------------------------------------------------------------

def models_table(rows: list[dict]) -> Table:
    table = Table(title="segdeploy models", show_lines=False)
    for column in ("name", "family", "default input"):
        table.add_column(column, no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("dynamic H/W", no_wrap=True)
    table.add_column("description", overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["family"], row["default_input"], f"{row['parameters'] / 1e6:.1f}M",
                      "yes" if row["dynamic_hw"] else "no", row["description"])
    return table


def export_text(data: dict, megabytes: float) -> str:
    """The export's result (`export_model` summarised as a dict) in a few lines."""
    checks = "; ".join(
        f"{'x'.join(map(str, c['shape']))}: agreement {c['argmax_agreement']:.4%}"
        + (" (class maps: no logit error)" if c.get("labels_only")
           else f", max abs err {c['max_abs_error']:.2e}, rel err {c['rel_error']:.2e}")
        for c in data["parity"]["checks"]
    )
    lines = [f"{data['onnx']} (opset {data['opset']}, {megabytes:.1f} MB)"]
    if data["rewrites"]:
        lines.append("rewrites: " + "; ".join(data["rewrites"]))
    lines.append(f"parity vs PyTorch: {checks}")
    lines.append("time: " + ", ".join(f"{name} {sec:.1f}s" for name, sec in data["timings_s"].items()))
    return "[bold green]exported[/] " + escape("\n".join(lines))  # paths are text, never markup


# -- build -----------------------------------------------------------------------------------------

def calibration_comparison_lines(comparison: dict) -> list[str]:
    """The calibration-method table of `--calib-method best`, one row per method."""
    lines = [f"    calibration methods compared on {comparison['evaluated_on']}:",
             f"    {'method':<11} {'agreement':>10} {'agr. mIoU':>10} {'rel error':>10} {'calib s':>13}"]
    for row in comparison["rows"]:
        seconds = "" if row["calibration_seconds"] is None else f"{row['calibration_seconds']:.1f}"
        seconds = f"(cached) {seconds}".strip() if row["reused_cache"] else seconds
        miou = row["agreement_miou"]
        mark = "  <- picked" if row["method"] == comparison["picked"] else ""
        rel = "n/a" if row["max_rel_error"] is None else f"{row['max_rel_error']:.2e}"  # class maps: no logits
        lines.append(f"    {row['method']:<11} {row['argmax_agreement']:>10.2%} {miou:>10.2%} {rel:>10} {seconds:>13}{mark}")
    return lines


def mixed_precision_lines(record: dict) -> list[str]:
    """INT8 within an mIoU budget (a `MixedPrecisionRecord` as a dict) in a few plain lines (build, bench.md)."""
    naive, final, lat = record["naive"], record["final"], record["latency_ms"]
    kept = record["kept_float"]
    verdict = (f"naive INT8 already within budget (drop {naive['drop']:.2f})" if not kept else
               f"kept {len(kept)} of {record['quantized_nodes']} quantized layers in float: drop {naive['drop']:.2f} → {final['drop']:.2f}")
    noise = record.get("drop_standard_error")
    noise_text = f" (drop standard error ±{noise:.2f})" if noise is not None else ""
    confirmation = record.get("confirmation")
    chosen = "chosen on" if confirmation else "evaluated on"
    lines = [f"budget {record['budget_miou_drop']} mIoU: {verdict}{noise_text}; {chosen} {record['eval']['description']}"]
    if confirmation:
        lines.append(_confirmation_line(record["budget_miou_drop"], confirmation, record.get("split") or {}))
    if kept:
        lines.append(f"in float: {', '.join(kept[:8])}" + (f" … (+{len(kept) - 8})" if len(kept) > 8 else ""))
    mixed = f", mixed {lat['mixed_int8']:.2f} ms" if lat.get("mixed_int8") is not None else ""
    lines.append(f"onnxruntime median latency: fp32 {lat['fp32']:.2f} ms, naive int8 {lat['naive_int8']:.2f} ms{mixed}")
    return lines


def _confirmation_line(budget: float, c: dict, split: dict) -> str:
    """The chosen graph on the confirmation part (`precision.confirm`), with the verdict."""
    low, high = c["interval"]
    naive = f"; naive INT8 {c['naive_drop']:.2f} on them" if c.get("naive_drop") is not None else ""
    figures = f"drop {c['drop']:.2f} ({c['interval_level']:.0%} interval {low:.2f} to {high:.2f}{naive})"
    given = split.get("confirmation", {}).get("data")
    how = f"; given by --confirm-data {given}" if given else (f"; split in blocks of {split['block']}" if split else "")
    if c["confirmed"]:
        return f"confirmed on {c['images']} other images: {figures} <= budget {budget}{how}"
    accepted = " (written with --accept-unconfirmed)" if c.get("accepted_unconfirmed") else ""
    return f"NOT confirmed on {c['images']} other images: {figures} > budget {budget}{accepted}{how}"


def build_text(data: dict) -> str:
    """The build's result (`BuildResult` as a dict) in lines: one per artifact, then its evidence."""
    lines = [f"in {data['deploy_dir']}"]
    for item in data["artifacts"]:
        lines.append(_artifact_line(item))
        comparison = (item.get("calibration") or {}).get("comparison") if item["new"] else None
        if comparison:
            lines += calibration_comparison_lines(comparison)
        if item.get("mixed_precision"):
            lines += ["    " + line for line in mixed_precision_lines(item["mixed_precision"])]
    lines += [f"  note: {note}" for note in data["notes"]]
    return "[bold green]built[/] " + escape("\n".join(lines))  # paths are text, never markup


def _artifact_line(item: dict) -> str:
    size = f"{item.get('bytes', 0) / 1e6:.1f} MB"
    extra = []
    parity = item.get("parity") if item["new"] else None
    if parity and parity.get("argmax_agreement") is not None:
        extra.append(f"agreement with FP32 {parity['argmax_agreement']:.2%} on {parity['inputs']}")
    calibration = item.get("calibration")
    if calibration:
        how = "cached ranges" if calibration["reused_cache"] else f"{calibration['seconds']}s"
        extra.append(f"calibrated {calibration['method']} on {calibration['images']} images ({how})")
        if item["new"] and calibration.get("comparison"):
            extra.append(f"best of {len(calibration['comparison']['rows'])} methods")
    rounding = item.get("weight_rounding") or {}
    if item["new"] and rounding.get("method") == "gptq":
        extra.append(f"weights GPTQ-rounded in {rounding['layers']} layers")
    bias = item.get("bias_correction") or {}
    if bias.get("enabled"):
        under = f" (shift < {bias['threshold']:g}× bias; {len(bias.get('layers_skipped') or {})} left alone)" if bias.get("threshold") else ""
        extra.append(f"biases corrected in {bias['layers_corrected']} layers{under}")
    if item.get("build_seconds") is not None:
        extra.append(f"built in {item['build_seconds']:.1f}s with {item['tensorrt']['flavour']} {item['tensorrt']['version']}")
    state = "" if item["new"] else " (already there)"
    return f"  {item['name']:<14} {item['file']:<22} {size:>9}{state}" + (f"  {'; '.join(extra)}" if extra else "")


# -- bench -----------------------------------------------------------------------------------------

def bench_rows(report: dict) -> list[list[str]]:
    """One row per target of a bench report, formatted; the terminal table and bench.md."""
    rows = []
    for name, target in report["targets"].items():
        lat = (target.get("latency") or {}).get("inference") or {}
        e2e = (target.get("latency") or {}).get("end_to_end") or {}
        acc = target.get("accuracy") or {}
        worst = acc.get("worst_class_delta_iou")
        cells = [(lat, "median", 2), (lat, "p90", 2), (lat, "p99", 2), (lat, "throughput", 1), (e2e, "median", 2),
                 (acc, "miou", 2)]
        rows.append([
            name, target["backend"], target["precision"], *(fmt_number(d.get(k), n) for d, k, n in cells),
            fmt_number(acc.get("delta_miou"), 2, signed=True), fmt_number(acc.get("pixel_agreement"), 3),
            f"{worst['delta']:+.2f} ({worst['class']})" if worst else "–",
        ])
    for skipped in report.get("skipped", []):
        rows.append([skipped["name"], "–", "–", *["–"] * 8, f"skipped: {skipped['reason']}"])
    return rows


def class_mapping_line(report: dict) -> str | None:
    """How the model's classes were scored against the labels, when the two class sets differ (bench.md, the table's footer)."""
    mapping = report.get("class_mapping")
    if not mapping or (mapping["model_classes"] == mapping["dataset_classes"] and not mapping["not_evaluated"]):
        return None
    return (f"the model outputs {mapping['model_classes']} classes, the data has {mapping['dataset_classes']}, "
            f"{mapping['evaluated_classes']} evaluated; {mapping['rule']}")


def bench_tables(report: dict, gates: list) -> list[Table]:
    """The bench table (with the class mapping as its caption, if any), and the gate table if any gate ran."""
    mapping = class_mapping_line(report)
    table = Table(title=f"segdeploy bench: {escape(str(report['model']['name']))} on {report['data']['images']} images",
                  caption=escape(f"classes: {mapping}") if mapping else None, caption_justify="left")
    for column in BENCH_COLUMNS:
        table.add_column(column, no_wrap=column in ("artifact",), justify="left" if column in BENCH_COLUMNS[:3] else "right")
    for row in bench_rows(report):
        table.add_row(*map(escape, row))  # cells are text (a skip reason may hold a path), never markup
    if not gates:
        return [table]
    verdicts = Table(title="gates")
    for column in ("gate", "artifact", "result", "verdict"):
        verdicts.add_column(column)
    for gate in gates:
        verdicts.add_row(gate.gate, gate.target, gate.detail, "[green]pass[/]" if gate.passed else "[bold red]FAIL[/]")
    return [table, verdicts]


# -- pipeline / run / inspect ----------------------------------------------------------------------

def pipeline_table(out, rows: list[dict]) -> Table:
    table = Table(title=f"segdeploy pipeline → {escape(str(out))}")
    for column in PIPELINE_COLUMNS:
        table.add_column(column, justify="left" if column in PIPELINE_COLUMNS[:4] else "right")
    for row in rows:
        if "skipped" in row:
            table.add_row(row["model"], row["artifact"], "–", "–", f"skipped: {escape(row['skipped'])}", *["–"] * 5)
            continue
        table.add_row(row["model"], row["artifact"], row["backend"], row["precision"],
                      *(fmt_number(row[k], d) for k, d in (("p50_ms", 2), ("p99_ms", 2), ("throughput", 1), ("miou", 2))),
                      fmt_number(row["delta_miou"], 2, signed=True), fmt_number(row["pixel_agreement"], 2))
    return table


def run_text(summary: dict) -> str:
    lat = summary["latency_ms"]
    return (f"segmented {summary['frames']} frame(s) with {summary['artifact']} → {summary['out_dir']}\n"
            f"latency per frame (preprocess + inference + argmax + resize): median {lat['median']:.2f} ms, "
            f"p90 {lat['p90']:.2f} ms, max {lat['max']:.2f} ms")


def precision_text(report: dict, limit: int) -> str:
    """`inspect precision`'s table (a `PrecisionReport` as a dict), worst first."""
    lines = [f"{report['artifact']}: {report['tensors']} quantized tensors, measured on {report['inputs']}; worst first",
             f"{'#':>3}  {'kind':<10} {'worst ch dB':>11} {'SQNR dB':>8} {'rel err':>8} {'vs FP32 dB':>10}  tensor → read by"]
    for index, row in enumerate(report["rows"][:limit], 1):
        readers = ", ".join(row["consumers"][:2]) + (" …" if len(row["consumers"]) > 2 else "")
        lines.append(f"{index:>3}  {row['kind']:<10} {fmt_number(row['worst_channel_sqnr_db'], 1):>11} "
                     f"{fmt_number(row['sqnr_db'], 1):>8} {fmt_number(row['relative_error'], 4):>8} "
                     f"{fmt_number(row['sqnr_vs_fp32_db'], 1):>10}  {row['tensor']} → {readers}")
    if report["plot"]:
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)
