"""trtexec-style shape options checked against the manifest."""

from __future__ import annotations

import pytest

from segdeploy.backends.tensorrt.profiles import parse_shapes, resolve_profile
from segdeploy.errors import UsageError

DYNAMIC = [{"name": "input", "shape": ["batch", 3, "height", "width"], "dtype": "float32"}]
STATIC = [{"name": "input", "shape": [1, 3, 96, 160], "dtype": "float32"}]
EXPORT = {"input": [1, 3, 96, 160]}


def test_parse_trtexec_syntax():
    assert parse_shapes("input:1x3x256x512", "--opt-shapes") == {"input": (1, 3, 256, 512)}
    assert parse_shapes("a:1x3,b:2x4x5", "--min-shapes") == {"a": (1, 3), "b": (2, 4, 5)}
    assert parse_shapes(None, "--min-shapes") == {}


@pytest.mark.parametrize("text", ["input=1x3x8x8", "input:1x3xAx8", ":1x3", "input:0x3x8x8"])
def test_parse_rejects_malformed(text):
    with pytest.raises(UsageError):
        parse_shapes(text, "--min-shapes")


def test_dynamic_defaults_to_the_export_shape():
    profile = resolve_profile(DYNAMIC, EXPORT, {}, {}, {})
    assert profile == {"input": {"min": [1, 3, 96, 160], "opt": [1, 3, 96, 160], "max": [1, 3, 96, 160]}}


def test_dynamic_range():
    profile = resolve_profile(DYNAMIC, EXPORT, {"input": (1, 3, 64, 96)}, {}, {"input": (4, 3, 256, 320)})
    assert profile["input"]["min"] == [1, 3, 64, 96] and profile["input"]["max"] == [4, 3, 256, 320]
    assert profile["input"]["opt"] == [1, 3, 96, 160]


def test_static_graph_needs_no_profile():
    assert resolve_profile(STATIC, EXPORT, {}, {"input": (1, 3, 96, 160)}, {}) == {}


def test_static_axis_contradiction():
    with pytest.raises(UsageError, match="contradicts the manifest: axis 2"):
        resolve_profile(STATIC, EXPORT, {}, {}, {"input": (1, 3, 128, 160)})


def test_channel_axis_is_fixed_even_when_hw_dynamic():
    with pytest.raises(UsageError, match="axis 1"):
        resolve_profile(DYNAMIC, EXPORT, {"input": (1, 1, 64, 96)}, {}, {})


def test_unordered_profile():
    with pytest.raises(UsageError, match="not ordered"):
        resolve_profile(DYNAMIC, EXPORT, {"input": (1, 3, 128, 160)}, {}, {})


def test_unknown_input_name():
    with pytest.raises(UsageError, match="graph's inputs are input"):
        resolve_profile(DYNAMIC, EXPORT, {"image": (1, 3, 64, 96)}, {}, {})


def test_rank_mismatch():
    with pytest.raises(UsageError, match="4 dimensions|3 dimensions"):
        resolve_profile(DYNAMIC, EXPORT, {}, {"input": (3, 96, 160)}, {})
