"""Confirming an INT8 budget on images the layer choice never saw: the split, the interval, the verdict.

`build --miou-budget` chooses the layers kept in float on one part of the evaluation set (the
*choice* part) and measures the chosen graph once on a disjoint part (the *confirmation* part).
The drop on the choice part is biased low (the layers were picked to make it small); the drop
on the confirmation part is an honest estimate for images like these.

**The split** (`split_blocks`): the evaluation images, in their dataset order, are cut into
blocks of `block` consecutive images (default `SPLIT_BLOCK`); even blocks choose, odd blocks
confirm. Evaluation sets are often consecutive video frames, and adjacent frames are
near-duplicates: a frame-by-frame interleave would confirm on the neighbours of the frames that
chose, while two halves would compare two different stretches of road. Blocks of 10 are a
compromise measured on CamVid val (one 15 fps sequence; README, "INT8 within a budget"): a
frame's FP32 accuracy still correlates 0.85 with the next frame's and ~0.4 with the 10th, and
naive INT8's per-frame drop correlates 0.24 with the next frame's and ≤ 0.12 from the 3rd on.
Calibration images never confirm (they are moved to the choice part, and counted): ranges and
the sensitivity ranking were fitted on them. `--confirm-data DIR` gives the confirmation images
instead (then the whole evaluation set chooses); they must share no image with the evaluation
or calibration images (compared by content).

**The interval** (`Confirmation`): a paired circular block bootstrap of the drop over the
confirmation images (`evalset.bootstrap_drops`, blocks of the split's length but at most a
quarter of the part, fixed seed), its 2.5–97.5 percentiles and standard error. It assumes the confirmation images stand for the
images that matter; it cannot know about scenes neither part contains.

**The verdict**: confirmed when the drop on the confirmation part is within the budget. A
budget below the standard error of naive INT8's drop on the confirmation part cannot be
confirmed by these images at all and is refused before the search (`check_noise`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeploy.atomic import sha256_file
from segdeploy.errors import SegdeployError, UsageError
from segdeploy.precision.evalset import EvalSet, eval_dataset, miou_percent, paired_interval

SPLIT_BLOCK = 10  # consecutive images per block of the default split (see the module docstring)
MIN_PART_IMAGES = 4  # fewer images in either part cannot estimate anything
INTERVAL_RESAMPLES = 1000
INTERVAL_LEVEL = 0.95


@dataclass
class Parts:
    """The two evaluation sets of a budget search and how they were made (the `split` record)."""

    choice: EvalSet
    confirmation: EvalSet
    split: dict

    @property
    def block(self) -> int:
        return self.split["block"]


def split_blocks(count: int, block: int, calibrated: set[int] = frozenset()) -> tuple[list[int], list[int]]:
    """(choice, confirmation) indices of `count` ordered images: blocks of `block` consecutive images,
    even blocks choose and odd blocks confirm; indices in `calibrated` always choose."""
    choice, confirmation = [], []
    for index in range(count):
        confirms = (index // block) % 2 == 1 and index not in calibrated
        (confirmation if confirms else choice).append(index)
    return choice, confirmation


def default_block(count: int) -> int:
    """`SPLIT_BLOCK`, shortened for small sets so that each part gets at least two blocks."""
    return max(1, min(SPLIT_BLOCK, count // 4))


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] → "0-2,5,7-8" (the split, compactly, in the record)."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def open_parts(manifest, options, calib) -> Parts:
    """The choice and confirmation sets of `options` (a `BudgetOptions`): the evaluation set split
    in blocks, or the whole evaluation set against `options.confirm_data`."""
    dataset, what, warning = eval_dataset(manifest, options.eval_data, calib.folder if calib else None)
    if options.eval_limit is not None:
        dataset = dataset.subset([item[0] for item in dataset.items[:options.eval_limit]])
    calibration = {sha256_file(p) for p in calib.images} if calib else set()
    if options.confirm_data is not None:
        return _given_parts(manifest, options, dataset, what, warning, calibration)
    block = options.split_block or default_block(len(dataset))
    calibrated = {i for i, item in enumerate(dataset.items) if sha256_file(item[1]) in calibration}
    choice, confirmation = split_blocks(len(dataset), block, calibrated)
    _check_size(len(confirmation), f"the confirmation part of {what} (blocks of {block}; calibration images never confirm)",
                "give more --eval-data images that calibration did not use, a smaller --split-block, or --confirm-data DIR")
    _check_size(len(choice), f"the choice part of {what} (blocks of {block})", "give more --eval-data images")
    parts = [EvalSet.from_dataset(manifest, _subset(dataset, indices), f"{what}, {name} part", warning=warning)
             for indices, name in ((choice, "choice"), (confirmation, "confirmation"))]
    split = {"rule": f"alternate blocks of {block} consecutive images in dataset order: even blocks choose the layers, "
                     "odd blocks confirm; calibration images never confirm",
             "block": block, "choice": _part_record(parts[0], choice), "confirmation": _part_record(parts[1], confirmation),
             "calibration_images_moved_to_choice": sum(1 for i in calibrated if (i // block) % 2 == 1)}
    return _with_block(Parts(parts[0], parts[1], split))


def _given_parts(manifest, options, dataset, what, warning, calibration: set[str]) -> Parts:
    confirm, _, _ = eval_dataset(manifest, options.confirm_data, None)
    if confirm.has_labels != dataset.has_labels:
        kinds = {True: "labelled", False: "unlabelled"}
        raise UsageError(f"--confirm-data {options.confirm_data} is {kinds[confirm.has_labels]} but the evaluation set is "
                         f"{kinds[dataset.has_labels]}: the drop would mean different things on the two",
                         "give both with labels (mIoU) or both as image folders (agreement)")
    _check_size(len(confirm), f"--confirm-data {options.confirm_data}", "give more confirmation images")
    seen = calibration | {sha256_file(item[1]) for item in dataset.items}
    shared = [item[0] for item in confirm.items if sha256_file(item[1]) in seen]
    if shared:
        raise UsageError(f"--confirm-data {options.confirm_data} shares {len(shared)} image(s) with the evaluation or "
                         f"calibration images (e.g. {shared[0]!r}): a confirmation must be on images nothing else used",
                         "remove them from the confirmation folder")
    block = options.split_block or default_block(len(confirm))
    choice = EvalSet.from_dataset(manifest, dataset, what, warning=warning)
    given = EvalSet.from_dataset(manifest, confirm, f"{options.confirm_data} (--confirm-data)")
    split = {"rule": "given: the whole evaluation set chooses, --confirm-data confirms", "block": block,
             "choice": {"images": choice.images}, "confirmation": {"images": given.images, "data": str(options.confirm_data)},
             "calibration_images_moved_to_choice": 0}
    return _with_block(Parts(choice, given, split))


def _subset(dataset, indices: list[int]):
    return dataset.subset([dataset.items[i][0] for i in indices])


def _part_record(part: EvalSet, indices: list[int]) -> dict:
    used = indices[:part.images]  # a static batch size can leave a last partial batch out
    return {"images": part.images, "indices": index_ranges(used)}


def _with_block(parts: Parts) -> Parts:
    """Each part's bootstrap resamples blocks of the split's length, but at most a quarter of its
    images: a block as long as the part would make every resample a rotation of it (no spread)."""
    for part in (parts.choice, parts.confirmation):
        part.bootstrap_block = max(1, min(parts.block, part.images // 4))
    return parts


def _check_size(count: int, what: str, hint: str) -> None:
    if count < MIN_PART_IMAGES:
        raise UsageError(f"{what} has {count} image(s); confirming a budget needs at least {MIN_PART_IMAGES}", hint)


@dataclass
class Confirmation:
    """A graph measured on the confirmation part: the drop, its interval, and naive INT8's drop there."""

    budget: float
    images: int
    description: str
    fp32_miou: float
    miou: float
    drop: float
    standard_error: float
    low: float
    high: float
    block: int
    naive_drop: float | None = None
    accepted_unconfirmed: bool = False

    @property
    def confirmed(self) -> bool:
        return self.drop <= self.budget

    @classmethod
    def measure(cls, part: EvalSet, graph: Path, budget: float) -> "Confirmation":
        """`graph` on `part` (whose FP32 reference is measured), with a paired block-bootstrap interval."""
        reference, counts = part.counts(graph)
        miou = miou_percent(counts.sum(axis=0), part.evaluated)
        found = paired_interval(reference, counts, part.bootstrap_block, INTERVAL_RESAMPLES, INTERVAL_LEVEL, part.evaluated)
        return cls(budget, part.images, part.description, part.reference_miou, miou, part.reference_miou - miou,
                   found["standard_error"], found["low"], found["high"], part.bootstrap_block)

    def to_record(self) -> dict:
        return {"description": self.description, "images": self.images, "fp32_miou": round(self.fp32_miou, 4),
                "naive_drop": None if self.naive_drop is None else round(self.naive_drop, 4), "miou": round(self.miou, 4), "drop": round(self.drop, 4),
                "standard_error": round(self.standard_error, 4),
                "interval": [round(self.low, 4), round(self.high, 4)], "interval_level": INTERVAL_LEVEL,
                "interval_method": f"percentiles of a paired circular block bootstrap over the confirmation images "
                                   f"(blocks of {self.block}, {INTERVAL_RESAMPLES} resamples, fixed seed)",
                "confirmed": self.confirmed, "accepted_unconfirmed": self.accepted_unconfirmed}

    def miss(self, chosen_on: int, choice_drop: float) -> str:
        """The unconfirmed budget in one sentence."""
        return (f"--miou-budget {self.budget} is not confirmed: the graph chosen on {chosen_on} images drops "
                f"{choice_drop:.2f} there but {self.drop:.2f} on the {self.images} confirmation images "
                f"({self._interval()}){self._naive()}")

    def refusal(self, chosen_on: int, choice_drop: float, naive_choice_drop: float) -> SegdeployError:
        """The unconfirmed budget as one error line, with what would meet it."""
        return SegdeployError(self.miss(chosen_on, choice_drop) + "; nothing was written",
                              self.advice(choice_drop, naive_choice_drop))

    def advice(self, choice_drop: float, naive_choice_drop: float) -> str:
        """What would meet the budget, from what was measured."""
        tips = [f"these confirmation images support a budget of {_round_up(self.drop)} for this graph"]
        if self.naive_drop is not None and self.naive_drop <= self.budget:
            tips.append(f"naive INT8 already meets {self.budget} on them: the layers kept in float do not help there")
        if self.low > self.budget:
            tips.append(f"the whole interval lies above the budget, so this is not noise: these images differ from the "
                        f"choice images (naive INT8 → chosen graph: {naive_choice_drop:.2f} → {choice_drop:.2f} there, "
                        f"{self.naive_drop:.2f} → {self.drop:.2f} here); choose on images like them (--eval-data)")
        else:
            tips.append(f"the budget lies inside the interval: more confirmation images would decide (its half-width, "
                        f"~{(self.high - self.low) / 2:.2f}, shrinks as 1/sqrt(images))")
        tips.append("--accept-unconfirmed writes the graph marked unconfirmed")
        return "; ".join(tips)

    def _naive(self) -> str:
        return "" if self.naive_drop is None else f"; naive INT8 drops {self.naive_drop:.2f} on them"

    def _interval(self) -> str:
        return f"{INTERVAL_LEVEL:.0%} interval {self.low:.2f} to {self.high:.2f}"


def check_noise(budget: float, naive_error: float | None, part: EvalSet) -> None:
    """A budget below the noise of the confirmation itself cannot be confirmed: refuse it before the search."""
    if naive_error is not None and budget < naive_error:
        raise SegdeployError(
            f"--miou-budget {budget} is below the noise of its confirmation: naive INT8's drop on the {part.images} "
            f"confirmation images has a standard error of {naive_error:.2f} mIoU points (block bootstrap), so these "
            "images cannot tell such a budget from a larger one",
            f"use a budget of at least {_round_up(naive_error)}, or confirm on more images (--eval-data, --confirm-data)")


def _round_up(value: float) -> float:
    return float(np.ceil(max(value, 0.0) * 100) / 100)
