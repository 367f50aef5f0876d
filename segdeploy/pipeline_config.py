"""Pipeline configs: a typed schema, checked completely before any work starts.

Loading is `segdeploy.config_files.read_document` (safe YAML/JSON within size and alias limits).

Schema: every key is known and every value has its type, checked with the key path in the
message (``models[0].fuse_argmax: expected true or false, got the string 'false'``). Lists of
names (``precisions``, ``backends``, ``dynamic``) may be written as one string, which is read
as a one-element list (``dynamic: batch`` = ``[batch]``) and checked like any element — never
split into letters. Model names are plain folder names (letters, digits, ``._-``), so every
deploy directory stays directly under ``out``. Referenced files and folders must exist.
``int8_max_miou_drop`` (the budget's first spelling) is read as ``int8_miou_budget`` with a
deprecation line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from segdeploy.config_files import read_document
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.manifest.names import PRECISIONS

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
BUDGET_KEY = "int8_miou_budget"
OLD_BUDGET_KEY = "int8_max_miou_drop"  # the budget's first spelling, still read
GATE_KEYS = ("max_miou_drop", "min_agreement", "max_latency_ms")  # bench: settings that are gates (`GateOptions`)


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
    calib_method: str | None = None  # None: build's default per target (`precision.graphs.DEFAULT_METHOD`)
    bias_correction: bool | None = None  # build --bias-correction / --no-bias-correction (None: per target)
    bias_correction_threshold: float | None = None  # build --bias-correction-threshold (None: 2; .inf: every layer)
    weight_rounding: str | None = None  # build --weight-rounding gptq|nearest (None: per target)
    reduce_range: bool | None = None  # build --reduce-range / --no-reduce-range (None: on, 7-bit weights)
    int8_miou_budget: float | None = None  # build --miou-budget (INT8 within a budget)
    eval_data: Path | None = None  # build --eval-data (with int8_miou_budget)
    eval_limit: int | None = None
    confirm_data: Path | None = None  # build --confirm-data (with int8_miou_budget)
    split_block: int | None = None  # build --split-block
    accept_unconfirmed: bool = False  # build --accept-unconfirmed
    sensitivity_workers: int = 1  # build --workers (processes for the sensitivity ranking)
    openvino_device: str | None = None  # build --device for the openvino backend (None: CPU)
    openvino_cache: bool = False  # build --ov-cache: also store the model compiled for that device
    bench: dict = field(default_factory=dict)
    deprecated: list[str] = field(default_factory=list)  # deprecation lines for the user (old key spellings)


# -- loading --------------------------------------------------------------------------------


def load_config(path: Path, out: Path | None = None, warn: Callable[[str], None] | None = None) -> PipelineConfig:
    """Read, check and resolve a pipeline config file (relative paths: relative to the file)."""
    return parse_config(read_document(path, "pipeline config"), path.parent, out, source=str(path), warn=warn)


# -- the schema -----------------------------------------------------------------------------


class _Check:
    """The context of one config: where relative paths start and how to name a key in messages."""

    def __init__(self, base: Path, source: str):
        self.base, self.source = base, source

    def fail(self, at: str, message: str, hint: str | None = None):
        raise UsageError(f"pipeline config {self.source}: {at + ': ' if at else ''}{message}", hint)

    def mapping(self, value, at: str, keys: dict[str, Callable], required: tuple[str, ...] = ()) -> dict:
        """Check a mapping against `keys` (key → checker(value, at)); unknown and missing keys are errors."""
        if not isinstance(value, dict):
            self.fail(at, f"expected a mapping of settings, got {_what(value)}")
        unknown = [str(k) for k in value if k not in keys]
        if unknown:
            self.fail(at, f"unknown key(s) {', '.join(map(repr, sorted(unknown)))}; valid: {', '.join(keys)}")
        missing = [k for k in required if value.get(k) is None]
        if missing:
            self.fail(at, f"missing {', '.join(missing)}")
        return {key: keys[key](item, f"{at}.{key}" if at else key) for key, item in value.items()}

    def boolean(self, value, at: str) -> bool:
        if not isinstance(value, bool):
            self.fail(at, f"expected true or false, got {_what(value)}")
        return value

    def integer(self, minimum: int) -> Callable:
        def check(value, at: str) -> int:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                self.fail(at, f"expected a whole number >= {minimum}, got {_what(value)}")
            return value
        return check

    def number(self, minimum: float, maximum: float | None = None, positive: bool = False, infinite: bool = False) -> Callable:
        def check(value, at: str) -> float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (math.isfinite(value) or (infinite and value == math.inf))
            ok = ok and value >= minimum and (maximum is None or value <= maximum) and (not positive or value > 0)
            if not ok:
                span = f"{'> 0' if positive else f'>= {minimum:g}'}" + (f" and <= {maximum:g}" if maximum is not None else "")
                self.fail(at, f"expected a number {span}, got {_what(value)}")
            return float(value)
        return check

    def string(self, value, at: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(at, f"expected a non-empty string, got {_what(value)}")
        return value

    def choice(self, choices: tuple[str, ...]) -> Callable:
        def check(value, at: str) -> str:
            if value not in choices or not isinstance(value, str):
                self.fail(at, f"expected one of {', '.join(choices)}, got {_what(value)}")
            return value
        return check

    def names(self, choices: tuple[str, ...]) -> Callable:
        """A list of distinct names from `choices`; one string is a one-element list (never its letters)."""
        def check(value, at: str) -> list[str]:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items:
                self.fail(at, f"expected a list of {', '.join(choices)}, got {_what(value)}")
            picked = [self.choice(choices)(item, f"{at}[{i}]") for i, item in enumerate(items)]
            return list(dict.fromkeys(picked))
        return check

    def path(self, kind: str) -> Callable:
        """A path (relative to the config file) that must be a `kind`: 'file', 'dir' or 'any' (to be created)."""
        def check(value, at: str) -> Path:
            if not isinstance(value, str) or not value.strip() or "\0" in value:
                self.fail(at, f"expected a path, got {_what(value)}")
            path = Path(value) if Path(value).is_absolute() else self.base / value
            if kind == "file" and not path.is_file():
                self.fail(at, f"{'is a folder, not a file' if path.is_dir() else 'file not found'}: {path}")
            if kind == "dir" and not path.is_dir():
                self.fail(at, f"folder not found: {path}")
            return path
        return check

    def optional(self, checker: Callable) -> Callable:
        return lambda value, at: None if value is None else checker(value, at)


def _what(value) -> str:
    """How a wrong value is named in a message: its YAML kind and, if short, the value itself."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:60]!r}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return {"dict": "a mapping", "list": "a list"}.get(type(value).__name__, type(value).__name__)


