"""`segdeploy export`: parse options → `export_model` → render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.cli.console import Steps, emit, stdout, user_errors
from segdeploy.cli.options import JsonOption


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
    classes: Annotated[Optional[Path], typer.Option(help="classes.json: names, palette, ignore_index; a void class the model outputs beyond them (\"void\": {\"index\": N}) is appended.")] = None,
    min_agreement: Annotated[float, typer.Option(help="Parity: minimum argmax agreement (fraction).")] = 0.999,
    max_rel_error: Annotated[float, typer.Option(help="Parity: maximum error relative to the logit range.")] = 1e-3,
    fuse_preprocess: Annotated[bool, typer.Option("--fuse-preprocess", help="The graph takes the resized uint8 RGB image, N×H×W×3, and normalises it itself.")] = False,
    fuse_argmax: Annotated[bool, typer.Option("--fuse-argmax", help="The graph outputs an int32 class map, N×H×W, instead of logits.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing export in the deploy directory.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Export a model to a verified ONNX graph in a deploy directory."""
    from segdeploy.export import ExportRequest, export_model, parse_dynamic, parse_input_shape
    from segdeploy.export.fused import Fusion
    from segdeploy.export.proof import ParityThresholds
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
        data = _summary(result, steps.timings)
        emit(data, as_json, lambda: stdout.print(data["text"], highlight=False))


def _summary(result, timings: dict[str, float]) -> dict:
    """The export's result for --json: paths, sha256, I/O, parity, timings, and the human text."""
    from segdeploy.manifest import FILENAME
    from segdeploy.manifest.names import FP32_GRAPH

    from segdeploy.render import export_text

    entry = result.manifest.artifact(FP32_GRAPH.name)
    data = {
        "deploy_dir": str(result.directory),
        "onnx": str(result.onnx_path),
        "manifest": str(result.directory / FILENAME),
        "sha256": entry.sha256,
        "opset": entry.opset,
        "inputs": [t.to_dict() for t in entry.inputs],
        "outputs": [t.to_dict() for t in entry.outputs],
        "rewrites": result.rewrites,
        "parity": result.parity,
        "timings_s": timings,
    }
    data["text"] = export_text(data, entry.bytes / 1e6)  # kept in --json, as before
    return data


def _floats(text: str, option: str) -> tuple[float, ...]:
    from segdeploy.errors import UsageError

    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, e.g. 123.675,116.28,103.53; got {text!r}") from None
