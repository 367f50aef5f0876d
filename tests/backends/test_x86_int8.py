"""INT8 on x86 CPUs without VNNI: 7-bit weights (`build --reduce-range`) compute exactly there,
8-bit weights saturate and are refused where they would.

A CPU without VNNI is emulated with oneDNN's ONEDNN_MAX_CPU_ISA=AVX2, which OpenVINO's CPU plugin
honours (its kernels then add pairs of U8×S8 products in saturating 16-bit lanes); the reference
is the same artifact on this CPU's own instruction set, in another process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from segdeploy.backends import x86_int8
from segdeploy.backends.select import cannot_run_here
from segdeploy.manifest import Manifest
from segdeploy.precision import quantize

from tests.helpers import CALIB, REPO, one_line_failure, run_cli

NO_VNNI = {"ONEDNN_MAX_CPU_ISA": "AVX2"}

RUN = r"""
import sys
import numpy as np
from pathlib import Path
from segdeploy.backends.openvino import OpenVinoRunner
from segdeploy.manifest import Manifest
from segdeploy.precision.calibration import CalibrationSet, reader_for
deploy, calib, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
stems = (calib / "splits" / "val.txt").read_text().split()[:6]
images = tuple(calib / "images" / f"{stem}.jpg" for stem in stems)
reader = reader_for(Manifest.load(deploy), CalibrationSet(calib, images, len(images)))
runner = OpenVinoRunner(deploy / "model.int8.ov.xml", precision="int8", threads=2)
with runner:
    np.save(out, np.stack([next(iter(runner.infer(reader.feed(i)).values())) for i in range(len(reader))]))
"""


def _weights(graph) -> list[np.ndarray]:
    """The INT8 initializers (Conv weights) of a Q/DQ graph."""
    model = onnx.load(str(graph))
    return [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The trained demo U-Net built for OpenVINO INT8 twice: 7-bit weights (--reduce-range, by the CLI)
    and 8-bit (--no-reduce-range); both with GPTQ rounding, the default."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'segdeploy[openvino]')")
    from tests.helpers import export_demo

    root = tmp_path_factory.mktemp("x86")
    made = {}
    for bits, flag in ((7, "--reduce-range"), (8, "--no-reduce-range")):
        deploy = export_demo(root / f"w{bits}")
        result = run_cli("build", deploy, "-p", "int8", "--backend", "openvino", flag, "--calib", CALIB, "--calib-size", "16")
        assert result.returncode == 0, result.stderr
        made[bits] = deploy
    return made


def _outputs(deploy, tmp_path, env=None) -> np.ndarray:
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.npy"
    done = subprocess.run([sys.executable, "-c", RUN, str(deploy), str(CALIB), str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=300)
    assert done.returncode == 0, done.stderr
    return np.load(out)


def test_reduce_range_keeps_gptq_weights_in_7_bits(built):
    """GPTQ re-chooses the integers: it must keep onnxruntime's 7-bit range, or the guarantee is gone."""
    manifest = Manifest.load(built[7])
    graph = manifest.artifact("onnx-int8-ort")
    assert graph.settings["reduce_range"] is True and graph.settings["weight_rounding"]["method"] == "gptq"
    assert graph.settings["weight_rounding"]["changed_weights"] > 0  # GPTQ did re-choose integers
    assert manifest.artifact("ov-int8").settings["reduce_range"] is True
    # some activations are read as S8 (`openvino_qdq`): the exactness test below covers them too
    assert manifest.artifact("ov-int8").settings["signed_midpoint_activations"] > 0
    weights = _weights(built[7] / "model.int8-ort.onnx")
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    # the 8-bit graph uses the full range (the check above is not vacuous)
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _weights(built[8] / "model.int8-ort.onnx")) == 127
    assert Manifest.load(built[8]).artifact("ov-int8").settings["reduce_range"] is False


def test_7bit_weights_are_exact_without_vnni_and_8bit_are_not(built, tmp_path):
    exact_here, _ = x86_int8.int8_dot_products_exact("openvino")
    if not exact_here:
        pytest.skip("this CPU has no VNNI: the native run is the saturating one")
    seven_native, seven_avx2 = _outputs(built[7], tmp_path), _outputs(built[7], tmp_path, NO_VNNI)
    np.testing.assert_array_equal(seven_avx2, seven_native)
    eight_native, eight_avx2 = _outputs(built[8], tmp_path), _outputs(built[8], tmp_path, NO_VNNI)
    # the emulation removes VNNI and the 8-bit graph's sums saturate: its logits move
    assert np.abs(eight_avx2 - eight_native).max() > 0.1


