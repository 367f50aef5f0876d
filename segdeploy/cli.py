"""The `segdeploy` command line: thin commands over library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy import __version__
from segdeploy.console import Steps, emit, quiet_library_warnings, stdout, user_errors

app = typer.Typer(
    name="segdeploy",
    help="Take PyTorch semantic-segmentation models to the edge: export, build, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _version(value: bool) -> None:
    if value:
        stdout.print(f"segdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """segdeploy: verified ONNX export, FP16/INT8 builds, latency and mIoU drift."""


@app.command("models")
def models_command(as_json: JsonOption = False) -> None:
    """List the architectures in the registry."""
    from segdeploy.cli_render import models_table
    from segdeploy.models import list_specs

    with user_errors():
        rows = [
            {
                "name": s.name,
                "family": s.family,
                "default_input": "x".join(map(str, s.default_input)),
                "parameters": s.parameter_count(),
                "dynamic_hw": s.dynamic_hw,
                "size_multiple": s.size_multiple,
                "description": s.description,
            }
            for s in list_specs()
        ]
        emit(rows, as_json, lambda: stdout.print(models_table(rows)))


@app.command("export")
def export_command(
    source: Annotated[str, typer.Argument(help="Registry name, path/to/file.py:Factory, package.module:Factory, or a TorchScript file.")],
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Deploy directory (default: deploy/<model>).")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="NxCxHxW, e.g. 1x3x512x1024 (default: the model's).")] = None,
    num_classes: Annotated[Optional[int], typer.Option(min=1, help="Number of classes the model outputs.")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Local checkpoint (state_dict, possibly nested).")] = None,
    weights_key: Annotated[Optional[str], typer.Option(help="Key of the state_dict inside the checkpoint (a.b for nested).")] = None,
    unsafe_load: Annotated[bool, typer.Option(help="Allow pickled objects in the checkpoint (only for files you trust).")] = False,
    model_kwargs: Annotated[Optional[str], typer.Option(help='JSON keyword arguments for the model builder, e.g. \'{"width": 0.5}\'.')] = None,
    opset: Annotated[int, typer.Option(min=7, max=23, help="ONNX opset.")] = 11,
    dynamic: Annotated[Optional[str], typer.Option(help="Dynamic axes: any of batch,height,width (or all).")] = None,
    simplify: Annotated[bool, typer.Option(help="Run onnxsim after export.")] = True,
    mean: Annotated[Optional[str], typer.Option(help="Per-channel mean, 0-255 units (default: ImageNet).")] = None,
    std: Annotated[Optional[str], typer.Option(help="Per-channel std, 0-255 units (default: ImageNet).")] = None,
    scale: Annotated[float, typer.Option(help="Pixels are multiplied by this before mean/std.")] = 1.0,
    bgr: Annotated[bool, typer.Option("--bgr", help="The model takes BGR channel order.")] = False,
    resize: Annotated[str, typer.Option(help="How images reach the input size: stretch or letterbox.")] = "stretch",
    classes: Annotated[Optional[Path], typer.Option(help="classes.json: names, palette, ignore_index.")] = None,
    min_agreement: Annotated[float, typer.Option(help="Parity: minimum argmax agreement (fraction).")] = 0.999,
    max_rel_error: Annotated[float, typer.Option(help="Parity: maximum error relative to the logit range.")] = 1e-3,
    fuse_preprocess: Annotated[bool, typer.Option("--fuse-preprocess", help="The graph takes the resized uint8 RGB image, N×H×W×3, and normalises it itself.")] = False,
    fuse_argmax: Annotated[bool, typer.Option("--fuse-argmax", help="The graph outputs an int32 class map, N×H×W, instead of logits.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing export in the deploy directory.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Export a model to a verified ONNX graph in a deploy directory."""
    from segdeploy.cli_render import export_summary
    from segdeploy.export import ExportRequest, export_model, parse_dynamic, parse_input_shape
    from segdeploy.export.fused import Fusion
    from segdeploy.export.parity import ParityThresholds
    from segdeploy.models.loading import parse_model_kwargs
    from segdeploy.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

    with user_errors():
        request = ExportRequest(
            source=source,
            out_dir=out,
            input_shape=parse_input_shape(input_shape) if input_shape else None,
            opset=opset,
            dynamic=parse_dynamic(dynamic),
            simplify=simplify,
            num_classes=num_classes,
            model_kwargs=parse_model_kwargs(model_kwargs),
            weights=weights,
            weights_key=weights_key,
            unsafe_load=unsafe_load,
            preprocess=Preprocess(
                mean=_floats(mean, "--mean") if mean else IMAGENET_MEAN,
                std=_floats(std, "--std") if std else IMAGENET_STD,
                scale=scale,
                channel_order="BGR" if bgr else "RGB",
                resize=resize,
            ),
            classes_file=classes,
            thresholds=ParityThresholds(min_agreement=min_agreement, max_rel_error=max_rel_error),
            force=force,
            fusion=Fusion(preprocess=fuse_preprocess, argmax=fuse_argmax),
        )
        with Steps(quiet=as_json) as steps:
            result = export_model(request, step=steps)
        summary = export_summary(result, steps.timings)
        emit(summary, as_json, lambda: stdout.print(summary["text"], highlight=False))


def _floats(text: str, option: str) -> tuple[float, ...]:
    from segdeploy.errors import UsageError

    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, e.g. 123.675,116.28,103.53; got {text!r}") from None


from segdeploy.cli_bench import bench_command  # noqa: E402
from segdeploy.cli_build import build_command  # noqa: E402
from segdeploy.cli_inspect import inspect_app  # noqa: E402
from segdeploy.cli_pipeline import pipeline_command  # noqa: E402
from segdeploy.cli_run import run_command  # noqa: E402

app.command("build")(build_command)
app.command("bench")(bench_command)
app.command("run")(run_command)
app.command("pipeline")(pipeline_command)
app.add_typer(inspect_app, name="inspect")


def main() -> None:
    quiet_library_warnings()
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    app()


if __name__ == "__main__":
    main()
