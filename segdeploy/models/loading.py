"""Model sources and checkpoints.

A model source is one of:

* a registry name (`deeplabv3_resnet50`, see `segdeploy models`);
* a user factory, `path/to/file.py:Factory` or `package.module:Factory`, called with
  the user's keyword arguments (the file's folder is put on `sys.path` so that the
  file's own imports of sibling modules work);
* a TorchScript file (`torch.jit.save` output).

Checkpoints are loaded with `torch.load(weights_only=True)` unless the user explicitly
allows unsafe (pickle) loading.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from segdeploy.errors import SegdeployError, UsageError

# Keys under which training scripts commonly nest the state_dict, tried in order.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "ema")
# Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
# Sub-modules that a deployable model drops (auxiliary training heads).
AUX_PREFIXES = ("aux_classifier.", "aux.", "aux_head.")
SHOWN = 5  # how many offending keys an error lists
INIT_SEED = 0


@dataclass
class LoadedModel:
    module: nn.Module
    source: str
    kind: str  # "registry" | "factory" | "torchscript"
    name: str
    info: dict = field(default_factory=dict)


def parse_model_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--model-kwargs is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(kwargs, dict):
        raise UsageError('--model-kwargs must be a JSON object, e.g. \'{"num_classes": 12}\'')
    return kwargs


def load_model(
    source: str,
    *,
    num_classes: int | None = None,
    model_kwargs: dict | None = None,
    weights: str | Path | None = None,
    weights_key: str | None = None,
    unsafe_load: bool = False,
) -> LoadedModel:
    """Resolve a model source to an eval-mode nn.Module, with weights loaded if given."""
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    # Seeded initialisation: a model exported without a checkpoint can be rebuilt identically
    # (bench's PyTorch reference), which the weights fingerprint then confirms.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        loaded = _resolve(source, kwargs)
    if weights is not None:
        state = read_state_dict(weights, key=weights_key, unsafe_load=unsafe_load)
        loaded.info["weights_ignored_keys"] = apply_state_dict(loaded.module, state, weights)
        loaded.info["weights"] = str(weights)
    loaded.module.eval()
    return loaded


def _resolve(source: str, kwargs: dict) -> LoadedModel:
    from segdeploy.models import REGISTRY, get_spec

    target, sep, attr = source.rpartition(":")
    if sep and attr.isidentifier() and (target.endswith(".py") or _looks_like_module(target)):
        factory = _import_factory(target, attr)
        module = _call_factory(factory, source, kwargs)
        return LoadedModel(module, source, "factory", attr)
    path = Path(source)
    if source not in REGISTRY and (path.suffix or path.exists()):
        return LoadedModel(_load_torchscript(path), source, "torchscript", path.stem)
    spec = get_spec(source)  # an unknown name raises, listing the valid ones
    return LoadedModel(spec.build(**kwargs), source, "registry", spec.name)


def _looks_like_module(target: str) -> bool:
    return bool(target) and all(part.isidentifier() for part in target.split("."))


def _import_factory(target: str, attr: str):
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise SegdeployError(f"model file not found: {target}")
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        loader = lambda: spec.loader.exec_module(module)  # noqa: E731
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        module = None
        loader = lambda: importlib.import_module(target)  # noqa: E731
    try:
        result = loader()
        module = module if module is not None else result
    except Exception as exc:  # any import-time failure of user code is a user error
        raise SegdeployError(f"cannot import {target}: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, attr):
        names = sorted(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise SegdeployError(f"{target} has no {attr!r}; callables it defines: {', '.join(names[:10]) or 'none'}")
    return getattr(module, attr)


def _call_factory(factory, source: str, kwargs: dict) -> nn.Module:
    try:
        module = factory(**kwargs)
    except TypeError as exc:
        raise UsageError(f"cannot call {source} with {kwargs}: {exc}", "check --model-kwargs/--num-classes") from None
    if not isinstance(module, nn.Module):
        raise SegdeployError(f"{source} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _load_torchscript(path: Path) -> nn.Module:
    if not path.is_file():
        raise SegdeployError(f"model file not found: {path}", "give a registry name (see `segdeploy models`), file.py:Factory or a TorchScript file")
    if path.suffix.lower() == ".onnx":
        raise SegdeployError(f"{path} is already an ONNX graph; export takes the PyTorch model", "pass the TorchScript file or the model's factory")
    if not zipfile.is_zipfile(path):
        raise SegdeployError(f"{path} is not a TorchScript archive", "name a registry model and pass the checkpoint with --weights")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegdeployError(
            f"{path} is not a TorchScript archive ({first})",
            "for a checkpoint (state_dict), name the architecture and pass the file with --weights",
        ) from None


# -- checkpoints ----------------------------------------------------------------------------


def read_state_dict(path: str | Path, *, key: str | None = None, unsafe_load: bool = False) -> dict:
    """Read a checkpoint and return a flat state_dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise SegdeployError(f"checkpoint {path} is a folder, not a file" if path.is_dir() else f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except Exception as exc:  # torch raises many types for corrupt/unsafe files
        text = str(exc)
        if "weights_only" in text.lower() or "unsupported global" in text.lower():
            raise SegdeployError(
                f"checkpoint {path} contains pickled Python objects, not only tensors",
                "re-save it as a state_dict, or pass --unsafe-load if you trust its origin",
            ) from None
        raise SegdeployError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or corrupt/truncated") from None
    state = _select_state(obj, key, path)
    return _strip_prefixes(state)


def _select_state(obj, key: str | None, path: Path) -> dict:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if key is not None:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                available = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise SegdeployError(f"checkpoint {path} has no key {key!r}; top-level keys: {available}")
            obj = obj[part]
        return _select_state(obj, None, path)
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for candidate in NESTED_KEYS:
            if candidate in obj and isinstance(obj[candidate], (dict, nn.Module)):
                return _select_state(obj[candidate], None, path)
        raise SegdeployError(
            f"checkpoint {path} holds no state_dict I recognise; top-level keys: {', '.join(map(str, list(obj)[:10]))}",
            "choose one with --weights-key",
        )
    raise SegdeployError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict")


def _strip_prefixes(state: dict) -> dict:
    for prefix in STRIPPED_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def apply_state_dict(module: nn.Module, state: dict, path) -> list[str]:
    """Load `state` strictly; auxiliary-head keys the model lacks are ignored and returned."""
    own = module.state_dict()
    ignored = [k for k in state if k not in own and k.startswith(AUX_PREFIXES)]
    state = {k: v for k, v in state.items() if k not in ignored}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (checkpoint {list(state[k].shape)} vs model {list(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_first(mismatched)}")
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if problems:
        hint = _class_count_hint(state, own)
        raise SegdeployError(f"checkpoint {path} does not match the model: " + "; ".join(problems), hint)
    module.load_state_dict(state, strict=True)
    return ignored


def _first(items: list[str]) -> str:
    more = f" … and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _class_count_hint(state: dict, own: dict) -> str | None:
    """If only the classifier's leading dimension differs, name the class count the checkpoint has."""
    diffs = {k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)}
    firsts = {state[k].shape[0] for k in diffs if state[k].ndim >= 1 and state[k].shape[1:] == own[k].shape[1:]}
    if diffs and len(firsts) == 1:
        return f"the checkpoint looks trained for {firsts.pop()} classes: pass --num-classes accordingly"
    return "was the checkpoint made for this architecture and options?"


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over the state_dict (names, dtypes, shapes, bytes): identifies the exact weights exported."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
