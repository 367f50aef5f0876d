"""classes.json's void / not_evaluated entries, a model's classes with a void output, and
`match_classes`: which model classes are scored against which labels, and the one-line errors."""

from __future__ import annotations

import json

import pytest

from segdeploy.classes import ClassInfo, ClassMapping, VoidClass, load_classes, match_classes
from segdeploy.errors import SegdeployError
from segdeploy.manifest.schema import decode

NAMES = ["sky", "road", "car"]


def _write(tmp_path, **entries):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"classes": NAMES, **entries}))
    return path


def test_void_and_not_evaluated_are_read(tmp_path):
    info = load_classes(_write(tmp_path, ignore_index=3, void={"index": 3, "name": "unlabelled", "color": [1, 2, 3]},
                               not_evaluated=[5]))
    assert info.not_evaluated == (3, 5) and info.void == VoidClass(3, "unlabelled", (1, 2, 3))
    assert load_classes(_write(tmp_path, void={"index": 3})).void == VoidClass(3, "void", (0, 0, 0))
    for bad in ({"void": {"name": "x"}}, {"void": [3]}, {"void": {"index": 3, "color": [0, 0]}},
                {"not_evaluated": 3}, {"not_evaluated": [-1]}, {"not_evaluated": [True]}):
        with pytest.raises(SegdeployError) as error:
            load_classes(_write(tmp_path, **bad))
        assert str(tmp_path) in str(error.value) and ("void" in str(error.value) or "not_evaluated" in str(error.value))


def test_model_classes_append_the_void_output_named_and_coloured(tmp_path):
    data = load_classes(_write(tmp_path, ignore_index=3, void={"index": 3, "name": "unlabelled", "color": [9, 9, 9]}))
    model = data.for_outputs(4, "classes.json")
    assert model.names == (*NAMES, "unlabelled") and model.palette[3] == (9, 9, 9) and model.palette[:3] == data.palette
    assert model.not_evaluated == (3,)
    assert decode(ClassInfo, model.to_dict(), "classes") == model  # the manifest keeps all of it
    assert data.for_outputs(3, "classes.json") is data
    # Without a void entry the ignore index is still a known extra output: named "void", black.
    plain = load_classes(_write(tmp_path, ignore_index=3)).for_outputs(4, "classes.json")
    assert plain.names[3] == "void" and plain.palette[3] == (0, 0, 0)
    with pytest.raises(SegdeployError, match=r"lists 3 classes but the model outputs 5: class\(es\) \[4\] are not declared"):
        data.for_outputs(5, "classes.json")
    with pytest.raises(SegdeployError, match="lists 3 classes but the model outputs 2"):
        data.for_outputs(2, "classes.json")


def test_match_classes_extra_ignore_or_declared_class_is_not_evaluated(tmp_path):
    camvid_like = load_classes(_write(tmp_path, ignore_index=3))
    mapping = match_classes(ClassInfo.default(4), camvid_like, "data")
    assert (mapping.model_classes, mapping.dataset_classes, mapping.not_evaluated) == (4, 3, (3,))
    assert mapping.evaluated == (0, 1, 2) and mapping.evaluated_names == tuple(NAMES) and not mapping.identity
    assert "counts as a miss" in mapping.rule and "3 (void)" in mapping.rule
    # Cityscapes style: ignore 255 in the labels, the model's 20th channel declared by the data or by the model.
    declared = load_classes(_write(tmp_path, ignore_index=255, not_evaluated=[3]))
    assert match_classes(ClassInfo.default(4), declared, "data").not_evaluated == (3,)
    model = load_classes(_write(tmp_path, ignore_index=255, void={"index": 3})).for_outputs(4, "x")
    data = ClassInfo(tuple(NAMES), ClassInfo.default(3).palette, 255)
    assert match_classes(model, data, "data").to_dict() == {
        "model_classes": 4, "dataset_classes": 3, "evaluated_classes": 3, "not_evaluated": [3], "ignore_index": 255,
        "rule": match_classes(model, data, "data").rule}
    # A listed class declared not evaluated: its labels are skipped, it is out of the mean.
    inside = load_classes(_write(tmp_path, not_evaluated=[1]))
    assert ClassMapping.same(inside).evaluated == (0, 2) and "label(s) [1]" in ClassMapping.same(inside).rule
    assert ClassMapping.same(ClassInfo.default(3)).identity


def test_other_mismatches_are_one_line_saying_what_to_fix(tmp_path):
    data = load_classes(_write(tmp_path, ignore_index=255))
    with pytest.raises(SegdeployError) as error:
        match_classes(ClassInfo.default(2), data, "val/")
    assert "val/ has 3 classes but the model outputs 2" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(SegdeployError) as error:
        match_classes(ClassInfo.default(4), data, "val/")
    message = str(error.value)
    assert "model's class(es) [3] are neither the data's ignore_index (255) nor declared" in message
    assert '"not_evaluated": [3]' in message
    renamed = ClassInfo(("sky", "car", "road"), data.palette)
    with pytest.raises(SegdeployError, match="the class order must be the same"):
        match_classes(renamed, data, "val/")
