"""Class names, palette, ignore index and classes not evaluated: read from classes.json, recorded
in the manifest; and how a model's output classes are scored against a dataset's (`match_classes`).

Accepted classes.json forms: a list of names, or an object with `classes` (names) and optional
`palette` ([[r,g,b], …]), `ignore_index` (the label value metrics skip), `void`
(`{"index": 11, "name": "Unlabelled", "color": [0, 0, 0]}`: the class index a model trained with
void as a class gives it) and `not_evaluated` (a list of class indices that are not scored). See
docs/design.md, "Evaluation", for the rule `ClassMapping` applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from segdeploy.errors import SegdeployError

DEFAULT_VOID_COLOR = (0, 0, 0)


@dataclass(frozen=True)
class VoidClass:
    """classes.json's `void`: a class a model may output that the dataset does not evaluate."""

    index: int
    name: str = "void"
    color: tuple[int, int, int] = DEFAULT_VOID_COLOR


@dataclass(frozen=True)
class ClassInfo:
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int | None = None
    not_evaluated: tuple[int, ...] = ()  # class indices never scored (`not_evaluated` and `void.index`)
    void: VoidClass | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def generic(self) -> bool:
        """Names made up by `default` (no classes.json given): they say nothing about the order."""
        return all(name == f"class_{i}" for i, name in enumerate(self.names))

    def to_dict(self) -> dict:
        out = {"names": list(self.names), "palette": [list(c) for c in self.palette], "ignore_index": self.ignore_index}
        if self.not_evaluated:  # absent unless declared: older manifests and readers stay as they were
            out["not_evaluated"] = list(self.not_evaluated)
        if self.void is not None:
            out["void"] = {"index": self.void.index, "name": self.void.name, "color": list(self.void.color)}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ClassInfo":
        void = data.get("void")
        return cls(tuple(data["names"]), tuple(tuple(c) for c in data["palette"]), data.get("ignore_index"),
                   tuple(data.get("not_evaluated", ())),
                   VoidClass(void["index"], void["name"], tuple(void["color"])) if void else None)

    @classmethod
    def default(cls, num_classes: int) -> "ClassInfo":
        return cls(tuple(f"class_{i}" for i in range(num_classes)), default_palette(num_classes))

    def for_outputs(self, num_outputs: int, where) -> "ClassInfo":
        """These classes for a model with `num_outputs` output classes (export --classes).

        A model may output more classes than listed when each extra index is declared here as
        not evaluated (`void`, `not_evaluated`) or is the ignore index, as in CamVid models trained
        with void as a 12th class: the extra classes are appended, named and coloured from `void`
        (else "void" for the ignore index, "class_<i>" otherwise), and stay not evaluated."""
        extra = range(self.num_classes, num_outputs)
        undeclared = [i for i in extra if i not in self.not_evaluated and i != self.ignore_index]
        if num_outputs < self.num_classes or undeclared:
            what = (f"class(es) {undeclared} are not declared in it" if undeclared else "a model cannot output fewer")
            raise SegdeployError(
                f"{where} lists {self.num_classes} classes but the model outputs {num_outputs}: {what}",
                "pass the classes.json of the model's classes; if an extra output is void/unlabelled, declare it there: "
                '"void": {"index": N, "name": "void"} or "not_evaluated": [N]')
        if not extra:
            return self
        names = self.names + tuple(self.extra_name(i) for i in extra)
        palette = self.palette + tuple(self._extra_color(i, num_outputs) for i in extra)
        not_evaluated = tuple(sorted(set(self.not_evaluated) | set(extra)))
        return ClassInfo(names, palette, self.ignore_index, not_evaluated, self.void)

    def extra_name(self, index: int) -> str:
        """The name of a model class beyond these classes: `void`'s name, "void" for the ignore index, else generic."""
        if self.void is not None and self.void.index == index:
            return self.void.name
        return "void" if index == self.ignore_index else f"class_{index}"

    def _extra_color(self, index: int, num_outputs: int) -> tuple[int, int, int]:
        if self.void is not None and self.void.index == index:
            return self.void.color
        return DEFAULT_VOID_COLOR if index == self.ignore_index else default_palette(num_outputs)[index]


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
    void = _void(data.get("void"), path)
    not_evaluated = data.get("not_evaluated", [])
    if not isinstance(not_evaluated, list) or not all(_index(i) for i in not_evaluated):
        raise SegdeployError(f"{path}: not_evaluated must be a list of class indices (integers >= 0)")
    declared = set(not_evaluated) | ({void.index} if void else set())
    return ClassInfo(tuple(names), _palette(palette, len(names), path), ignore, tuple(sorted(declared)), void)


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


