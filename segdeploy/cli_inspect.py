"""`segdeploy inspect ...`: look inside a deploy directory's artifacts (Typer sub-app).

Registered in cli.py with `app.add_typer(inspect_app, name="inspect")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.console import emit, stdout, user_errors

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
    as_json: Annotated[bool, typer.Option("--json", help="Print every row as JSON.")] = False,
) -> None:
    """Per-tensor INT8 quantization error (SQNR, relative error) vs the FP32 graph, worst first, and a plot."""
    from segdeploy.precision.inspect import inspect_precision

    with user_errors():
        report = inspect_precision(deploy_dir, artifact, data=data, images=images, plot_limit=limit, out=out, plot=plot)
        emit(report.to_dict(), as_json, lambda: stdout.print(_table(report, limit), highlight=False, markup=False))


def _table(report, limit: int) -> str:
    from segdeploy.bench.reports import fmt_number

    lines = [f"{report.artifact}: {len(report.rows)} quantized tensors, measured on {report.inputs}; worst first",
             f"{'#':>3}  {'kind':<10} {'worst ch dB':>11} {'SQNR dB':>8} {'rel err':>8} {'vs FP32 dB':>10}  tensor → read by"]
    for index, row in enumerate(report.rows[:limit], 1):
        readers = ", ".join(row["consumers"][:2]) + (" …" if len(row["consumers"]) > 2 else "")
        lines.append(f"{index:>3}  {row['kind']:<10} {fmt_number(row['worst_channel_sqnr_db'], 1):>11} {fmt_number(row['sqnr_db'], 1):>8} {fmt_number(row['relative_error'], 4):>8} "
                     f"{fmt_number(row['sqnr_vs_fp32_db'], 1):>10}  {row['tensor']} → {readers}")
    if report.plot:
        lines.append(f"plot: {report.plot}")
    return "\n".join(lines)
