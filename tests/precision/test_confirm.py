"""`build --miou-budget` confirms its layer choice on images the choice never saw (`precision.confirm`).

The split is checked as a function (disjoint, covering, deterministic, calibration images never
confirm), the interval's bootstrap by two exact properties, and the verdict end to end on the
outlier model (tests/outlier_model.py) with a constructed confirmation set that disagrees with
the choice set: calibration and choice images are dark, the confirmation images bright. The
bright inputs fall outside the calibrated input range, so INT8 clips them whatever is kept in
float; keeping the outlier layer fixes the dark images and does nothing for the bright ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segdeploy.cli import app
from segdeploy.manifest import Manifest
from segdeploy.precision.confirm import default_block, index_ranges, split_blocks
from segdeploy.precision.evalset import bootstrap_drops

from tests.helpers import write_images

BUDGET = "15"
runner = CliRunner()


@pytest.mark.parametrize("count, block", [(101, 10), (8, 2), (40, 10), (13, 3), (6, 1)])
def test_the_split_is_disjoint_covering_alternating_and_deterministic(count, block):
    choice, confirmation = split_blocks(count, block)
    assert not set(choice) & set(confirmation) and sorted(choice + confirmation) == list(range(count))
    assert all((i // block) % 2 == 1 for i in confirmation) and all((i // block) % 2 == 0 for i in choice)
    assert (choice, confirmation) == split_blocks(count, block)


def test_calibration_images_never_confirm():
    choice, confirmation = split_blocks(40, 10, calibrated={3, 12, 15, 33})
    assert {12, 15, 33} <= set(choice) and not {3, 12, 15, 33} & set(confirmation)
    assert confirmation == [i for i in range(10, 20) if i not in (12, 15)] + [i for i in range(30, 40) if i != 33]


def test_default_block_leaves_each_part_two_blocks_and_ranges_read_back():
    assert [default_block(n) for n in (101, 40, 16, 8, 5, 3)] == [10, 10, 4, 2, 1, 1]
    assert index_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and index_ranges([]) == ""


def test_the_bootstrap_is_paired_and_its_blocks_wrap_around():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 50, (12, 3, 3))
    candidate = reference + rng.integers(0, 5, (12, 3, 3))
    # paired: a candidate identical to the reference drops exactly 0 in every resample
    assert np.all(bootstrap_drops(reference, reference.copy(), block=3, resamples=50) == 0)
    # one block as long as the set is a rotation of all images: every resample is the whole set
    whole = bootstrap_drops(reference, candidate, block=12, resamples=20)
    assert np.allclose(whole, whole[0]) and whole[0] != 0
    spread = bootstrap_drops(reference, candidate, block=1, resamples=200)
    assert spread.std() > 0 and np.array_equal(spread, bootstrap_drops(reference, candidate, block=1, resamples=200))


def _ranged(folder, count, seed, low, high):
    """`write_images` with pixel values mapped into [low, high]."""
    write_images(folder, count, seed=seed)
    for path in folder.iterdir():
        values = np.asarray(Image.open(path)).astype(np.float32) / 255
        Image.fromarray((low + values * (high - low)).astype(np.uint8)).save(path)
    return folder


@pytest.fixture(scope="module")
def disagreeing(tmp_path_factory):
    root = tmp_path_factory.mktemp("disagreeing")
    return {"calib": _ranged(root / "calib", 12, 0, 0, 90), "eval": _ranged(root / "eval", 8, 1, 0, 90),
            "bright": _ranged(root / "bright", 8, 2, 150, 255)}


def _build(directory, data, *extra):
    return runner.invoke(app, ["build", str(directory), "-p", "int8", "--calib", str(data["calib"]), "--eval-data",
                               str(data["eval"]), "--miou-budget", BUDGET, "--json", *map(str, extra)])


def test_a_confirmation_that_disagrees_stops_the_build_and_says_what_would_meet_it(outlier, disagreeing):
    result = _build(outlier, disagreeing, "--confirm-data", disagreeing["bright"])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "--miou-budget 15.0 is not confirmed" in line and "nothing was written" in line
    assert "support a budget of" in line and "not noise" in line and "--accept-unconfirmed" in line
    assert "onnx-int8-ort" not in Manifest.load(outlier).artifacts and not (outlier / "model.int8-ort.onnx").exists()


def test_accept_unconfirmed_writes_the_graph_marked_unconfirmed(outlier, disagreeing):
    result = _build(outlier, disagreeing, "--confirm-data", disagreeing["bright"], "--accept-unconfirmed")
    assert result.exit_code == 0, result.output
    assert "is not confirmed" in result.stderr and "written marked unconfirmed" in result.stderr
    record = Manifest.load(outlier).artifact("onnx-int8-ort").mixed_precision
    confirmation = record.confirmation
    assert record.final["drop"] <= float(BUDGET) < confirmation["drop"]  # met where chosen, missed where confirmed
    assert not confirmation["confirmed"] and confirmation["accepted_unconfirmed"]
    assert confirmation["interval"][0] > float(BUDGET)  # beyond the noise
    assert record.kept_float == ["/model/head/Conv"]
    assert record.split["confirmation"] == {"images": 8, "data": str(disagreeing["bright"])}
    assert record.split["choice"]["images"] == record.eval["images"] == 8  # the whole evaluation set chose
    assert "NOT confirmed on 8 other images" in result.stdout


def test_a_confirmation_set_too_small_is_one_line(outlier, disagreeing, tmp_path):
    few = write_images(tmp_path / "few", 3, seed=5)
    result = _build(outlier, disagreeing, "--confirm-data", few)
    assert result.exit_code == 2 and "has 3 image(s); confirming a budget needs at least 4" in result.stderr
    small = write_images(tmp_path / "small", 6, seed=6)  # split in blocks of 1: 3 images would confirm
    result = runner.invoke(app, ["build", str(outlier), "-p", "int8", "--calib", str(disagreeing["calib"]),
                                 "--eval-data", str(small), "--miou-budget", BUDGET])
    assert result.exit_code == 2 and "the confirmation part of" in result.stderr and "has 3 image(s)" in result.stderr
    assert "onnx-int8-ort" not in Manifest.load(outlier).artifacts


def test_a_confirmation_set_sharing_images_is_refused(outlier, disagreeing, tmp_path):
    import shutil

    shared = tmp_path / "shared"
    shutil.copytree(disagreeing["bright"], shared)
    shutil.copy(next(disagreeing["eval"].iterdir()), shared / "copy.png")  # same content, another name
    result = _build(outlier, disagreeing, "--confirm-data", shared)
    assert result.exit_code == 2 and "shares 1 image(s) with the evaluation or calibration images" in result.stderr


def test_confirmation_options_need_a_budget(outlier, disagreeing):
    result = runner.invoke(app, ["build", str(outlier), "-p", "int8", "--confirm-data", str(disagreeing["bright"]),
                                 "--workers", "2"])
    assert result.exit_code == 2 and "--confirm-data, --workers only apply with --miou-budget" in result.stderr


def test_workers_and_split_block_reach_the_search(outlier, outlier_images, monkeypatch):
    from segdeploy.precision import sensitivity

    calls = []
    real = sensitivity._errors_in_processes
    monkeypatch.setattr(sensitivity, "_errors_in_processes", lambda *a: calls.append(a[5]) or real(*a))
    calib, evaluation = outlier_images
    result = runner.invoke(app, ["build", str(outlier), "-p", "int8", "--calib", str(calib), "--eval-data", str(evaluation),
                                 "--miou-budget", BUDGET, "--workers", "2", "--split-block", "1"])
    assert result.exit_code == 0, result.output
    assert calls == [2]
    record = Manifest.load(outlier).artifact("onnx-int8-ort").mixed_precision
    assert record.split["block"] == 1 and record.split["confirmation"]["indices"] == "1,3,5,7"
    assert record.kept_float == ["/model/head/Conv"] and record.confirmation["confirmed"]


def test_the_bootstrap_block_is_at_most_a_quarter_of_each_part():
    """A block as long as the part would make every resample a rotation of it: an interval of width 0."""
    from types import SimpleNamespace

    from segdeploy.precision.confirm import Parts, _with_block

    parts = _with_block(Parts(SimpleNamespace(images=51), SimpleNamespace(images=5), {"block": 10}))
    assert parts.choice.bootstrap_block == 10 and parts.confirmation.bootstrap_block == 1