def parse_config(raw, base: Path, out: Path | None = None, source: str = "(inline)",
                 warn: Callable[[str], None] | None = None) -> PipelineConfig:
    """Check a loaded config document completely and resolve it; the first problem is one UsageError.

    Deprecation lines are kept in `config.deprecated` and, as they are found (so before any later
    error), passed to `warn`."""
    check = _Check(Path(base), source)
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list) or not raw["models"]:
        raise UsageError(f"pipeline config {source}: a pipeline config needs a non-empty `models:` list")
    deprecated = _old_budget_key(raw, source)
    for line in deprecated:
        (warn or (lambda _: None))(line)
    values = check.mapping(raw, "", _top_level(check), required=("models",))
    if OLD_BUDGET_KEY in values:
        values[BUDGET_KEY] = values.pop(OLD_BUDGET_KEY)
    config = PipelineConfig(out=out or values.pop("out", None) or check.base / "deploy/pipeline", deprecated=deprecated,
                            **values)
    names = [m.name for m in config.models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"pipeline config {source}: model names must be unique; repeated: {', '.join(repeated)}")
    from segdeploy.precision.mixed import check_budget

    # checked before any export runs, not after the first model's
    check_budget(budget_options(config), config.precisions)
    _check_precisions(config, source)
    return config


def _check_precisions(config: PipelineConfig, source: str) -> None:
    """Each precision must be built by at least one of the config's backends (bf16: OpenVINO only)."""
    from segdeploy.backends import registry

    specs = [registry.backend(name) for name in config.backends]
    for precision in config.precisions:
        if not any(precision in spec.precisions for spec in specs):
            owners = [b.name for b in registry.BACKENDS.values() if precision in b.precisions]
            raise UsageError(f"pipeline config {source}: precision {precision} is built by none of the config's backends "
                             f"({', '.join(config.backends)})", f"add {' or '.join(owners)} to `backends:`")


