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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from segdeploy.atomic import atomic_write_text, sha256_file
from segdeploy.backends import registry
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest import Manifest
from segdeploy.manifest.names import FP32_GRAPH
from segdeploy.manifest.records import BuildState, PipelineState


@dataclass
class ModelEntry:
    name: str
    source: str
    num_classes: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    weights: Path | None = None
    input_shape: str | None = None
    classes: Path | None = None
    dynamic: list[str] = field(default_factory=list)
    preprocess: dict = field(default_factory=dict)
    fuse_preprocess: bool = False  # export --fuse-preprocess (uint8 NHWC in)
    fuse_argmax: bool = False  # export --fuse-argmax (int32 class map out)


@dataclass
class PipelineConfig:
    out: Path
    models: list[ModelEntry]
    precisions: list[str] = field(default_factory=lambda: ["fp32", "fp16", "int8"])
    backends: list[str] = field(default_factory=lambda: ["onnxruntime"])
    data: Path | None = None
    split: str | None = None
    calib: Path | None = None
    calib_size: int = 100
    calib_method: str = "minmax"
    int8_miou_budget: float | None = None  # build --miou-budget (INT8 within a budget)
    eval_data: Path | None = None  # build --eval-data (with int8_miou_budget)
    eval_limit: int | None = None
    bench: dict = field(default_factory=dict)
    deprecated: list[str] = field(default_factory=list)  # deprecation lines for the user (old key spellings)


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


def load_config(path: Path, out: Path | None = None) -> PipelineConfig:
    if not path.is_file():
        raise SegdeployError(f"pipeline config not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise their own error types
        raise SegdeployError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    return parse_config(raw, path.parent, out)


def parse_config(raw, base: Path, out: Path | None = None) -> PipelineConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list) or not raw["models"]:
        raise UsageError("a pipeline config needs a non-empty `models:` list")
    known = set(PipelineConfig.__dataclass_fields__) - {"models", "deprecated"} | {OLD_BUDGET_KEY}
    unknown = set(raw) - known - {"models"}
    if unknown:
        raise UsageError(f"unknown pipeline config key(s): {', '.join(sorted(unknown))}; valid: models, {', '.join(sorted(known))}")
    resolve = lambda v: None if v is None else (base / v if not Path(v).is_absolute() else Path(v))  # noqa: E731
    models = [_model_entry(m, i, resolve) for i, m in enumerate(raw["models"])]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UsageError(f"model names must be unique in a pipeline config: {names}")
    config = PipelineConfig(
        out=out or resolve(raw.get("out", "deploy/pipeline")), models=models,
        precisions=list(raw.get("precisions", ["fp32", "fp16", "int8"])),
        backends=list(raw.get("backends", ["onnxruntime"])), data=resolve(raw.get("data")), split=raw.get("split"),
        calib=resolve(raw.get("calib")), calib_size=int(raw.get("calib_size", 100)),
        calib_method=raw.get("calib_method", "minmax"), int8_miou_budget=_budget(raw),
        eval_data=resolve(raw.get("eval_data")), eval_limit=_number(raw, "eval_limit", int), bench=dict(raw.get("bench") or {}),
    )
    if OLD_BUDGET_KEY in raw:
        config.deprecated.append(f"pipeline key {OLD_BUDGET_KEY} is deprecated: use int8_miou_budget")
    from segdeploy.precision.mixed import budget_options, check_budget

    # checked before any export runs, not after the first model's
    check_budget(budget_options(config.int8_miou_budget, config.eval_data, config.eval_limit), config.precisions)
    _check_precisions(config)
    return config


def _check_precisions(config: PipelineConfig) -> None:
    """Each precision must be built by at least one of the config's backends (bf16: OpenVINO only)."""
    specs = [registry.backend(name) for name in config.backends]
    known = {p for spec in registry.BACKENDS.values() for p in spec.precisions}  # others: build's "unknown precision"
    for precision in config.precisions:
        if precision in known and not any(precision in spec.precisions for spec in specs):
            owners = [b.name for b in registry.BACKENDS.values() if precision in b.precisions]
            raise UsageError(f"precision {precision} is built by none of the config's backends ({', '.join(config.backends)})",
                             f"add {' or '.join(owners)} to `backends:`")


OLD_BUDGET_KEY = "int8_max_miou_drop"  # the budget's first spelling, still read


