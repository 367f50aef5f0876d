"""bench.json, bench.md (a table for a pull-request comment), junit.xml (one test case per gate), plots."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

from segdeploy.atomic import atomic_write_text
from segdeploy.errors import SegdeployError

COLUMNS = ("artifact", "backend", "precision", "p50 ms", "p90 ms", "p99 ms", "img/s", "e2e p50 ms",
           "mIoU", "ΔmIoU", "agree %", "worst ΔIoU")


def table_rows(report: dict) -> list[list[str]]:
    """One row per target, formatted; used by bench.md and the terminal table."""
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


def fmt_number(value, digits: int = 2, signed: bool = False) -> str:
    """A table cell: fixed digits, optional sign, an en dash for a missing figure."""
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [f"## segdeploy bench — {report['model']['name']}", ""]
    env = report["environment"]
    lines.append(f"{report['data']['images']} images from `{report['data']['path']}`; batch {report['settings']['batch']}; "
                 f"{env.get('cpu')} ({env.get('cpu_count')} cores){', ' + env['gpu'] if env.get('gpu') else ''}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    lines += _mixed_section(report)
    gates = report.get("gates", {}).get("results", [])
    if gates:
        verdict = "passed" if report["gates"]["passed"] else "FAILED"
        lines += ["", f"**Gates {verdict}**", "", "| gate | artifact | result | |", "|---|---|---|---|"]
        lines += [f"| {g['gate']} | {g['target']} | {g['detail']} | {'✅' if g['passed'] else '❌'} |" for g in gates]
    return "\n".join(lines) + "\n"


def _mixed_section(report: dict) -> list[str]:
    """Evidence for INT8 graphs built within an mIoU budget (`build --max-miou-drop`), as recorded at build time."""
    from segdeploy.precision.mixed import summary_lines

    lines = []
    for name, target in report["targets"].items():
        if target.get("mixed_precision"):
            lines += ["", f"**{name}: INT8 within a budget** (measured at build time)", ""]
            lines += [f"- {line}" for line in summary_lines(target["mixed_precision"])]
    return lines


def junit(report: dict) -> str:
    gates = report.get("gates", {}).get("results", [])
    failures = sum(not g["passed"] for g in gates)
    cases = []
    for g in gates:
        name = quoteattr(f"{g['gate']}[{g['target']}]")
        body = "" if g["passed"] else f"<failure message={quoteattr(g['detail'])}/>"
        cases.append(f'    <testcase classname="segdeploy.bench" name={name}>{body}</testcase>')
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<testsuite name="segdeploy-bench" tests="{len(gates)}" failures="{failures}" errors="0">\n'
        + "\n".join(cases) + ("\n" if cases else "") + "</testsuite>\n"
    )


def save_elsewhere(report: dict, directory: Path, error: OSError) -> SegdeployError:
    """bench.json written to a fallback file when the report folder failed; the error to raise, naming both."""
    from segdeploy.errors import os_error

    stamp = time.strftime("%Y%m%d-%H%M%S")
    fallback = Path(tempfile.gettempdir()) / f"segdeploy-bench-{os.getpid()}-{stamp}.json"
    reason = os_error(error)
    try:
        atomic_write_text(fallback, json.dumps(report, indent=2) + "\n")
    except OSError as second:
        return SegdeployError(f"could not write the reports to {directory}: {reason}; saving them to {fallback} "
                              f"failed too ({os_error(second).message}): the results are lost")
    return SegdeployError(f"could not write the reports to {directory}: {reason.message}; the results were saved "
                          f"to {fallback}", reason.hint)


def write_reports(report: dict, directory: Path, examples: dict | None, *, plots: bool) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"bench.json": json.dumps(report, indent=2) + "\n", "bench.md": markdown(report), "junit.xml": junit(report)}
    written = []
    for filename, text in files.items():
        atomic_write_text(directory / filename, text)
        written.append(directory / filename)
    if plots:
        from segdeploy.bench.plots import write_plots

        written += write_plots(report, directory, examples)
    return written
