"""Optimization profiles: trtexec-style `--min/--opt/--max-shapes` checked against the manifest."""

from __future__ import annotations

import re

from segdeploy.errors import UsageError

_SPEC = re.compile(r"^\s*([^:,]+):(\d+(?:x\d+)*)\s*$")


def parse_shapes(text: str | None, option: str) -> dict[str, tuple[int, ...]]:
    """'input:1x3x256x512[,other:...]' → {'input': (1, 3, 256, 512)} (trtexec's syntax)."""
    if not text:
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    for part in text.split(","):
        match = _SPEC.match(part)
        if not match:
            raise UsageError(f"malformed {option} {part!r}: expected NAME:NxCxHxW, e.g. input:1x3x256x512")
        dims = tuple(int(d) for d in match.group(2).split("x"))
        if any(d < 1 for d in dims):
            raise UsageError(f"{option} {part!r}: every dimension must be at least 1")
        shapes[match.group(1).strip()] = dims
    return shapes


def resolve_profile(inputs: list[dict], export_shapes: dict[str, list[int]], min_shapes: dict, opt_shapes: dict,
                    max_shapes: dict) -> dict[str, dict[str, list[int]]]:
    """{input: {min, opt, max}} for every input with dynamic axes; static inputs must not be contradicted.

    `inputs` are the graph's recorded inputs (dims are ints, or axis names when dynamic);
    `export_shapes` the shapes the model was exported and proven at (the default opt).
    Missing min/max default to opt, so an engine never silently accepts shapes nobody asked for.
    """
    known = {i["name"]: i["shape"] for i in inputs}
    for option, shapes in (("--min-shapes", min_shapes), ("--opt-shapes", opt_shapes), ("--max-shapes", max_shapes)):
        unknown = sorted(set(shapes) - set(known))
        if unknown:
            raise UsageError(f"{option} names {', '.join(unknown)}, but the graph's inputs are {', '.join(known)}")
    profile = {}
    for name, dims in known.items():
        opt = opt_shapes.get(name) or tuple(export_shapes.get(name) or ())
        chosen = {"min": min_shapes.get(name) or opt, "opt": opt, "max": max_shapes.get(name) or opt}
        for which, shape in chosen.items():
            _check_against_graph(name, dims, shape, which)
        _check_ordered(name, chosen)
        if any(not isinstance(d, int) or d < 1 for d in dims):
            profile[name] = {k: list(v) for k, v in chosen.items()}
    return profile


def _check_against_graph(name: str, dims: list, shape: tuple[int, ...], which: str) -> None:
    shown = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in dims)
    if len(shape) != len(dims):
        raise UsageError(f"--{which}-shapes {name}:{_fmt(shape)} has {len(shape)} dimensions; the manifest says {name} is {shown}")
    for axis, (want, got) in enumerate(zip(dims, shape)):
        if isinstance(want, int) and want > 0 and want != got:
            raise UsageError(
                f"--{which}-shapes {name}:{_fmt(shape)} contradicts the manifest: axis {axis} of {name} is fixed at {want} ({shown})",
                "re-export with --dynamic to make that axis dynamic",
            )


def _check_ordered(name: str, chosen: dict) -> None:
    lo, mid, hi = chosen["min"], chosen["opt"], chosen["max"]
    if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
        raise UsageError(f"profile for {name} is not ordered: min {_fmt(lo)} ≤ opt {_fmt(mid)} ≤ max {_fmt(hi)} must hold on every axis")


def _fmt(shape) -> str:
    return "x".join(str(d) for d in shape)
