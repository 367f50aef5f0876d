"""`segdeploy pipeline`: export → build → bench over models × precisions × backends, resumable.

A config (YAML or JSON; relative paths are relative to the config file) lists models and
the matrix; each model gets a deploy directory under `out`. Work already done is reused:
an export whose inputs (source, kwargs, weights bytes, shape, preprocessing, classes) hash
to the key recorded in its manifest, and builds whose inputs (the exported graph's sha256,
precision, backend, calibration images and settings) hash to their recorded key, are
skipped once their files verify. The run ends in one summary table over every
(model, artifact) and a Pareto plot of latency against mIoU.

With no config, the embedded demo runs: the shipped demo U-Net on the shipped `calib/`
data at FP32/FP16/INT8 on onnxruntime (plus TensorRT engines where a flavour is installed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from segdeploy.atomic import atomic_write_text, sha256_file
from segdeploy.backends import registry
from segdeploy.errors import SegdeployError
from segdeploy.manifest import Manifest
from segdeploy.manifest.locking import deploy_lock, is_bookkeeping
from segdeploy.manifest.names import FP32_GRAPH
from segdeploy.manifest.records import BuildState, PipelineState
from segdeploy.pipeline_config import GATE_KEYS, ModelEntry, budget_options, PipelineConfig, load_config, parse_config  # noqa: F401 (public here too)


def demo_config(out: Path | None = None) -> PipelineConfig:
    """The embedded demo: the shipped U-Net on the shipped calib/ data."""
    from segdeploy.data import default_calib_dir

    calib = default_calib_dir()
    meta_path = calib / "demo" / "model.json"
    if not meta_path.is_file():
        raise SegdeployError(f"the demo model is missing ({meta_path})", "run from a checkout of the segdeploy repository")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    model = ModelEntry(
        name="demo_unet", source=meta["architecture"], num_classes=meta["num_classes"], model_kwargs=meta["model_kwargs"],
        weights=calib / "demo" / meta["weights"], input_shape="x".join(map(str, meta["input_shape"])),
        classes=calib / "classes.json", dynamic=["batch"], preprocess=meta.get("preprocess", {}),
    )
    backends = ["onnxruntime"] + (["tensorrt"] if _tensorrt_installed() else [])
    return PipelineConfig(out=out or Path("deploy/demo"), models=[model], backends=backends, data=calib, split="val",
                          calib=calib, bench={"iterations": 50, "warmup": 10})


def _tensorrt_installed() -> bool:
    try:
        from segdeploy.backends.tensorrt.flavour import load_tensorrt

        load_tensorrt()
        return True
    except SegdeployError:
        return False


# -- running ---------------------------------------------------------------------------------------


@dataclass
class PipelineResult:
    out: Path
    rows: list[dict]
    files: list[Path]
    reused: list[str]
    gates_passed: bool


def run_pipeline(config: PipelineConfig, step: Callable[[str], None] = lambda _: None,
                 warn: Callable[[str], None] = lambda _: None) -> PipelineResult:
    """Export, build and bench every model of the config; returns the summary rows and files;
    `warn` hears what each build warns of (too few calibration images, …).

    Every model's deploy directory is checked before any work (`check_outputs`) and locked while
    the pipeline works in it."""
    directories = check_outputs(config)
    _preflight(config)
    rows, reused, passed = [], [], True
    for model in config.models:
        directory = directories[model.name]
        directory.mkdir(parents=True, exist_ok=True)
        with deploy_lock(directory, "pipeline"):
            if _export(model, directory, step):
                reused.append(f"{model.name}: export")
            for backend in config.backends:
                if _build(config, directory, backend, step, lambda text, name=model.name: warn(f"{name}: {text}")):
                    reused.append(f"{model.name}: build {backend}")
            step(f"{model.name}: bench")
            result = _bench(config, directory)
        passed = passed and result.passed
        rows.extend(_rows(model.name, result.report))
    files = _write_summary(config.out, rows)
    return PipelineResult(config.out, rows, files, reused, passed)


def _preflight(config: PipelineConfig) -> None:
    """What a backend needs (OpenVINO installed, its device present, each precision supported) and
    enough calibration images for each backend's INT8 method, checked before the first export
    rather than at the first build."""
    if "int8" in config.precisions:
        from segdeploy.precision.calibration import check_enough, select_images
        from segdeploy.precision.graphs import QuantOptions

        calib = select_images(config.calib, config.calib_size, warn=lambda _: None)
        for name in config.backends:
            check_enough(calib, QuantOptions(method=config.calib_method).method_for(registry.backend(name).graph_target))
    if "openvino" in config.backends:
        from segdeploy.backends.openvino import preflight

        spec = registry.backend("openvino")
        preflight([p for p in config.precisions if p in spec.precisions], config.openvino_device, config.openvino_cache)


def check_outputs(config: PipelineConfig) -> dict[str, Path]:
    """Each model's deploy directory `out/<name>`; refused before any work when writing there could
    destroy what is not a deploy directory this pipeline made (a user's folder, another export, a link)."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise SegdeployError(f"pipeline out {out} exists and is not a folder", "choose another out:")
    directories = {}
    for model in config.models:
        directory = out / model.name
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            raise SegdeployError(f"{directory} is {'a symbolic link' if directory.is_symlink() else 'not a folder'}; "
                                 "the pipeline writes only its own folders under out", "give the model another name:")
        if Manifest.exists(directory):
            if Manifest.load(directory).pipeline is None:
                raise SegdeployError(f"{directory} holds an export not made by a pipeline; the pipeline would replace it",
                                     "give the model another name: or out:, or move that folder away")
        elif directory.is_dir() and any(not is_bookkeeping(p.name) for p in directory.iterdir()):
            raise SegdeployError(f"{directory} is not empty and is not a deploy directory",
                                 "give the model another name: or out:")
        directories[model.name] = directory
    return directories


def _key(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _export(model: ModelEntry, directory: Path, step) -> bool:
    """Export unless an export with the same inputs is there and verifies; True when reused."""
    from segdeploy.export import ExportRequest, export_model, parse_dynamic, parse_input_shape
    from segdeploy.export.fused import Fusion
    from segdeploy.preprocess import Preprocess

    key = _key({"model": model.__dict__, "weights_sha256": sha256_file(model.weights) if model.weights and model.weights.is_file() else None,
                "classes_sha256": sha256_file(model.classes) if model.classes and model.classes.is_file() else None})
    if Manifest.exists(directory):
        manifest = Manifest.load(directory)
        if manifest.pipeline and manifest.pipeline.export_key == key and _verifies(manifest, FP32_GRAPH.name):
            return True
    step(f"{model.name}: export")
    export_model(ExportRequest(
        source=model.source, out_dir=directory, num_classes=model.num_classes, model_kwargs=model.model_kwargs,
        weights=model.weights, input_shape=parse_input_shape(model.input_shape) if model.input_shape else None,
        dynamic=parse_dynamic(",".join(model.dynamic)), classes_file=model.classes,
        preprocess=Preprocess.from_dict(model.preprocess) if model.preprocess else Preprocess(), force=True,
        fusion=Fusion(model.fuse_preprocess, model.fuse_argmax),
        pipeline=PipelineState(export_key=key),  # written with the export: marks the directory as ours
    ))
    return False


def _build(config: PipelineConfig, directory: Path, backend: str, step, warn) -> bool:
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.data import find_images
    from segdeploy.precision.graphs import QuantOptions

    manifest = Manifest.load(directory)
    calib = config.calib
    calib_key = [sha256_file(p) for p in find_images(calib)] if calib else None
    target = registry.backend(backend).graph_target  # the INT8 settings the build will use, defaults resolved
    quant = QuantOptions(method=config.calib_method, bias_correction=config.bias_correction, weight_rounding=config.weight_rounding,
                         reduce_range=config.reduce_range)
    if quant.bias_correction_for(target):  # one config for every backend: the threshold goes where correction runs
        quant.bias_correction_threshold = config.bias_correction_threshold
    key = _key({"graph": manifest.artifact(FP32_GRAPH.name).sha256, "precisions": config.precisions, "backend": backend,
                "calib": calib_key, "calib_size": config.calib_size, "method": quant.method_for(target),
                "percentile": quant.percentile_for(target), "bias_correction": quant.bias_correction_for(target),
                "bias_threshold": quant.bias_threshold() if quant.bias_correction_for(target) else None,
                "weight_rounding": quant.weight_rounding_for(target), "reduce_range": quant.target_for(target).reduce_range,
                "budget": [config.int8_miou_budget, config.eval_data, config.eval_limit, config.confirm_data,
                           config.split_block, config.accept_unconfirmed]}
                | ({"openvino": [config.openvino_device, config.openvino_cache]} if backend == "openvino" else {}))
    state = manifest.pipeline.builds.get(backend) if manifest.pipeline else None
    if state and state.key == key and all(_verifies(manifest, n) for n in state.artifacts):
        return True
    step(f"{directory.name}: build {', '.join(config.precisions)} for {backend}")
    budget = budget_options(config)
    openvino = {"device": config.openvino_device, "ov_cache": config.openvino_cache} if backend == "openvino" else {}
    options = BuildOptions(calib=calib, calib_size=config.calib_size, quant=quant, budget=budget, **openvino)
    precisions = [p for p in config.precisions if p in registry.backend(backend).precisions]  # bf16: OpenVINO's only
    result = build_artifacts(directory, precisions, backend, options, step=step, warn=warn)
    manifest = Manifest.load(directory)
    manifest.pipeline = manifest.pipeline or PipelineState(export_key="")
    manifest.pipeline.builds[backend] = BuildState(key=key, artifacts=[a["name"] for a in result.artifacts])
    manifest.save()
    return False


def _verifies(manifest: Manifest, name: str) -> bool:
    try:
        manifest.verify(name)
        return True
    except SegdeployError:
        return False


def _bench(config: PipelineConfig, directory: Path):
    from segdeploy.bench.gates import GateOptions
    from segdeploy.bench.benchmark import BenchOptions, run_bench

    settings = dict(config.bench)  # keys and values checked with the config (`pipeline_config`)
    gates = GateOptions(**{k: settings.pop(k) for k in GATE_KEYS if k in settings})
    options = BenchOptions(data=config.data, split=config.split, gates=gates, **settings)
    return run_bench(directory, options)


def _rows(model: str, report: dict) -> list[dict]:
    rows = []
    for name, target in report["targets"].items():
        inference = (target.get("latency") or {}).get("inference") or {}
        accuracy = target.get("accuracy") or {}
        rows.append({"model": model, "artifact": name, "backend": target["backend"], "precision": target["precision"],
                     "p50_ms": inference.get("median"), "p99_ms": inference.get("p99"),
                     "throughput": inference.get("throughput"), "miou": accuracy.get("miou"),
                     "delta_miou": accuracy.get("delta_miou"), "pixel_agreement": accuracy.get("pixel_agreement")})
    for skipped in report.get("skipped", []):
        rows.append({"model": model, "artifact": skipped["name"], "skipped": skipped["reason"]})
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower latency and higher mIoU."""
    front = []
    for i, (lat, miou) in enumerate(points):
        dominated = any((l2 <= lat and m2 >= miou) and (l2 < lat or m2 > miou) for j, (l2, m2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _write_summary(out: Path, rows: list[dict]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps({"rows": rows}, indent=2) + "\n")
    files = [out / "summary.json"]
    measured = [r for r in rows if r.get("p50_ms") is not None and r.get("miou") is not None]
    if measured:
        from segdeploy.bench.plots import pareto_plot

        files.append(pareto_plot(measured, pareto_front([(r["p50_ms"], r["miou"]) for r in measured]), out / "pareto.png"))
    return files