def _budget(raw: dict) -> float | None:
    if OLD_BUDGET_KEY in raw and "int8_miou_budget" in raw:
        raise UsageError(f"give int8_miou_budget only ({OLD_BUDGET_KEY} is its deprecated spelling)")
    return _number(raw, OLD_BUDGET_KEY if OLD_BUDGET_KEY in raw else "int8_miou_budget", float)


def _number(raw: dict, key: str, kind):
    value = raw.get(key)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"pipeline config `{key}` must be a number, got {value!r}") from None


def _model_entry(raw, index: int, resolve) -> ModelEntry:
    if not isinstance(raw, dict) or "source" not in raw:
        raise UsageError(f"models[{index}] needs at least `source:` (a registry name, file.py:Factory or TorchScript file)")
    unknown = set(raw) - set(ModelEntry.__dataclass_fields__)
    if unknown:
        raise UsageError(f"models[{index}]: unknown key(s) {', '.join(sorted(unknown))}")
    source = str(raw["source"])
    target, sep, attr = source.rpartition(":")
    if sep and target.endswith(".py"):
        source = f"{resolve(target)}:{attr}"
    elif Path(source).suffix and not sep:
        source = str(resolve(source))
    return ModelEntry(
        name=str(raw.get("name") or Path(source).stem), source=source, num_classes=raw.get("num_classes"),
        model_kwargs=dict(raw.get("model_kwargs") or {}), weights=resolve(raw.get("weights")),
        input_shape=raw.get("input_shape"), classes=resolve(raw.get("classes")), dynamic=list(raw.get("dynamic") or []),
        preprocess=dict(raw.get("preprocess") or {}),
        fuse_preprocess=bool(raw.get("fuse_preprocess", False)), fuse_argmax=bool(raw.get("fuse_argmax", False)),
    )


# -- running ---------------------------------------------------------------------------------------


@dataclass
class PipelineResult:
    out: Path
    rows: list[dict]
    files: list[Path]
    reused: list[str]
    gates_passed: bool


def run_pipeline(config: PipelineConfig, step: Callable[[str], None] = lambda _: None) -> PipelineResult:
    """Export, build and bench every model of the config; returns the summary rows and files."""
    rows, reused, passed = [], [], True
    for model in config.models:
        directory = config.out / model.name
        if _export(model, directory, step):
            reused.append(f"{model.name}: export")
        for backend in config.backends:
            if _build(config, directory, backend, step):
                reused.append(f"{model.name}: build {backend}")
        step(f"{model.name}: bench")
        result = _bench(config, directory)
        passed = passed and result.passed
        rows.extend(_rows(model.name, result.report))
    files = _write_summary(config.out, rows)
    return PipelineResult(config.out, rows, files, reused, passed)


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
    ))
    manifest = Manifest.load(directory)
    manifest.pipeline = PipelineState(export_key=key)
    manifest.save()
    return False


def _build(config: PipelineConfig, directory: Path, backend: str, step) -> bool:
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.data import find_images
    from segdeploy.precision.graphs import QuantOptions
    from segdeploy.precision.mixed import budget_options

    manifest = Manifest.load(directory)
    calib = config.calib
    calib_key = [sha256_file(p) for p in find_images(calib)] if calib else None
    key = _key({"graph": manifest.artifact(FP32_GRAPH.name).sha256, "precisions": config.precisions, "backend": backend,
                "calib": calib_key, "calib_size": config.calib_size, "method": config.calib_method,
                "budget": [config.int8_miou_budget, config.eval_data, config.eval_limit]})
    state = manifest.pipeline.builds.get(backend) if manifest.pipeline else None
    if state and state.key == key and all(_verifies(manifest, n) for n in state.artifacts):
        return True
    step(f"{directory.name}: build {', '.join(config.precisions)} for {backend}")
    budget = budget_options(config.int8_miou_budget, config.eval_data, config.eval_limit)
    options = BuildOptions(calib=calib, calib_size=config.calib_size, quant=QuantOptions(method=config.calib_method),
                           budget=budget)
    precisions = [p for p in config.precisions if p in registry.backend(backend).precisions]  # bf16: OpenVINO's only
    result = build_artifacts(directory, precisions, backend, options, step=step, warn=lambda _: None)
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

    settings = dict(config.bench)
    gates = GateOptions(**{k: settings.pop(k) for k in ("max_miou_drop", "min_agreement", "max_latency_ms") if k in settings})
    allowed = set(BenchOptions.__dataclass_fields__) - {"data", "split", "gates", "report_dir", "artifacts"}
    unknown = set(settings) - allowed
    if unknown:
        raise UsageError(f"unknown bench setting(s) in the pipeline config: {', '.join(sorted(unknown))}")
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
