"""OpenVINO bf16: layers measured slower in the hint keep FP32 (`backends.openvino_layers`).

Timings are the machine's; the tests fix them (monkeypatched `profile`/`end_to_end`) and check what
follows from them: which layers are chosen, that the marks in the IR make OpenVINO compute exactly
those layers in FP32 (read from its execution graph, and from the numbers: the marked model is closer
to FP32 than the all-bf16 one), that a marking which is not faster is undone byte for byte, and the record.
"""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.backends import openvino_layers as layers
from segdeploy.manifest import Manifest

from tests.helpers import CALIB, export_demo

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'segdeploy[openvino]')")

COMPUTE = {"Convolution"}


def _has_bf16() -> bool:
    return "BF16" in [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


needs_bf16 = pytest.mark.skipif(not _has_bf16(), reason="this CPU has no BF16 (AVX512-BF16/AMX): OpenVINO refuses the hint")


# -- the choice ------------------------------------------------------------------------------------


def test_slower_layers_needs_both_the_factor_and_the_share():
    hinted = {"a": 50.0, "b": 12.0, "c": 2.0, "d": 30.0, "pool": 9.0}
    fp32 = {"a": 20.0, "b": 11.0, "c": 0.5, "d": 40.0, "pool": 1.0}
    kinds = {"a": "Convolution", "b": "Convolution", "c": "Convolution", "d": "Convolution", "pool": "MaxPool"}
    # a: 2.5× and 30 ms; b: only 1.09×; c: 4× but 1.5 ms < 2 % of 103 ms; d faster in the hint; pool: not compute
    assert layers.slower_layers(hinted, fp32, kinds, COMPUTE, slower=1.2, share=0.02) == ["a"]
    assert layers.slower_layers(hinted, fp32, kinds, COMPUTE, slower=1.2, share=0.01) == ["a", "c"]
    assert layers.slower_layers(hinted, fp32, kinds, COMPUTE | {"MaxPool"}, slower=1.2, share=0.02) == ["a", "pool"]


# -- marks in the IR -------------------------------------------------------------------------------


def _two_convs(path):
    """An IR with two 3×3 convolutions, c1 then a dilated c2, seeded weights."""
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, 16, 24, 24], np.float32, name="x")
    c1 = ops.convolution(x, ops.constant(rng.standard_normal((16, 16, 3, 3)).astype(np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    c1.set_friendly_name("c1")
    c2 = ops.convolution(ops.relu(c1), ops.constant(rng.standard_normal((16, 16, 3, 3)).astype(np.float32)),
                         [1, 1], [4, 4], [4, 4], [4, 4])
    c2.set_friendly_name("c2")
    ov.save_model(ov.Model([c2], [x]), str(path), compress_to_fp16=False)
    return path


def _conv_precisions(xml, hint):
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    return compiled, {op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str)
                      for op in compiled.get_runtime_model().get_ordered_ops()
                      if op.get_rt_info()["layerType"].astype(str) == "Convolution"}


@needs_bf16
def test_a_marked_layer_computes_in_fp32_under_the_bf16_hint(tmp_path):
    xml = _two_convs(tmp_path / "m.xml")
    x = {"x": np.random.default_rng(1).standard_normal((1, 16, 24, 24)).astype(np.float32)}
    _, before = _conv_precisions(xml, "bf16")
    assert before == {"c1": "bf16", "c2": "bf16"}
    reference = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    all_bf16 = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})(x)[0]

    assert layers.mark_fp32(xml, ["c2", "no-such-layer"]) == ["c2"]
    compiled, after = _conv_precisions(xml, "bf16")
    assert after == {"c1": "bf16", "c2": "f32"}
    marked = compiled(x)[0]
    # Independent of OpenVINO's report: the marked model is still bf16 (c1), yet closer to FP32
    # than the all-bf16 one (c2 no longer rounds to bf16).
    error = lambda y: float(np.abs(y - reference).max())  # noqa: E731
    assert 0 < error(marked) < error(all_bf16)
    # and the mark survives a save/load round trip (every later load of the artifact)
    ov.save_model(ov.Core().read_model(str(xml)), str(tmp_path / "again.xml"), compress_to_fp16=False)
    assert _conv_precisions(tmp_path / "again.xml", "bf16")[1] == {"c1": "bf16", "c2": "f32"}


def _fixed_timings(monkeypatch, hinted, fp32, marked_ms, unmarked_ms):
    """`profile` answers with these per-layer times (hinted first), `end_to_end` with these totals."""
    answers = iter([(hinted, {k: "Convolution" for k in hinted}), (fp32, {k: "Convolution" for k in fp32})])
    monkeypatch.setattr(layers, "profile", lambda compiled, feed, runs=layers.PROFILE_RUNS: next(answers))
    monkeypatch.setattr(layers, "end_to_end", lambda requests, feed, rounds=layers.CONFIRM_ROUNDS:
                        {"marked": marked_ms, "unmarked": unmarked_ms})


def _compile_as(path, hinted, profiling):
    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "bf16" if hinted else "f32"})


