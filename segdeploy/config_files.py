"""Reading YAML/JSON settings files safely: the document, or one line saying why not.

At most 1 MiB of UTF-8, one document, PyYAML's safe loader (no Python tags), no repeated keys,
at most 100 aliases while parsing and 100 000 values once aliases are expanded — a "billion
laughs" alias bomb is refused in milliseconds, before anything walks or hashes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from segdeploy.errors import SegdeployError, UsageError

MAX_CONFIG_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_VALUES = 100_000


def read_document(path: Path, what: str = "config"):
    """The YAML (or, for `.json`, JSON) document of `path`, within the limits above; `what` names it in errors."""
    if not path.is_file():
        raise SegdeployError(f"{what} not found: {path}" if not path.exists() else f"{what} {path} is not a file")
    with open(path, "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"{what} {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB", "a config lists models and settings only")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        document = json.loads(text, object_pairs_hook=_unique_pairs) if kind == "JSON" else _load_yaml(text)
    except RecursionError:
        raise UsageError(f"{what} {path} is nested too deeply") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"{what} {path} is not valid {kind}: {_describe_parse_error(exc)}") from None
    if _count_values(document, MAX_VALUES) > MAX_VALUES:
        raise UsageError(f"{what} {path} expands to more than {MAX_VALUES} values (aliases?)")
    return document


def _load_yaml(text: str):
    class Loader(yaml.SafeLoader):
        """Safe loading that counts aliases (refusing a bomb while composing) and refuses repeated keys."""

        aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                Loader.aliases += 1
                if Loader.aliases > MAX_ALIASES:
                    event = self.peek_event()
                    raise yaml.composer.ComposerError(None, None, f"more than {MAX_ALIASES} aliases", event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key_node.value!r} is repeated",
                                                            key_node.start_mark)
                seen.add(key_node.value)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} is repeated")
    return dict(pairs)


def _describe_parse_error(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{getattr(exc, 'problem', None) or exc} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _count_values(node, limit: int) -> int:
    """Values in the document with aliases expanded, counting stops past `limit` (cheap on a bomb)."""
    count, stack = 0, [node]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count
