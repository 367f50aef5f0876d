"""The `segdeploy` Typer app: one module per command, registered here."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from segdeploy.version import __version__
from segdeploy.cli import bench, build, export, inspect, models, pipeline, run
from segdeploy.cli.console import quiet_library_warnings, stdout

app = typer.Typer(
    name="segdeploy",
    help="Take PyTorch semantic-segmentation models to the edge: export, build, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"segdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """segdeploy: verified ONNX export, FP16/INT8 builds, latency and mIoU drift."""


app.command("models")(models.models_command)
app.command("export")(export.export_command)
app.command("build")(build.build_command)
app.command("bench")(bench.bench_command)
app.command("run")(run.run_command)
app.command("pipeline")(pipeline.pipeline_command)
app.add_typer(inspect.inspect_app, name="inspect")


def main() -> None:
    quiet_library_warnings()
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    app()