def budget_options(config: PipelineConfig):
    """The config's INT8-budget keys as `build`'s options (None without int8_miou_budget)."""
    from segdeploy.precision.mixed import budget_options as options

    return options(config.int8_miou_budget, config.eval_data, config.eval_limit, confirm_data=config.confirm_data,
                   split_block=config.split_block, accept_unconfirmed=config.accept_unconfirmed,
                   workers=config.sensitivity_workers)


def _old_budget_key(raw: dict, source: str) -> list[str]:
    """The deprecation line for the budget's old spelling; both spellings at once are refused."""
    if OLD_BUDGET_KEY not in raw:
        return []
    if BUDGET_KEY in raw:
        raise UsageError(f"pipeline config {source}: give {BUDGET_KEY} only ({OLD_BUDGET_KEY} is its deprecated spelling)")
    return [f"pipeline key {OLD_BUDGET_KEY} is deprecated: use {BUDGET_KEY}"]


def _top_level(check: _Check) -> dict[str, Callable]:
    from segdeploy.backends.registry import BACKENDS
    from segdeploy.precision.calibration import CALIB_METHODS
    from segdeploy.precision.compare import BEST
    from segdeploy.precision.rounding import WEIGHT_ROUNDINGS

    models = lambda value, at: [_model(check, item, f"models[{i}]") for i, item in enumerate(value)]  # noqa: E731
    return {
        "out": check.path("any"), "models": models, "precisions": check.names(PRECISIONS),
        "backends": check.names(BACKENDS), "data": check.optional(check.path("dir")),
        "split": check.optional(check.string), "calib": check.optional(check.path("dir")),
        "calib_size": check.integer(1), "calib_method": check.choice((*CALIB_METHODS, BEST)),
        "bias_correction": check.optional(check.boolean), "weight_rounding": check.choice(WEIGHT_ROUNDINGS),
        "bias_correction_threshold": check.optional(check.number(0, positive=True, infinite=True)),
        "reduce_range": check.optional(check.boolean),
        BUDGET_KEY: check.optional(check.number(0)), OLD_BUDGET_KEY: check.optional(check.number(0)),
        "eval_data": check.optional(check.path("dir")),
        "eval_limit": check.optional(check.integer(1)),
        "confirm_data": check.optional(check.path("dir")), "split_block": check.optional(check.integer(1)),
        "accept_unconfirmed": check.boolean, "sensitivity_workers": check.integer(1),
        "openvino_device": check.optional(_openvino_device(check)), "openvino_cache": check.boolean,
        "bench": lambda value, at: {} if value is None else check.mapping(value, at, _bench_keys(check)),
    }


def _openvino_device(check: _Check) -> Callable:
    def check_device(value, at: str) -> str:
        from segdeploy.backends.openvino import DEVICES, valid_device_name

        if not isinstance(value, str) or not valid_device_name(value):
            check.fail(at, f"expected an OpenVINO device ({', '.join(DEVICES)}, or one of them numbered like GPU.1), "
                           f"got {_what(value)}")
        return value.upper()
    return check_device


def _bench_keys(check: _Check) -> dict[str, Callable]:
    from segdeploy.backends.registry import BACKENDS
    from segdeploy.data import FORMATS

    count, optional = check.integer, check.optional
    return {
        "iterations": count(1), "warmup": count(0), "warmup_seconds": optional(check.number(0)),
        "duration": optional(check.number(0, positive=True)), "batch": count(1), "rounds": count(1),
        "threads": optional(count(1)), "cuda_graph": check.boolean, "limit": optional(count(1)),
        "eval_batch": count(1), "plots": check.boolean, "data_format": check.choice(FORMATS),
        "backends": optional(check.names(BACKENDS)), "baseline_path": optional(check.path("file")),
        "max_miou_drop": optional(check.number(0)), "min_agreement": optional(check.number(0, 100)),
        "max_latency_ms": optional(check.number(0, positive=True)),
    }


