"""Typed records read from JSON: every field checked against its annotation, one clear error.

A record is a dataclass. `decode(cls, data, where)` builds one from a parsed JSON value and
raises `SchemaError` naming the field (``artifacts.onnx-fp16.parity.batches``) and what is
wrong with it; `encode(record)` turns it back into JSON-ready values. Keys a `Record` does not
declare are kept in its `unknown` dict and written back unchanged, so a manifest written by
a newer segdeploy of the same schema version loses nothing.

Field metadata ``{"omit_none": True}`` leaves a field out of the JSON while it is None (the
manifest's optional keys), instead of writing ``null``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from segdeploy.errors import SegdeployError

OMIT_NONE = {"omit_none": True}


class SchemaError(ValueError):
    """A value that does not match its record's declared type (`where` names the field)."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where} {problem}")
        self.where, self.problem = where, problem


def optional(default=None, **kwargs):
    """A field that is left out of the JSON while it is None."""
    return dataclasses.field(default=default, metadata=OMIT_NONE, **kwargs)


def keeps_unknown():
    """The `unknown` field of a `Record`: keys the record does not declare, kept as read."""
    return dataclasses.field(default_factory=dict, repr=False, compare=False)


class Record:
    """Base of the manifest's records (dataclasses with an `unknown: dict` field)."""

    @classmethod
    def from_dict(cls, data, where: str = ""):
        return decode(cls, data, where or cls.__name__)

    def to_dict(self) -> dict:
        return encode(self)


def decode(cls, data: Any, where: str):
    """A `cls` record from parsed JSON `data`, every field type-checked."""
    if not isinstance(data, dict):
        raise SchemaError(where, f"must be an object, not {_kind(data)}")
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict = {}
    keeps = issubclass(cls, Record)
    for name, spec in declared.items():
        if keeps and name == "unknown":
            continue
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{where}.{name}", "is missing")
            continue
        values[name] = _convert(hints[name], data[name], f"{where}.{name}")
    unknown = {k: v for k, v in data.items() if k not in declared}
    if unknown and keeps:
        values["unknown"] = unknown
    try:
        return cls(**values)
    except (ValueError, SegdeployError) as exc:  # a record's own checks (e.g. Preprocess's) on well-typed values
        raise SchemaError(where, f"is invalid: {getattr(exc, 'message', exc)}") from None


def encode(value: Any) -> Any:
    """JSON-ready form of a record (or of anything holding records)."""
    if _own_to_dict(value):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        out = {}
        for spec in dataclasses.fields(value):
            item = getattr(value, spec.name)
            if isinstance(value, Record) and spec.name == "unknown":
                out.update(item or {})
            elif not (item is None and spec.metadata.get("omit_none")):
                out[spec.name] = encode(item)
        return out
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def _own_to_dict(value) -> bool:
    """Dataclasses defined elsewhere (Preprocess, ClassInfo) serialise themselves."""
    return dataclasses.is_dataclass(value) and not isinstance(value, Record) and "to_dict" in type(value).__dict__


def _convert(tp, value, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _first_match([a for a in args if a is not type(None)], value, where)
    if dataclasses.is_dataclass(tp):
        return decode(tp, value, where)
    if tp is bool:
        return _check(value, isinstance(value, bool), "a boolean", where)
    if tp is int:
        return _check(value, isinstance(value, int) and not isinstance(value, bool), "an integer", where)
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(_check(value, ok, "a number", where))
    if tp is str:
        return _check(value, isinstance(value, str), "a string", where)
    if tp in (dict, list) or origin in (dict, list, tuple):
        return _container(tp, origin or tp, args, value, where)
    raise TypeError(f"unsupported annotation {tp!r} at {where}")  # a bug in a record, not in the file


def _first_match(options: list, value, where: str):
    """The first option `value` converts to; else the most specific error (the deepest field)."""
    errors = []
    for option in options:
        try:
            return _convert(option, value, where)
        except SchemaError as exc:
            errors.append(exc)
    deepest = max(len(e.where) for e in errors)
    if len(errors) > 1 and all(e.where == where for e in errors):
        raise SchemaError(where, " or ".join(dict.fromkeys(e.problem for e in errors)))
    raise next(e for e in errors if len(e.where) == deepest)


def _container(tp, origin, args, value, where: str):
    if origin is dict:
        _check(value, isinstance(value, dict), "an object", where)
        if not args:
            return dict(value)
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    _check(value, isinstance(value, list), "a list", where)
    if origin is list:
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise SchemaError(where, f"must hold {len(args)} values, not {len(value)}")
    return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _check(value, ok: bool, wanted: str, where: str):
    if not ok:
        raise SchemaError(where, f"must be {wanted}, not {_kind(value)}")
    return value


def _kind(value) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    text = repr(value) if isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 30 else ""
    return names.get(type(value), type(value).__name__) + (f" ({text})" if text else "")
