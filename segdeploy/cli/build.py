"""`segdeploy build`: parse options → `build_artifacts` → render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.cli.console import Steps, emit, stderr, stdout, user_errors, warn
from segdeploy.cli.options import Backend, CalibMethod, DeployDir, JsonOption, Precision, WeightRounding, names

TRT = "TensorRT"
OV = "OpenVINO"
CALIB = "Calibration (INT8)"
BUDGET = "INT8 within an mIoU budget"


def build_command(
    deploy_dir: DeployDir,
    precision: Annotated[list[Precision], typer.Option("--precision", "-p", help="fp32, fp16, int8 (bf16: openvino); repeat for several.")],
    backend: Annotated[Backend, typer.Option(help="Runtime to build for.")] = Backend.onnxruntime,
    calib: Annotated[Optional[Path], typer.Option(help="Calibration image folder (or dataset with images/) (default: the project's calib/).", rich_help_panel=CALIB)] = None,
    calib_size: Annotated[int, typer.Option(min=1, help="Number of calibration images (fewer available: warn and use them all).", rich_help_panel=CALIB)] = 100,
    calib_method: Annotated[Optional[CalibMethod], typer.Option(help="Range estimation: minmax, mean-minmax (mean of each image's extremes), entropy or percentile; best: calibrate with each, keep the one agreeing best with FP32. Default, chosen by measurement (README, 'INT8 accuracy'): percentile for onnxruntime, mean-minmax for tensorrt.", rich_help_panel=CALIB)] = None,
    percentile: Annotated[Optional[float], typer.Option(help="Percentile for --calib-method percentile (default: 99.99 for onnxruntime, 99.999 for tensorrt).", rich_help_panel=CALIB)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where calibration caches live (default: the deploy directory).", rich_help_panel=CALIB)] = None,
    bias_correction: Annotated[Optional[bool], typer.Option("--bias-correction/--no-bias-correction", help="Fold the mean output shift that INT8 weight rounding causes into each layer's float bias (one more pass over the calibration images). Default, chosen by measurement: on for onnxruntime, off for tensorrt.", show_default=False, rich_help_panel=CALIB)] = None,
    bias_correction_threshold: Annotated[Optional[float], typer.Option(help="Bias correction leaves a layer's bias alone when its correction would reach this many times the bias in some channel, or the bias is 0 somewhere (NNCF's rule). Default 2 (measured: the same mIoU as correcting every layer); inf corrects every layer, adding a bias where there was none.", show_default=False, rich_help_panel=CALIB)] = None,
    weight_rounding: Annotated[Optional[WeightRounding], typer.Option(help="INT8 Conv weights: gptq rounds each layer's weights for its output on the calibration images (errors compensated within the layer, same scales), nearest rounds each weight alone. Default, chosen by measurement: gptq.", show_default=False, rich_help_panel=CALIB)] = None,
    reduce_range: Annotated[Optional[bool], typer.Option("--reduce-range/--no-reduce-range", help="7-bit weights in the onnxruntime/OpenVINO INT8 graph: exact on x86 CPUs without VNNI, where 8-bit weights' products overflow the 16-bit sums of their INT8 kernels (an 8-bit artifact refuses to run there). Default: on (measured: no mIoU cost); --no-reduce-range for ARM or VNNI-only targets. TensorRT's graph is always 8-bit.", show_default=False, rich_help_panel=CALIB)] = None,
    exclude_nodes: Annotated[Optional[str], typer.Option(help="Comma-separated node names kept in float (INT8).", rich_help_panel=CALIB)] = None,
    exclude_ops: Annotated[Optional[str], typer.Option(help="Comma-separated operator types kept in float (INT8), e.g. Resize.", rich_help_panel=CALIB)] = None,
    miou_budget: Annotated[Optional[float], typer.Option(help="INT8 search budget: keep the fewest sensitive layers in float so INT8 loses at most this many mIoU points against the FP32 graph.", rich_help_panel=BUDGET)] = None,
    max_miou_drop: Annotated[Optional[float], typer.Option(help="Deprecated spelling of --miou-budget (on build; bench's --max-miou-drop is a gate).", rich_help_panel=BUDGET)] = None,
    eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation set for --miou-budget: labelled dataset (mIoU) or image folder (agreement with FP32). Default: --calib's val split if labelled, else its images.", rich_help_panel=BUDGET)] = None,
    eval_limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate on at most this many images.", rich_help_panel=BUDGET)] = None,
    confirm_data: Annotated[Optional[Path], typer.Option(help="Confirmation images for --miou-budget (same kind as --eval-data, sharing no image with it or the calibration images). Default: alternate blocks of the evaluation set confirm.", rich_help_panel=BUDGET)] = None,
    split_block: Annotated[Optional[int], typer.Option(min=1, help="Consecutive images per block when the evaluation set is split into choice and confirmation parts (default 10; also the bootstrap's block).", rich_help_panel=BUDGET)] = None,
    accept_unconfirmed: Annotated[bool, typer.Option(help="Write the graph even when its drop on the confirmation part misses the budget (recorded as unconfirmed).", rich_help_panel=BUDGET)] = False,
    workers: Annotated[int, typer.Option(min=1, help="Processes for the --miou-budget sensitivity ranking (each with 1 onnxruntime thread).", rich_help_panel=BUDGET)] = 1,
    fp16_block_ops: Annotated[Optional[str], typer.Option(help="Extra operator types kept in FP32 in the FP16 graph.")] = None,
    ort_optimize: Annotated[bool, typer.Option(help="onnxruntime: also save each graph with CPU graph optimizations applied.")] = False,
    graph_only: Annotated[bool, typer.Option(help="tensorrt: make the TensorRT-family graphs only, no engine (no TensorRT needed).", rich_help_panel=TRT)] = False,
    min_shapes: Annotated[Optional[str], typer.Option(help="Profile minimum, trtexec syntax: input:1x3x256x256.", rich_help_panel=TRT)] = None,
    opt_shapes: Annotated[Optional[str], typer.Option(help="Profile optimum (default: the export shape).", rich_help_panel=TRT)] = None,
    max_shapes: Annotated[Optional[str], typer.Option(help="Profile maximum.", rich_help_panel=TRT)] = None,
    workspace: Annotated[Optional[int], typer.Option(min=1, help="Workspace limit in MiB.", rich_help_panel=TRT)] = None,
    timing_cache: Annotated[Optional[Path], typer.Option(help="Timing cache file, loaded and saved (where the flavour has one).", rich_help_panel=TRT)] = None,
    builder_optimization_level: Annotated[Optional[int], typer.Option(min=0, max=5, help="Builder optimization level (0-5).", rich_help_panel=TRT)] = None,
    version_compatible: Annotated[bool, typer.Option(help="Engine loadable by later TensorRT versions (where available).", rich_help_panel=TRT)] = False,
    hardware_compatibility_level: Annotated[Optional[str], typer.Option(help="none, ampere_plus or same_compute_capability.", rich_help_panel=TRT)] = None,
    compute_capability: Annotated[Optional[str], typer.Option(help="TensorRT-RTX targets, e.g. 86,89 (default: portable, SM80+).", rich_help_panel=TRT)] = None,
    device: Annotated[Optional[str], typer.Option(help="OpenVINO device: CPU (default), GPU, NPU or AUTO.", rich_help_panel=OV)] = None,
    ov_cache: Annotated[bool, typer.Option(help="openvino: also store the model compiled for --device (tied to this OpenVINO version).", rich_help_panel=OV)] = False,
    ov_fp32_where_faster: Annotated[Optional[bool], typer.Option("--ov-fp32-where-faster/--no-ov-fp32-where-faster", help="openvino bf16/fp16 on a CPU: layers measured slower in the hint than in FP32 keep FP32 (default: on).", rich_help_panel=OV, show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Build FP32/FP16/INT8 precision graphs and onnxruntime, TensorRT or OpenVINO artifacts."""
    from segdeploy.backends.tensorrt.builder import EngineOptions
    from segdeploy.backends.tensorrt.profiles import parse_shapes
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.precision.graphs import QuantOptions
    from segdeploy.precision.mixed import budget_options
    from segdeploy.render import build_text

    with user_errors():
        options = BuildOptions(
            calib=calib,
            calib_size=calib_size,
            quant=QuantOptions(method=calib_method.value if calib_method else None, percentile=percentile, cache_dir=cache_dir,
                               exclude_nodes=names(exclude_nodes), exclude_ops=names(exclude_ops),
                               bias_correction=bias_correction, bias_correction_threshold=bias_correction_threshold,
                               weight_rounding=weight_rounding.value if weight_rounding else None,
                               reduce_range=reduce_range),
            budget=budget_options(_budget(miou_budget, max_miou_drop), eval_data, eval_limit, confirm_data=confirm_data,
                                  split_block=split_block, accept_unconfirmed=accept_unconfirmed, workers=workers),
            fp16_block_ops=names(fp16_block_ops),
            graph_only=graph_only,
            ort_optimize=ort_optimize,
            device=device,
            ov_cache=ov_cache,
            ov_fp32_where_faster=ov_fp32_where_faster,
            min_shapes=parse_shapes(min_shapes, "--min-shapes"),
            opt_shapes=parse_shapes(opt_shapes, "--opt-shapes"),
            max_shapes=parse_shapes(max_shapes, "--max-shapes"),
            engine=EngineOptions(
                workspace_mib=workspace, timing_cache=timing_cache, builder_optimization_level=builder_optimization_level,
                version_compatible=version_compatible, hardware_compatibility_level=hardware_compatibility_level,
                compute_capabilities=names(compute_capability),
            ),
        )
        progress = CalibrationProgress(quiet=as_json)
        with Steps(quiet=as_json) as steps, progress:
            result = build_artifacts(deploy_dir, [p.value for p in precision], backend.value, options,
                                     step=steps, on_batch=progress, warn=warn)
        data = {"deploy_dir": str(result.directory), "artifacts": result.artifacts, "notes": result.notes}
        data["text"] = build_text(data)  # kept in --json, as before
        emit(data, as_json, lambda: stdout.print(data["text"], highlight=False))


def _budget(miou_budget: float | None, max_miou_drop: float | None) -> float | None:
    """--miou-budget, or its deprecated spelling on build (with a warning); never both."""
    from segdeploy.errors import UsageError

    if max_miou_drop is None:
        return miou_budget
    if miou_budget is not None:
        raise UsageError("give --miou-budget only (--max-miou-drop is its deprecated spelling on build)")
    warn("build --max-miou-drop is deprecated: use --miou-budget (bench --max-miou-drop is the gate against PyTorch)")
    return max_miou_drop


class CalibrationProgress:
    """A Rich progress bar on stderr for calibration batches; silent under --json."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("  calibrating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=stderr, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("calibration", total=total)
        self.bar.update(self.task, completed=done, total=total)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "CalibrationProgress":
        return self

    def __exit__(self, *_) -> None:
        self.close()
