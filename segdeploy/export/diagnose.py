"""Name the operator and the module behind an export failure.

The legacy exporter says *which* ATen operator it cannot convert, not *where* it is.
We re-run the model eagerly under a TorchDispatchMode that records, for every ATen
operator called, the qualified name of the innermost module running at that moment.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

_OPERATOR_PATTERNS = (
    r"export of operator '?(?:aten::)?([\w.]+)",
    r"operator '(?:aten::)?([\w.]+)'",
    r"Exporting the operator '?(?:aten::)?([\w.]+)'?",
    r"aten::([\w.]+)",
)


def operator_from_error(message: str) -> str | None:
    for pattern in _OPERATOR_PATTERNS:
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    return None


class _CallRecorder(TorchDispatchMode):
    def __init__(self, stack: list[str], wanted: str):
        super().__init__()
        self.stack, self.wanted, self.found = stack, wanted.lstrip("_"), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # ATen names carry overloads and dimensions ("grid_sampler_2d.default") that the
        # exporter's message leaves out ("grid_sampler"): match on the prefix.
        name = func.name().split("::")[-1].split(".")[0].lstrip("_")
        if self.stack and name.startswith(self.wanted):
            self.found.append(self.stack[-1])
        return func(*args, **(kwargs or {}))


def _pop(stack: list[str]) -> None:
    stack.pop()  # returns None: a forward hook's return value would replace the module's output


def modules_calling(model: nn.Module, sample: torch.Tensor, operator: str) -> list[str]:
    """Qualified names (with class) of the modules in which `operator` is called."""
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        label = f"{name or '<root>'} ({type(module).__name__})"
        handles.append(module.register_forward_pre_hook(lambda m, a, label=label: stack.append(label)))
        handles.append(module.register_forward_hook(lambda m, a, o: _pop(stack)))
    recorder = _CallRecorder(stack, operator)
    try:
        with torch.no_grad(), recorder:
            model(sample)
    except Exception:  # the diagnosis must never hide the original failure
        pass
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(recorder.found))


def _unqualified(name: str) -> str:
    """'model.decoder.blocks.0' → 'blocks.0': how the exporter names a module in a scope
    (from its last non-numeric atom on)."""
    atoms = name.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return name


def module_at_scope(model: nn.Module, scope: str) -> str:
    """'model.decoder.psp.blocks.1 (PSPBlock)': the module an exporter scope name points at.

    A scope is `pkg.Root::/pkg.Child::name/…`, one segment per module *call*, each naming
    its module only by class and last name atom (`blocks.1`), and skipping modules whose
    methods were called directly (`encoder.forward_features(x)`). Each segment is matched
    against the modules below the previous one, which recovers the qualified name.
    """
    current, path = model, ""
    for segment in [s for s in scope.split("/") if s][1:]:
        cls, _, short = segment.rpartition("::")
        match = next(((name, sub) for name, sub in current.named_modules(prefix=path)
                      if sub is not current and torch.typename(type(sub)) == cls and _unqualified(name) == short), None)
        if match is None:
            return f"{path or '<root>'} ({type(current).__name__}) > {short} ({cls.rsplit('.', 1)[-1]})"
        path, current = match
    return f"{path or '<root>'} ({type(current).__name__})"
