"""bench.json, bench.md (a table for a pull-request comment), junit.xml (one test case per gate), plots."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

from segdeploy.atomic import atomic_write_text
from segdeploy.errors import SegdeployError, os_error
from segdeploy.render import BENCH_COLUMNS, bench_rows, class_mapping_line, mixed_precision_lines


def markdown(report: dict) -> str:
    lines = [f"## segdeploy bench — {report['model']['name']}", ""]
    env = report["environment"]
    lines.append(f"{report['data']['images']} images from `{report['data']['path']}`; batch {report['settings']['batch']}; "
                 f"{env.get('cpu')} ({env.get('cpu_count')} cores){', ' + env['gpu'] if env.get('gpu') else ''}")
    lines += ["", "| " + " | ".join(BENCH_COLUMNS) + " |", "|" + "---|" * len(BENCH_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in bench_rows(report)]
    mapping = class_mapping_line(report)
    lines += ["", f"**Classes:** {mapping}"] if mapping else []
    lines += _mixed_section(report)
    gates = report.get("gates", {}).get("results", [])
    if gates:
        verdict = "passed" if report["gates"]["passed"] else "FAILED"
        lines += ["", f"**Gates {verdict}**", "", "| gate | artifact | result | |", "|---|---|---|---|"]
        lines += [f"| {g['gate']} | {g['target']} | {g['detail']} | {'✅' if g['passed'] else '❌'} |" for g in gates]
    return "\n".join(lines) + "\n"


def _mixed_section(report: dict) -> list[str]:
    """Evidence for INT8 graphs built within an mIoU budget (`build --miou-budget`), as recorded at build time."""
    lines = []
    for name, target in report["targets"].items():
        if target.get("mixed_precision"):
            lines += ["", f"**{name}: INT8 within a budget** (measured at build time)", ""]
            lines += [f"- {line}" for line in mixed_precision_lines(target["mixed_precision"])]
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
