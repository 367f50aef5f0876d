"""`segdeploy bench`: parse options → `run_bench` → render; exit 1 on a failed gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from segdeploy.cli.console import Steps, emit, stderr, stdout, user_errors
from segdeploy.cli.options import DeployDir, JsonOption

GATES = "Gates (exit 1 when one fails)"
TIMING = "Latency"


def bench_command(
    deploy_dir: DeployDir,
    data: Annotated[Optional[Path], typer.Option(help="Dataset or image folder (default: the project's calib/, val split).")] = None,
    data_format: Annotated[str, typer.Option(help="auto, canonical, voc, cityscapes or images.")] = "auto",
    split: Annotated[Optional[str], typer.Option(help="Dataset split (e.g. val).")] = None,
    artifact: Annotated[Optional[list[str]], typer.Option("--artifact", "-a", help="Artifact to bench (repeat); default: all that can run here.")] = None,
    backend: Annotated[Optional[list[str]], typer.Option(help="Only artifacts of this backend (repeat).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate only the first N images.")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up iterations.", rich_help_panel=TIMING)] = 10,
    warmup_seconds: Annotated[Optional[float], typer.Option(help="Warm up for this many seconds instead.", rich_help_panel=TIMING)] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Timed iterations (the minimum, with --duration).", rich_help_panel=TIMING)] = 50,
    duration: Annotated[Optional[float], typer.Option(help="Time each target for this many seconds.", rich_help_panel=TIMING)] = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size for latency (needs a dynamic-batch export if > 1).", rich_help_panel=TIMING)] = 1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Intra-op threads (onnxruntime, PyTorch).", rich_help_panel=TIMING)] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Time targets in this many interleaved rounds (order rotated each round).", rich_help_panel=TIMING)] = 5,
    cuda_graph: Annotated[bool, typer.Option(help="TensorRT engines: replay inference as a CUDA graph (like trtexec --useCudaGraph).", rich_help_panel=TIMING)] = False,
    max_miou_drop: Annotated[Optional[float], typer.Option(help="Fail if an artifact's mIoU is more than this many points below PyTorch (a gate; build's INT8 search budget is --miou-budget).", rich_help_panel=GATES)] = None,
    min_agreement: Annotated[Optional[float], typer.Option(help="Fail if fewer than this % of pixels agree with PyTorch.", rich_help_panel=GATES)] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option(help="Fail if an artifact's latency exceeds this.", rich_help_panel=GATES)] = None,
    latency_stat: Annotated[str, typer.Option(help="Statistic the latency gates use: p50, p90 or p99.", rich_help_panel=GATES)] = "p50",
    baseline: Annotated[Optional[Path], typer.Option(help="A previous bench.json to compare with.", rich_help_panel=GATES)] = None,
    max_slowdown: Annotated[Optional[float], typer.Option(help="With --baseline: fail if latency exceeds this ratio of the baseline's.", rich_help_panel=GATES)] = None,
    baseline_miou_tolerance: Annotated[float, typer.Option(help="With --baseline: mIoU points an artifact may lose.", rich_help_panel=GATES)] = 0.5,
    report_dir: Annotated[Optional[Path], typer.Option(help="Where reports go (default: DEPLOY_DIR/bench).")] = None,
    unsafe_load: Annotated[bool, typer.Option(help="Rebuild the PyTorch reference from a checkpoint exported with --unsafe-load (only if you trust it).")] = False,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Latency, mIoU and drift of every artifact against the PyTorch original; gates for CI."""
    from segdeploy.bench.gates import GateOptions
    from segdeploy.bench.benchmark import BenchOptions, run_bench
    from segdeploy.errors import UsageError

    with user_errors():
        if max_slowdown is not None and baseline is None:
            raise UsageError("--max-slowdown needs --baseline")
        options = BenchOptions(
            data=data, data_format=data_format, split=split, artifacts=artifact or None, backends=backend or None,
            warmup=warmup, warmup_seconds=warmup_seconds, iterations=iterations, duration=duration, batch=batch, rounds=rounds,
            threads=threads, cuda_graph=cuda_graph, limit=limit, report_dir=report_dir, plots=plots, baseline_path=baseline,
            unsafe_load=unsafe_load,
            gates=GateOptions(max_miou_drop=max_miou_drop, min_agreement=min_agreement, max_latency_ms=max_latency_ms,
                              latency_stat=latency_stat, max_slowdown=max_slowdown,
                              baseline_miou_tolerance=baseline_miou_tolerance),
        )
        with Steps(quiet=as_json) as steps:
            result = run_bench(deploy_dir, options, step=steps)
        emit(result.report, as_json, lambda: _print(result))
        if not result.passed:
            failed = [g for g in result.gates if not g.passed]
            stderr.print(f"[bold red]bench gates failed:[/] {len(failed)} of {len(result.gates)}", highlight=False)
            raise typer.Exit(1)


def _print(result) -> None:
    """The bench table, the gate table (if any gates ran) and where the reports are."""
    from segdeploy.render import bench_tables

    for table in bench_tables(result.report, result.gates):
        stdout.print(table)
    stdout.print(f"reports: {', '.join(str(p) for p in result.files)}", highlight=False, markup=False)
