"""OpenVINO backend: artifacts against onnxruntime (an independent runtime) on real images, precision honesty, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from segdeploy.atomic import sha256_file
from segdeploy.backends import openvino as ov_backend
from segdeploy.backends.onnxruntime import OrtRunner
from segdeploy.backends.select import cannot_run_here, make_runner
from segdeploy.errors import SegdeployError
from segdeploy.manifest import Manifest
from segdeploy.precision.calibration import CalibrationSet, reader_for

from tests.helpers import CALIB, DEMO_MODEL_YAML, REPO, export_demo

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'segdeploy[openvino]')")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The shipped trained demo U-Net (96×128) built for onnxruntime INT8 and OpenVINO fp32/bf16/int8."""
    from segdeploy.build import BuildOptions, build_artifacts

    out = export_demo(tmp_path_factory.mktemp("ov") / "demo")
    # every layer in its hint (the per-layer choice, timed and so machine-dependent: test_openvino_layers.py)
    build_artifacts(out, ["fp32", "bf16", "int8"], "openvino", BuildOptions(calib=CALIB, calib_size=16, ov_fp32_where_faster=False))
    return out


@pytest.fixture(scope="module")
def val_batches(demo):
    """Six real calib/ val images, preprocessed as the manifest says."""
    stems = (CALIB / "splits" / "val.txt").read_text().split()[:6]
    images = tuple(CALIB / "images" / f"{stem}.jpg" for stem in stems)
    reader = reader_for(Manifest.load(demo), CalibrationSet(CALIB, images, len(images)))
    return [reader.feed(i) for i in range(len(reader))]


def _logits(runner, batches):
    with runner:
        return [next(iter(runner.infer(b).values())) for b in batches]


def _agreement(a, b):
    return float(np.mean([np.mean(x.argmax(1) == y.argmax(1)) for x, y in zip(a, b)]))


def _rel_error(a, b):
    return max(float(np.abs(x - y).max() / (np.abs(y).max() + 1e-12)) for x, y in zip(a, b))


# -- against onnxruntime ---------------------------------------------------------------------------


def test_fp32_equals_onnxruntime_on_real_images(demo, val_batches):
    manifest = Manifest.load(demo)
    ov = _logits(make_runner(manifest, "ov-fp32", threads=1), val_batches)
    ort = _logits(OrtRunner(manifest.verify("onnx-fp32"), threads=1), val_batches)
    assert len({x.argmax(1).tobytes() for x in ort}) == len(ort)  # real, varied class maps
    assert _rel_error(ov, ort) < 1e-4  # bf16 (this CPU's default) would be ~1e-2 off
    assert _agreement(ov, ort) > 0.999


def test_int8_artifact_agrees_with_onnxruntime_run_of_the_same_graph(demo, val_batches):
    manifest = Manifest.load(demo)
    entry = manifest.artifact("ov-int8")
    assert entry.parent == "onnx-int8-ort" and entry.settings["source_graph"] == "model.int8-ort.onnx"
    ov = _logits(make_runner(manifest, "ov-int8", threads=1), val_batches)
    ort_int8 = _logits(OrtRunner(manifest.verify("onnx-int8-ort"), threads=1), val_batches)
    ort_fp32 = _logits(OrtRunner(manifest.verify("onnx-fp32"), threads=1), val_batches)
    assert _agreement(ov, ort_int8) > 0.995
    # Same graph: OpenVINO is closer to onnxruntime's INT8 run than INT8 is to FP32 (it really quantizes).
    assert _rel_error(ov, ort_int8) < _rel_error(ov, ort_fp32)
    assert _rel_error(ov, ort_fp32) > 1e-3


# -- precision honesty -----------------------------------------------------------------------------


def test_runtime_precision_is_read_from_the_execution_graph(demo):
    manifest = Manifest.load(demo)
    seen = {}
    for name in ("ov-fp32", "ov-bf16", "ov-int8"):
        with make_runner(manifest, name, threads=1) as runner:
            seen[name] = runner.runtime_precisions
    assert set(seen["ov-fp32"]) == {"f32"}
    assert set(seen["ov-bf16"]) == {"bf16"}
    assert set(seen["ov-int8"]) <= {"u8", "i8"} and seen["ov-int8"]
    assert manifest.artifact("ov-bf16").settings["INFERENCE_PRECISION_HINT"] == "bf16"


def test_bf16_really_computes_in_bf16(demo, val_batches):
    """Independent of OpenVINO's report: BF16 logits differ from FP32 by bf16 rounding, yet agree."""
    manifest = Manifest.load(demo)
    bf16 = _logits(make_runner(manifest, "ov-bf16", threads=1), val_batches)
    fp32 = _logits(OrtRunner(manifest.verify("onnx-fp32"), threads=1), val_batches)
    assert _rel_error(bf16, fp32) > 1e-3  # an FP32 run would be ~1e-6 away
    assert _agreement(bf16, fp32) > 0.99


