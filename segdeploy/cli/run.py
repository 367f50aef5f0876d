"""`segdeploy run`: parse → `segment_inputs` → render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.cli.console import emit, stderr, stdout, user_errors
from segdeploy.cli.options import JsonOption, ThreadsOption


def run_command(
    deploy_dir: Annotated[Path, typer.Argument(help="Deploy directory, or one artifact file inside it.")],
    inputs: Annotated[list[Path], typer.Argument(help="Images, folders of images, or video files.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Where overlays and class maps go.")] = Path("segmented"),
    artifact: Annotated[Optional[str], typer.Option(help="Artifact to run (default: the best that runs here).")] = None,
    threads: ThreadsOption = None,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Overlay opacity.")] = 0.5,
    as_json: JsonOption = False,
) -> None:
    """Segment images, folders or a video: colourised overlays + raw class maps, and a timing summary."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from segdeploy.render import run_text
    from segdeploy.segment import segment_inputs

    with user_errors():
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} frames"),
                            TimeElapsedColumn(), console=stderr, disable=as_json or not stderr.is_terminal, transient=True)
        with progress:
            task = progress.add_task("segmenting", total=None)
            result = segment_inputs(deploy_dir, inputs, out, artifact=artifact, threads=threads, alpha=alpha,
                                    on_frame=lambda name: progress.update(task, advance=1, description=name))
        summary = {"artifact": result.artifact, "frames": result.frames, "out_dir": str(result.out_dir),
                   "latency_ms": result.latency}
        emit(summary, as_json, lambda: stdout.print(run_text(summary), highlight=False, markup=False))