def _model(check: _Check, raw, at: str) -> ModelEntry:
    from segdeploy.export.onnx_export import DYNAMIC_AXES

    keys = {
        "name": check.string, "source": check.string, "num_classes": check.optional(check.integer(1)),
        "model_kwargs": check.optional(_kwargs(check)), "weights": check.optional(check.path("file")),
        "input_shape": check.optional(_shape(check)), "classes": check.optional(_classes(check)),
        "dynamic": check.optional(check.names((*DYNAMIC_AXES, "all"))), "preprocess": check.optional(_preprocess(check)),
        "fuse_preprocess": check.boolean, "fuse_argmax": check.boolean,
    }
    values = check.mapping(raw, at, keys, required=("source",))
    if values.get("name") is not None:  # a bad name is refused before the source is looked up
        _safe_name(check, values["name"], f"{at}.name", derived=False)
    values["source"] = _source(check, values["source"], f"{at}.source")
    values["name"] = _safe_name(check, values.get("name") or Path(values["source"]).stem, f"{at}.name",
                                derived=values.get("name") is None)
    return ModelEntry(**{k: v for k, v in values.items() if v is not None})


def _source(check: _Check, source: str, at: str) -> str:
    """File sources resolved against the config's folder and required to exist; registry names checked."""
    target, sep, attr = source.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{check.path('file')(target, at)}:{attr}"
    if Path(source).suffix and not sep:
        return str(check.path("file")(source, at))
    if not sep:
        from segdeploy.models import get_spec

        try:
            get_spec(source)
        except SegdeployError as exc:  # the refusal (and exit status) of `segdeploy export NAME`, with the key path
            raise SegdeployError(f"pipeline config {check.source}: {at}: {exc.message}", exc.hint) from None
    return source


def _safe_name(check: _Check, name: str, at: str, derived: bool) -> str:
    """A plain folder name, so the deploy directory stays directly under `out` (`../../x` is refused)."""
    if SAFE_NAME.fullmatch(name) and name not in (".", ".."):
        return name
    where = f"the name derived from source ({name!r})" if derived else f"{name!r}"
    check.fail(at, f"{where} is not a plain folder name",
               "use only letters, digits, '.', '_' and '-', at most 100 characters")


def _kwargs(check: _Check) -> Callable:
    def check_kwargs(value, at: str) -> dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and k.isidentifier() for k in value):
            check.fail(at, f"expected a mapping of keyword arguments like {{width: 0.5}}, got {_what(value)}")
        return dict(value)
    return check_kwargs


def _shape(check: _Check) -> Callable:
    def check_shape(value, at: str) -> str:
        from segdeploy.export import parse_input_shape

        if isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            value = "x".join(map(str, value))
        if not isinstance(value, str):
            check.fail(at, f"expected NxCxHxW such as 1x3x96x128, got {_what(value)}")
        try:
            parse_input_shape(value)
        except UsageError as exc:
            check.fail(at, exc.message.replace("--input-shape", "input_shape"), exc.hint)
        return value
    return check_shape


def _classes(check: _Check) -> Callable:
    def check_classes(value, at: str) -> Path:
        from segdeploy.classes import load_classes

        path = check.path("file")(value, at)
        try:
            load_classes(path)
        except SegdeployError as exc:
            check.fail(at, exc.message, exc.hint)
        return path
    return check_classes


def _preprocess(check: _Check) -> Callable:
    def three(positive: bool) -> Callable:
        def check_three(value, at: str) -> list[float]:
            if not isinstance(value, list) or len(value) != 3:
                check.fail(at, f"expected three numbers (one per channel), got {_what(value)}")
            return [check.number(-math.inf if not positive else 0, positive=positive)(v, f"{at}[{i}]") for i, v in enumerate(value)]
        return check_three

    def check_preprocess(value, at: str) -> dict:
        from segdeploy.preprocess import Preprocess

        keys = {"mean": three(False), "std": three(True), "scale": check.number(0, positive=True),
                "channel_order": check.choice(("RGB", "BGR")), "resize": check.choice(("stretch", "letterbox")),
                "layout": check.choice(("NCHW",)), "dtype": check.choice(("float32",)),
                "extra": check.optional(_kwargs(check))}
        values = check.mapping(value, at, keys)
        try:
            Preprocess.from_dict(values)
        except UsageError as exc:
            check.fail(at, exc.message, exc.hint)
        return values
    return check_preprocess