def test_a_silently_fp32_bf16_run_fails(demo, monkeypatch):
    """If the bf16 hint were not applied, activation refuses instead of running FP32 under a BF16 name."""
    real = ov_backend.compile_config
    monkeypatch.setattr(ov_backend, "compile_config",
                        lambda precision, threads=None: {**real(precision, threads), "INFERENCE_PRECISION_HINT": "f32"})
    runner = make_runner(Manifest.load(demo), "ov-bf16", threads=1)
    with pytest.raises(SegdeployError, match="does not compute this bf16 artifact in bf16: its compute layers run in f32"):
        runner.activate()


def test_fp32_without_the_hint_would_run_bf16_and_is_refused(demo, monkeypatch):
    """This CPU's OpenVINO default is bf16: an FP32 artifact compiled without its hint must not pass as FP32."""
    monkeypatch.setattr(ov_backend, "compile_config", lambda precision, threads=None: {"PERFORMANCE_HINT": "LATENCY"})
    if "bf16" not in {c.lower() for c in ov_backend.device_capabilities("CPU")}:
        pytest.skip("this CPU's OpenVINO default is f32 anyway (no BF16)")
    with pytest.raises(SegdeployError, match="does not compute this fp32 artifact in fp32"):
        make_runner(Manifest.load(demo), "ov-fp32", threads=1).activate()


def test_bf16_refused_on_a_cpu_without_bf16(demo, cli, monkeypatch, tmp_path):
    monkeypatch.setattr(ov_backend, "device_capabilities", lambda device: ["FP32", "INT8", "BIN", "EXPORT_IMPORT"])
    copy = tmp_path / "d"
    shutil.copytree(demo, copy)
    (copy / "model.bf16.ov.xml").unlink()
    before = (copy / "manifest.json").read_text()
    result = cli("build", str(copy), "-p", "bf16", "--backend", "openvino")
    assert result.returncode == 1
    assert "does not support BF16" in result.stderr and "AVX512-BF16 or AMX" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (copy / "model.bf16.ov.xml").exists() and (copy / "manifest.json").read_text() == before
    # an existing BF16 artifact is not run in FP32 either: it cannot run here, with the reason
    entry = Manifest.load(demo).artifact("ov-bf16")
    assert "does not support BF16" in cannot_run_here(entry)
    assert cannot_run_here(Manifest.load(demo).artifact("ov-fp32")) is None


def test_hinted_precisions_are_built_from_the_fp32_graph(demo, tmp_path):
    """fp16/bf16 for OpenVINO are the FP32 graph with a precision hint: no FP16 graph is made, the FP32
    graph is listed once, and each IR's parent is the FP32 graph."""
    from segdeploy.build import BuildOptions, build_artifacts

    if "FP16" not in ov_backend.device_capabilities("CPU"):
        pytest.skip("this CPU has no native FP16 for OpenVINO")
    copy = tmp_path / "d"
    shutil.copytree(demo, copy)
    result = build_artifacts(copy, ["fp32", "fp16"], "openvino", BuildOptions())
    assert [a["name"] for a in result.artifacts] == ["onnx-fp32", "ov-fp32", "ov-fp16"]
    manifest = Manifest.load(copy)
    assert "onnx-fp16" not in manifest.artifacts and not (copy / "model.fp16.onnx").exists()
    assert {manifest.artifact(n).parent for n in ("ov-fp32", "ov-fp16", "ov-bf16")} == {"onnx-fp32"}
    assert manifest.artifact("ov-int8").parent == "onnx-int8-ort"
    with make_runner(manifest, "ov-fp16", threads=1) as runner:
        assert "f16" in runner.runtime_precisions


# -- the compiled cache ------------------------------------------------------------------------------


