"""Class names, palette and ignore index: read from classes.json, recorded in the manifest.

Accepted classes.json forms: a list of names, or an object with `classes` (names) and
optional `palette` ([[r,g,b], …]) and `ignore_index` (the label value metrics skip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from segdeploy.errors import SegdeployError


@dataclass(frozen=True)
class ClassInfo:
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "palette": [list(c) for c in self.palette], "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, data: dict) -> "ClassInfo":
        return cls(tuple(data["names"]), tuple(tuple(c) for c in data["palette"]), data.get("ignore_index"))

    @classmethod
    def default(cls, num_classes: int) -> "ClassInfo":
        return cls(tuple(f"class_{i}" for i in range(num_classes)), default_palette(num_classes))


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Pascal-VOC-style bit-interleaved palette: distinct, deterministic colours for any n."""
    colours = []
    for index in range(n):
        r = g = b = 0
        label = index
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def load_classes(path: str | Path) -> ClassInfo:
    path = Path(path)
    if not path.is_file():
        raise SegdeployError(f"classes file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegdeployError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        data = {"classes": data}
    names = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SegdeployError(f"{path} must hold a non-empty list of class names (a list, or under \"classes\")")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SegdeployError(f"{path}: class names must be unique; repeated: {', '.join(repeated)}")
    palette = data.get("palette") or default_palette(len(names))
    ignore = data.get("ignore_index")
    if ignore is not None and (not isinstance(ignore, int) or isinstance(ignore, bool)):
        raise SegdeployError(f"{path}: ignore_index must be an integer, got {ignore!r}")
    return ClassInfo(tuple(names), _palette(palette, len(names), path), ignore)


def _palette(palette, count: int, path: Path) -> tuple[tuple[int, int, int], ...]:
    """One [r, g, b] per class, each an integer 0-255 (checked here, not when `run` draws with it)."""
    if not isinstance(palette, (list, tuple)) or len(palette) < count:
        raise SegdeployError(f"{path}: palette must be a list with one [r, g, b] per class ({count} classes)")
    for index, colour in enumerate(palette[:count]):
        valid = isinstance(colour, (list, tuple)) and len(colour) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in colour)
        if not valid:
            raise SegdeployError(f"{path}: palette entry {index} is {colour!r}; each colour is [r, g, b] with integers 0-255")
    return tuple(tuple(int(v) for v in c) for c in palette[:count])
