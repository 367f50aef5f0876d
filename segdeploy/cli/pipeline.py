"""`segdeploy pipeline`: config → `run_pipeline` → summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.cli.console import Steps, emit, stderr, stdout, user_errors, warn
from segdeploy.cli.options import JsonOption


def pipeline_command(
    config: Annotated[Optional[Path], typer.Argument(help="Pipeline YAML/JSON (default: the embedded demo).")] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Root folder for deploy directories and the summary.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Export → build → bench over models × precisions × backends; one table and a Pareto plot."""
    from segdeploy.pipeline import demo_config, load_config, run_pipeline
    from segdeploy.render import pipeline_table

    with user_errors():
        settings = load_config(config, out, warn=warn) if config is not None else demo_config(out)
        with Steps(quiet=as_json) as steps:
            result = run_pipeline(settings, step=steps, warn=warn)
        data = {"out": str(result.out), "rows": result.rows, "files": [str(p) for p in result.files],
                "reused": result.reused, "gates_passed": result.gates_passed}

        def render() -> None:
            stdout.print(pipeline_table(result.out, result.rows))
            if result.reused:
                stdout.print("reused (inputs unchanged): " + "; ".join(result.reused), highlight=False, markup=False)
            stdout.print("summary: " + ", ".join(str(p) for p in result.files), highlight=False, markup=False)

        emit(data, as_json, render)
        if not result.gates_passed:
            stderr.print("[bold red]pipeline gates failed[/] (see each model's bench/bench.md)", highlight=False)
            raise typer.Exit(1)