def test_compiled_cache_is_recorded_hashed_and_used(demo, tmp_path, val_batches, monkeypatch):
    from segdeploy.build import BuildOptions, build_artifacts

    copy = tmp_path / "d"
    shutil.copytree(demo, copy)
    build_artifacts(copy, ["fp32"], "openvino", BuildOptions(ov_cache=True))
    manifest = Manifest.load(copy)
    blob = manifest.artifact("ov-fp32").companions["compiled"]
    assert blob.file == "model.fp32.cpu.ov.blob" and blob.sha256 == sha256_file(copy / blob.file)
    runner = make_runner(manifest, "ov-fp32", threads=1)
    cached = _logits(runner, val_batches)
    assert runner.loaded_from == "compiled blob" and set(runner.runtime_precisions) == {"f32"}
    ort = _logits(OrtRunner(manifest.verify("onnx-fp32"), threads=1), val_batches)
    assert _rel_error(cached, ort) < 1e-4
    monkeypatch.setattr(ov_backend, "version", lambda: "0.0.0")  # another OpenVINO: the IR is compiled instead
    runner = make_runner(manifest, "ov-fp32", threads=1)
    _logits(runner, val_batches[:1])
    assert runner.loaded_from == "IR"
    (copy / blob.file).write_bytes(b"tampered")
    with pytest.raises(SegdeployError, match="sha256 mismatch"):
        manifest.verify("ov-fp32")


# -- Segmenter, bench, pipeline ----------------------------------------------------------------------


def test_segmenter_picks_openvino_on_x86_and_matches_onnxruntime(demo):
    import platform

    from segdeploy import Segmenter
    from segdeploy.images import read_rgb
    from segdeploy.backends.registry import preference

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("OpenVINO is preferred on x86 only")
    assert preference("aarch64").index("ov-int8") > preference("aarch64").index("onnx-fp16")
    frames = [read_rgb(p) for p in sorted((CALIB / "images").iterdir())[:4]]
    with Segmenter(demo, threads=1) as seg, Segmenter(demo, artifact="onnx-int8-ort", threads=1) as ort:
        assert seg.artifact == "ov-int8"
        maps = [(seg(f), ort(f)) for f in frames]
    assert all(len(np.unique(a)) > 1 for a, _ in maps)
    assert np.mean([np.mean(a == b) for a, b in maps]) > 0.995


def test_bench_shows_openvino_rows_with_drift(demo, cli, tmp_path):
    result = cli("bench", str(demo), "--threads", "1", "--iterations", "3", "--warmup", "1", "--rounds", "1",
                 "--limit", "4", "--no-plots", "--report-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    targets = json.loads(result.stdout)["targets"]
    for name in ("ov-fp32", "ov-bf16", "ov-int8"):
        assert targets[name]["backend"] == "openvino"
        assert targets[name]["latency"]["inference"]["median"] > 0
    assert targets["ov-fp32"]["accuracy"]["pixel_agreement"] > 99.9
    bf16 = targets["ov-bf16"]["accuracy"]
    assert 95 < bf16["pixel_agreement"] and bf16["delta_miou"] is not None


def test_pipeline_with_openvino_backend(cli, tmp_path):
    config = tmp_path / "matrix.yaml"
    config.write_text(f"""
out: {tmp_path / 'out'}
data: {CALIB}
split: val
calib: {CALIB}
calib_size: 8
precisions: [fp32, bf16, int8]
backends: [onnxruntime, openvino]
openvino_device: cpu
openvino_cache: true
bench: {{iterations: 2, warmup: 1, rounds: 1, limit: 3, plots: false}}
""" + DEMO_MODEL_YAML)
    result = cli("pipeline", str(config))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]
    by_name = {r["artifact"]: r for r in rows}
    assert {"ov-fp32", "ov-bf16", "ov-int8", "onnx-int8-ort"} <= set(by_name)
    assert by_name["ov-int8"]["backend"] == "openvino" and by_name["ov-int8"]["miou"] > 50
    assert "onnx-bf16" not in by_name  # bf16 is built for OpenVINO only
    manifest = Manifest.load(tmp_path / "out" / "demo")
    for precision in ("fp32", "bf16", "int8"):  # openvino_device/openvino_cache reached the build
        artifact = manifest.artifact(f"ov-{precision}")
        assert artifact.openvino.device == "CPU"
        assert artifact.companions["compiled"].file == f"model.{precision}.cpu.ov.blob"
        manifest.verify(f"ov-{precision}")


@pytest.mark.parametrize("setting, message", [
    ("openvino_device: tpu", "openvino_device: expected an OpenVINO device (CPU, GPU, NPU, AUTO, or one of them numbered "
                             "like GPU.1), got the string 'tpu'"),
    ("openvino_device: NPU", "OpenVINO device NPU is not available here; available: "),
    ("openvino_device: AUTO\nopenvino_cache: true", "--ov-cache stores a model compiled for one device"),
])
def test_pipeline_openvino_settings_refused_before_any_export(cli, tmp_path, setting, message):
    if "NPU" in setting and "NPU" in ov_backend.available_devices():
        pytest.skip("this machine has an NPU")
    config = tmp_path / "matrix.yaml"
    config.write_text(f"out: {tmp_path / 'out'}\ncalib: {CALIB}\nprecisions: [fp32]\nbackends: [openvino]\n"
                      + setting + "\n" + DEMO_MODEL_YAML)
    result = cli("pipeline", str(config))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out" / "demo").exists()  # refused before the export


