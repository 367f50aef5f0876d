"""`segdeploy inspect ...`: look inside a deploy directory's artifacts (a Typer sub-app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.cli.console import emit, stdout, user_errors
from segdeploy.cli.options import JsonOption

inspect_app = typer.Typer(help="Look inside a deploy directory's artifacts.", no_args_is_help=True)


@inspect_app.command("precision")
def precision_command(
    deploy_dir: Annotated[Path, typer.Argument(help="Deploy directory with an INT8 graph.")],
    artifact: Annotated[Optional[str], typer.Option(help="INT8 graph to inspect (default: onnx-int8-ort, else onnx-int8-trt).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Images to measure on (default: those the graph was calibrated on).")] = None,
    images: Annotated[int, typer.Option(min=1, help="Number of images.")] = 4,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown (and bars plotted), worst first.")] = 20,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="PNG plot path (default: DEPLOY_DIR/precision.<artifact>.png).")] = None,
    plot: Annotated[bool, typer.Option(help="Write the PNG plot.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Per-tensor INT8 quantization error (SQNR, relative error) vs the FP32 graph, worst first, and a plot."""
    from segdeploy.precision.inspect import inspect_precision
    from segdeploy.render import precision_text

    with user_errors():
        report = inspect_precision(deploy_dir, artifact, data=data, images=images, plot_limit=limit, out=out, plot=plot)
        data = report.to_dict()
        emit(data, as_json, lambda: stdout.print(precision_text(data, limit), highlight=False, markup=False))
