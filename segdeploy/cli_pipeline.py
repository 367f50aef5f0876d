"""`segdeploy pipeline`: the Typer command (config → `run_pipeline` → summary table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.console import Steps, emit, stderr, stdout, user_errors


def pipeline_command(
    config: Annotated[Optional[Path], typer.Argument(help="Pipeline YAML/JSON (default: the embedded demo).")] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Root folder for deploy directories and the summary.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Export → build → bench over models × precisions × backends; one table and a Pareto plot."""
    from rich.markup import escape
    from rich.table import Table

    from segdeploy.bench.reports import fmt_number
    from segdeploy.pipeline import demo_config, load_config, run_pipeline

    with user_errors():
        settings = load_config(config, out) if config is not None else demo_config(out)
        with Steps(quiet=as_json) as steps:
            result = run_pipeline(settings, step=steps)
        data = {"out": str(result.out), "rows": result.rows, "files": [str(p) for p in result.files],
                "reused": result.reused, "gates_passed": result.gates_passed}

        def render() -> None:
            table = Table(title=f"segdeploy pipeline → {escape(str(result.out))}")
            for column in ("model", "artifact", "backend", "precision", "p50 ms", "p99 ms", "img/s", "mIoU", "ΔmIoU", "agree %"):
                table.add_column(column, justify="left" if column in ("model", "artifact", "backend", "precision") else "right")
            for row in result.rows:
                if "skipped" in row:
                    table.add_row(row["model"], row["artifact"], "–", "–", f"skipped: {row['skipped']}", *["–"] * 5)
                    continue
                table.add_row(row["model"], row["artifact"], row["backend"], row["precision"],
                              *(fmt_number(row[k], d) for k, d in (("p50_ms", 2), ("p99_ms", 2), ("throughput", 1), ("miou", 2))),
                              fmt_number(row["delta_miou"], 2, signed=True), fmt_number(row["pixel_agreement"], 2))
            stdout.print(table)
            if result.reused:
                stdout.print("reused (inputs unchanged): " + "; ".join(result.reused), highlight=False, markup=False)
            stdout.print("summary: " + ", ".join(str(p) for p in result.files), highlight=False, markup=False)

        emit(data, as_json, render)
        if not result.gates_passed:
            stderr.print("[bold red]pipeline gates failed[/] (see each model's bench/bench.md)", highlight=False)
            raise typer.Exit(1)