def test_8bit_artifacts_are_refused_where_they_saturate(built, monkeypatch, tmp_path):
    eight, seven = Manifest.load(built[8]), Manifest.load(built[7])
    monkeypatch.setattr(x86_int8, "cpu_has_vnni", lambda: False)
    monkeypatch.setattr(x86_int8, "is_x86", lambda: True)
    for name in ("onnx-int8-ort", "ov-int8"):
        reason = cannot_run_here(eight.artifact(name))
        assert reason and "no VNNI" in reason and "--reduce-range" in reason
        assert cannot_run_here(seven.artifact(name)) is None
    assert cannot_run_here(eight.artifact("onnx-fp32")) is None  # float graphs are not concerned
    monkeypatch.setattr(x86_int8, "cpu_has_vnni", lambda: True)
    assert cannot_run_here(eight.artifact("ov-int8")) is None
    monkeypatch.setattr(x86_int8, "cpu_has_vnni", lambda: None)  # flags unreadable (macOS, Windows): not refused on a guess
    assert cannot_run_here(eight.artifact("ov-int8")) is None
    monkeypatch.setattr(x86_int8, "is_x86", lambda: False)  # ARM: no such kernels
    monkeypatch.setattr(x86_int8, "cpu_has_vnni", lambda: False)
    assert cannot_run_here(eight.artifact("onnx-int8-ort")) is None


def test_cli_refuses_an_8bit_openvino_artifact_on_an_instruction_set_without_vnni(built):
    """One line, exit ≠ 0: the user's CPU (here emulated) would compute wrong sums."""
    deploy = built[8]
    before = (deploy / "manifest.json").read_text()
    result = run_cli("bench", deploy, "--artifact", "ov-int8", "--iterations", "1", "--warmup", "0", env=NO_VNNI)
    line = one_line_failure(result.returncode, result.stdout, result.stderr, contains=("ov-int8", "ONEDNN_MAX_CPU_ISA=AVX2"))
    assert "--backend openvino --reduce-range" in line
    assert (deploy / "manifest.json").read_text() == before
    # the 7-bit artifact runs there
    result = run_cli("bench", built[7], "--artifact", "ov-int8", "--iterations", "1", "--warmup", "0", "--json", env=NO_VNNI)
    assert result.returncode == 0, result.stderr


def test_segmenter_passes_over_an_8bit_artifact_it_cannot_run_exactly(built, monkeypatch, tmp_path):
    from segdeploy.runtime import Segmenter, choose_artifact

    copy = tmp_path / "d"
    shutil.copytree(built[8], copy)
    manifest = Manifest.load(copy)
    assert choose_artifact(manifest) == "ov-int8"
    monkeypatch.setattr(x86_int8, "cpu_has_vnni", lambda: False)
    monkeypatch.setattr(x86_int8, "is_x86", lambda: True)
    assert choose_artifact(manifest) not in ("ov-int8", "onnx-int8-ort")
    with pytest.raises(Exception, match="no VNNI"):
        Segmenter(copy, artifact="ov-int8")


def test_reduce_range_target_settings():
    assert quantize.target_for("onnxruntime").reduce_range is True  # the default: exact on every x86 CPU
    assert quantize.target_for("onnxruntime", False).reduce_range is False  # asked for: an ARM or VNNI target
    assert "8 bits" in quantize.target_for("onnxruntime", False).why
    assert quantize.weight_limits(quantize.target_for("onnxruntime")) == (-64, 64)
    assert quantize.weight_limits(quantize.target_for("onnxruntime", False)) == (-127, 127)
    assert quantize.target_for("tensorrt", True).reduce_range is False  # TensorRT accumulates in 32 bits


def test_an_8bit_build_on_a_cpu_without_vnni_warns_its_measurements_saturate(tmp_path, monkeypatch):
    """--no-reduce-range is for another CPU; this one's sums saturate, so the build's own drift and
    calibration measurements of the graph are not the target's: the user is told."""
    from segdeploy.build import BuildOptions, build_artifacts
    from segdeploy.precision.graphs import QuantOptions
    from tests.helpers import export_demo

    monkeypatch.setattr(x86_int8, "cpu_has_vnni", lambda: False)
    monkeypatch.setattr(x86_int8, "is_x86", lambda: True)
    deploy = export_demo(tmp_path / "d")
    warnings = []
    build_artifacts(deploy, ["int8"], "onnxruntime", BuildOptions(calib=CALIB, calib_size=4, quant=QuantOptions(reduce_range=False)),
                    warn=warnings.append)
    assert any("--no-reduce-range" in w and "no VNNI" in w for w in warnings), warnings
    assert Manifest.load(deploy).artifact("onnx-int8-ort").settings["reduce_range"] is False
    warnings.clear()  # the default (7-bit) graph is exact here: nothing to warn about
    build_artifacts(deploy, ["int8"], "onnxruntime", BuildOptions(calib=CALIB, calib_size=4), warn=warnings.append)
    assert not any("VNNI" in w for w in warnings), warnings