@needs_bf16
def test_choose_keeps_the_marks_only_when_faster_end_to_end(tmp_path, monkeypatch):
    xml = _two_convs(tmp_path / "m.xml")
    original = xml.read_bytes()
    _fixed_timings(monkeypatch, {"c1": 1.0, "c2": 9.0}, {"c1": 1.5, "c2": 3.0}, marked_ms=5.0, unmarked_ms=10.0)
    choice = layers.choose(xml, _compile_as, {}, COMPUTE, lambda _: None)
    assert choice.layers == ("c2",) and _conv_precisions(xml, "bf16")[1] == {"c1": "bf16", "c2": "f32"}
    assert choice.record()["layer_ms"] == {"c2": {"hint": 9.0, "fp32": 3.0}}
    assert choice.record()["marked_ms"] == 5.0 and "10.0 → 5.0 ms" in choice.summary()

    xml.write_bytes(original)
    _fixed_timings(monkeypatch, {"c1": 1.0, "c2": 9.0}, {"c1": 1.5, "c2": 3.0}, marked_ms=10.5, unmarked_ms=10.0)
    choice = layers.choose(xml, _compile_as, {}, COMPUTE, lambda _: None)
    assert choice.layers == () and choice.slower == ("c2",)
    assert xml.read_bytes() == original  # undone byte for byte
    assert "not faster end to end" in choice.summary()

    _fixed_timings(monkeypatch, {"c1": 1.0, "c2": 2.0}, {"c1": 1.5, "c2": 3.0}, marked_ms=0, unmarked_ms=0)
    choice = layers.choose(xml, _compile_as, {}, COMPUTE, lambda _: None)
    assert choice.slower == () and xml.read_bytes() == original and "no layer slower" in choice.summary()

    # every compute layer slower in the hint: nothing is marked (a bf16 artifact must compute in bf16)
    _fixed_timings(monkeypatch, {"c1": 9.0, "c2": 9.0}, {"c1": 1.5, "c2": 3.0}, marked_ms=1, unmarked_ms=10)
    choice = layers.choose(xml, _compile_as, {}, COMPUTE, lambda _: None)
    assert choice.layers == () and set(choice.slower) == {"c1", "c2"} and xml.read_bytes() == original
    assert "build fp32 instead" in choice.summary()


# -- build ---------------------------------------------------------------------------------------------


@needs_bf16
def test_build_bf16_records_and_applies_the_choice(tmp_path, monkeypatch):
    """The demo's classifier made 'slower in bf16' (fixed timings): the artifact keeps it in FP32 in
    every later load (runner, compiled blob), records why, and --no-ov-fp32-where-faster keeps all in bf16."""
    from segdeploy.backends.select import make_runner
    from segdeploy.build import BuildOptions, build_artifacts

    out = export_demo(tmp_path / "demo")
    classifier = "/model/classifier/Conv/WithoutBiases"
    real_profile = layers.profile
    calls = []

    def profile(compiled, feed, runs=layers.PROFILE_RUNS):
        times, kinds = real_profile(compiled, feed, runs=1)
        if not calls:  # the hinted profile: the classifier made slow
            times[classifier] = 10 * sum(times.values())
        else:  # the FP32 profile: every layer as fast as in the hint, but the classifier 10× faster
            times = {name: calls[0].get(name, t) for name, t in times.items()}
            times[classifier] = calls[0][classifier] / 10
        calls.append(times)
        return times, kinds

    monkeypatch.setattr(layers, "profile", profile)
    monkeypatch.setattr(layers, "end_to_end", lambda requests, feed, rounds=0: {"marked": 1.0, "unmarked": 2.0})
    result = build_artifacts(out, ["bf16"], "openvino", BuildOptions(calib=CALIB, calib_size=2, ov_cache=True))
    manifest = Manifest.load(out)
    entry = manifest.artifact("ov-bf16")
    assert entry.settings["fp32_where_faster"]["layers"] == [classifier]
    assert entry.openvino.runtime_precisions["f32"] == 1 and entry.openvino.runtime_precisions["bf16"] > 10
    assert any("1 layer(s) slower in the hint kept in FP32" in n for n in result.notes)
    with make_runner(manifest, "ov-bf16", threads=1) as runner:
        assert runner.loaded_from == "compiled blob" and runner.runtime_precisions == entry.openvino.runtime_precisions
    (out / entry.companions["compiled"].file).unlink()  # the IR alone carries the mark too
    manifest.artifact("ov-bf16").companions.pop("compiled")
    with make_runner(manifest, "ov-bf16", threads=1) as runner:
        assert runner.loaded_from == "IR" and runner.runtime_precisions["f32"] == 1

    calls.clear()
    build_artifacts(out, ["bf16"], "openvino", BuildOptions(calib=CALIB, calib_size=2, ov_fp32_where_faster=False))
    entry = Manifest.load(out).artifact("ov-bf16")
    assert not calls and "fp32_where_faster" not in entry.settings
    assert set(entry.openvino.runtime_precisions) == {"bf16"}


def test_the_option_belongs_to_openvino(cli, tmp_path):
    out = export_demo(tmp_path / "demo")
    result = cli("build", str(out), "-p", "fp32", "--no-ov-fp32-where-faster")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: --ov-fp32-where-faster/--no-ov-fp32-where-faster only apply to --backend openvino"]