# -- bad input: one line, exit ≠ 0, nothing half-written -------------------------------------------


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def test_openvino_not_installed(deploy, cli, monkeypatch):
    directory = deploy("static")
    before = _files(directory)
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    result = cli("build", str(directory), "-p", "fp32", "--backend", "openvino")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        'error: the OpenVINO backend needs the openvino package, which is not installed '
        '(install it with `pip install "segdeploy[openvino]"`)']
    assert _files(directory) == before


def test_openvino_artifacts_skipped_without_openvino(demo, monkeypatch):
    from segdeploy.runtime import choose_artifact

    monkeypatch.setitem(sys.modules, "openvino", None)
    manifest = Manifest.load(demo)
    assert "pip install" in cannot_run_here(manifest.artifact("ov-int8"))
    assert choose_artifact(manifest) == "onnx-int8-ort"


def test_an_ov_artifact_recorded_without_its_openvino_record_is_refused(demo, tmp_path):
    copy = tmp_path / "d"
    shutil.copytree(demo, copy)
    manifest = Manifest.load(copy)
    manifest.artifact("ov-int8").openvino = None
    manifest.save()
    manifest = Manifest.load(copy)
    assert "recorded without its OpenVINO details" in cannot_run_here(manifest.artifact("ov-int8"))
    with pytest.raises(SegdeployError, match="model.int8.ov.xml is recorded without its OpenVINO details"):
        make_runner(manifest, "ov-int8")


@pytest.mark.parametrize("device, code, message", [
    ("GPU", 1, "OpenVINO device GPU is not available here; available: CPU"),
    ("TPU", 2, "unknown OpenVINO device 'TPU'; valid: CPU, GPU, NPU, AUTO"),
])
def test_absent_or_unknown_device(deploy, cli, device, code, message):
    directory = deploy("static")
    before = _files(directory)
    result = cli("build", str(directory), "-p", "fp32", "--backend", "openvino", "--device", device)
    assert result.returncode == code and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _files(directory) == before


def test_graph_openvino_cannot_read(deploy, cli):
    directory = deploy("static")
    manifest = Manifest.load(directory)
    node = helper.make_node("Frobnicate", ["input"], ["logits"], domain="com.example")
    entry = manifest.artifact("onnx-fp32")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 96, 160])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, 96, 160])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)]),
              str(directory / entry.file))
    entry.sha256 = sha256_file(directory / entry.file)
    manifest.save()
    before = _files(directory)
    result = cli("build", str(directory), "-p", "fp32", "--backend", "openvino")
    assert result.returncode == 1
    assert "OpenVINO cannot read model.onnx" in result.stderr and "com.example.Frobnicate" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _files(directory) == before and "ov-fp32" not in Manifest.load(directory).artifacts


def test_openvino_options_need_the_openvino_backend(deploy, cli):
    result = cli("build", str(deploy("static")), "-p", "bf16")
    assert result.returncode == 2 and "only apply to --backend openvino" in result.stderr


def test_help_and_other_backends_do_not_import_openvino(demo, tmp_path):
    """`segdeploy --help` and an onnxruntime Segmenter leave openvino unimported (lazy import)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("model.onnx", "manifest.json"):
        shutil.copy(demo / name, plain / name)
    manifest = Manifest.load(plain)
    manifest.content.artifacts = {"onnx-fp32": manifest.artifact("onnx-fp32")}
    manifest.save()
    code = (f"import sys; from typer.testing import CliRunner; from segdeploy.cli import app; "
            f"assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
            f"from segdeploy import Segmenter; Segmenter({str(plain)!r}).close(); print('openvino' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_auto_device_builds_and_runs_but_cannot_be_cached(deploy, cli):
    directory = deploy("static")
    result = cli("build", str(directory), "-p", "fp32", "--backend", "openvino", "--device", "AUTO", "--ov-cache")
    assert result.returncode == 2 and "AUTO chooses at run time" in result.stderr
    assert cli("build", str(directory), "-p", "fp32", "--backend", "openvino", "--device", "auto").returncode == 0
    manifest = Manifest.load(directory)
    assert manifest.artifact("ov-fp32").openvino.device == "AUTO"
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, 96, 160)).astype(np.float32)}
    with make_runner(manifest, "ov-fp32", threads=1) as ov, OrtRunner(manifest.verify("onnx-fp32"), threads=1) as ort:
        np.testing.assert_allclose(ov.infer(x)["logits"], ort.infer(x)["logits"], rtol=1e-4, atol=1e-4)