def _index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _void(entry, path: Path) -> VoidClass | None:
    """classes.json's optional `void` object (index required; name and colour optional)."""
    if entry is None:
        return None
    color = entry.get("color", DEFAULT_VOID_COLOR) if isinstance(entry, dict) else None
    if (not isinstance(entry, dict) or not _index(entry.get("index")) or not isinstance(entry.get("name", ""), str)
            or not (isinstance(color, (list, tuple)) and len(color) == 3 and all(_index(v) and v < 256 for v in color))):
        raise SegdeployError(f"{path}: void must be an object like {{\"index\": 11, \"name\": \"void\", \"color\": [0, 0, 0]}}")
    return VoidClass(entry["index"], entry.get("name", "void"), tuple(color))


@dataclass(frozen=True)
class ClassMapping:
    """How a model's output classes are scored against a dataset's labels (`match_classes`).

    The confusion matrix stays model_classes × model_classes (rows = label); only `evaluated`
    rows and classes are scored: labels that are the ignore index or a class not evaluated are
    skipped, and a prediction of a class not evaluated on a labelled pixel counts against that
    pixel's class (a miss for it, a false positive for none of the evaluated classes)."""

    model_classes: int
    dataset_classes: int
    ignore_index: int | None
    not_evaluated: tuple[int, ...]  # model class indices outside the evaluation
    dataset_names: tuple[str, ...]
    not_evaluated_names: tuple[str, ...] = ()  # one per `not_evaluated` index, for the rule

    @classmethod
    def same(cls, classes: ClassInfo) -> "ClassMapping":
        """A dataset scored with its own classes (the model outputs exactly these)."""
        return match_classes(classes, classes, "")

    @property
    def evaluated(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.dataset_classes) if i not in self.not_evaluated)

    @property
    def evaluated_names(self) -> tuple[str, ...]:
        return tuple(self.dataset_names[i] for i in self.evaluated)

    @property
    def identity(self) -> bool:
        """Every model class is a dataset class and every one is scored."""
        return self.model_classes == self.dataset_classes and not self.not_evaluated

    @property
    def listed(self) -> str:
        """The classes not evaluated, in words: "11 (Unlabelled)"."""
        return " or ".join(f"{i} ({name})" for i, name in zip(self.not_evaluated, self.not_evaluated_names))

    @property
    def rule(self) -> str:
        if self.identity:
            return f"model and dataset have the same {self.model_classes} classes; mIoU averages all of them"
        skipped = [f"label {self.ignore_index} (ignore)"] if self.ignore_index is not None else []
        inside = [i for i in self.not_evaluated if i < self.dataset_classes]
        skipped += [f"label(s) {inside} (not evaluated)"] if inside else []
        return ((" and ".join(skipped) + " skipped; " if skipped else "")
                + f"a prediction of class {self.listed} on a labelled pixel counts as a miss for that pixel's class; "
                f"mIoU averages the {len(self.evaluated)} evaluated dataset classes")

    def to_dict(self) -> dict:
        return {"model_classes": self.model_classes, "dataset_classes": self.dataset_classes,
                "evaluated_classes": len(self.evaluated), "not_evaluated": list(self.not_evaluated),
                "ignore_index": self.ignore_index, "rule": self.rule}


def match_classes(model: ClassInfo, data: ClassInfo, where) -> ClassMapping:
    """How `model`'s classes are scored on labels of `data` (found at `where`); one clear error for any
    mismatch the rule does not cover, saying which of the two to fix."""
    m, n = model.num_classes, data.num_classes
    if m < n:
        raise SegdeployError(
            f"{where} has {n} classes but the model outputs {m}: a model cannot be scored on classes it does not predict",
            f"evaluate on data whose classes.json lists the model's {m} classes, or check the exported model's classes")
    declared = set(data.not_evaluated) | set(model.not_evaluated)
    declared |= {data.ignore_index} if data.ignore_index is not None else set()
    undeclared = [i for i in range(n, m) if i not in declared]
    if undeclared:
        raise SegdeployError(
            f"{where} has {n} classes but the model outputs {m}: the model's class(es) {undeclared} are neither the data's "
            f"ignore_index ({data.ignore_index}) nor declared not evaluated",
            f"if the model's class {undeclared[0]} is void/unlabelled (never a label here), add \"not_evaluated\": "
            f"{undeclared} to the data's classes.json; otherwise evaluate on data labelled with the model's {m} classes")
    if not model.generic and tuple(model.names[:n]) != tuple(data.names):
        raise SegdeployError(
            f"{where} names its classes {list(data.names)[:4]}… but the model's are {list(model.names)[:4]}…",
            "the class order must be the same: re-export the model with --classes set to the data's classes.json "
            "if its names are wrong, else relabel the data in the model's order")
    not_evaluated = tuple(sorted(i for i in declared if 0 <= i < m))
    named = data.names if model.generic else model.names
    return ClassMapping(m, n, data.ignore_index, not_evaluated, tuple(data.names),
                        tuple(named[i] if i < len(named) else data.extra_name(i) for i in not_evaluated))
