"""The typed manifest: round trips, v1 files written by earlier segdeploy, tamper detection,
and validation on read (one clear line naming the file and the field)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from segdeploy.classes import ClassInfo
from segdeploy.errors import SegdeployError
from segdeploy.manifest import SCHEMA_VERSION, Manifest
from segdeploy.manifest.names import ONNX, OPENVINO_IR
from segdeploy.manifest.records import InputRecord, ModelRecord, OpenVinoRecord, OutputRecord
from segdeploy.preprocess import Preprocess

DATA = Path(__file__).with_name("data")
HELLO_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # of b"hello", computed elsewhere


def _new(directory) -> Manifest:
    return Manifest.new(directory, model=ModelRecord("m", "unet", "registry", 3),
                        input=InputRecord("input", [1, 3, 8, 12]), output=OutputRecord("logits"),
                        preprocess=Preprocess(), classes=ClassInfo.default(3))


def test_round_trip_and_verify(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello")
    manifest = _new(tmp_path)
    entry = manifest.add_artifact("a", "a.bin", kind=ONNX, precision="fp32", backend="onnxruntime")
    manifest.save()
    assert entry.sha256 == HELLO_SHA256 and entry.bytes == 5
    loaded = Manifest.load(tmp_path)
    assert loaded.artifact("a").precision == "fp32" and loaded.model.num_classes == 3
    assert loaded.spec.input_hw == (8, 12) and not loaded.spec.labels
    assert loaded.verify("a") == tmp_path / "a.bin"
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["artifacts"]["a"]["sha256"] == HELLO_SHA256 and "parity" not in on_disk["artifacts"]["a"]


def test_tampered_artifact_is_refused(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello")
    manifest = _new(tmp_path)
    manifest.add_artifact("a", "a.bin", kind=ONNX, precision="fp32", backend="onnxruntime")
    manifest.save()
    (tmp_path / "a.bin").write_bytes(b"hellO")
    with pytest.raises(SegdeployError, match="modified after it was recorded"):
        Manifest.load(tmp_path).verify("a")
    (tmp_path / "a.bin").unlink()
    with pytest.raises(SegdeployError, match="missing"):
        Manifest.load(tmp_path).verify("a")
    with pytest.raises(SegdeployError, match="no artifact 'b'.*artifacts: a"):
        Manifest.load(tmp_path).artifact("b")


def _with_companions(tmp_path) -> Manifest:
    """An IR-like artifact with its weights beside it, as the OpenVINO backend records one."""
    (tmp_path / "a.xml").write_bytes(b"<net/>")
    (tmp_path / "a.bin").write_bytes(b"hello")
    manifest = _new(tmp_path)
    manifest.add_artifact("a", "a.xml", kind=OPENVINO_IR, precision="bf16", backend="openvino", companions={"weights": "a.bin"},
                          openvino=OpenVinoRecord("2026.4", "CPU", {"CPU": ["FP32", "BF16"]}, {"bf16": 3}))
    manifest.save()
    return manifest


def test_companion_files_are_recorded_and_verified(tmp_path):
    _with_companions(tmp_path)
    loaded = Manifest.load(tmp_path)
    weights = loaded.artifact("a").companions["weights"]
    assert (weights.file, weights.sha256, weights.bytes) == ("a.bin", HELLO_SHA256, 5)
    assert loaded.artifact("a").openvino.runtime_precisions == {"bf16": 3}
    assert loaded.artifact("a").openvino.capabilities == {"CPU": ["FP32", "BF16"]}
    assert loaded.verify("a") == tmp_path / "a.xml"
    (tmp_path / "a.bin").write_bytes(b"hellO")  # the main file is intact: only the companion changed
    with pytest.raises(SegdeployError, match=r"artifact 'a' \(a\.bin\) was modified after it was recorded"):
        loaded.verify("a")
    (tmp_path / "a.bin").unlink()
    with pytest.raises(SegdeployError, match=r"artifact 'a' is missing: .*a\.bin"):
        loaded.verify("a")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a["openvino"]["runtime_precisions"].update(bf16="3"),
         r"artifacts\.a\.openvino\.runtime_precisions\.bf16 must be an integer, not a string"),
        (lambda a: a["openvino"].pop("device"), r"artifacts\.a\.openvino\.device is missing"),
        (lambda a: a["companions"]["weights"].pop("sha256"), r"artifacts\.a\.companions\.weights\.sha256 is missing"),
        (lambda a: a.update(companions=["a.bin"]), r"artifacts\.a\.companions must be an object"),
    ],
)
def test_invalid_openvino_fields_are_one_clear_error(tmp_path, edit, message):
    _with_companions(tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    edit(data["artifacts"]["a"])
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SegdeployError, match=message):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("name", ["plain", "fused"])
def test_reads_v1_manifests_written_by_earlier_segdeploy(tmp_path, name):
    """Files written by segdeploy before the typed schema (7d3103c): plain with FP16/INT8 graphs,
    `--calib-method best` and TensorRT-RTX engines; fused with an INT8 graph within a budget."""
    shutil.copy(DATA / f"v1_{name}.json", tmp_path / "manifest.json")
    original = json.loads((tmp_path / "manifest.json").read_text())
    manifest = Manifest.load(tmp_path)
    int8 = manifest.artifact("onnx-int8-ort")
    if name == "plain":
        assert list(manifest.artifacts) == ["onnx-fp32", "onnx-fp16", "onnx-int8-ort", "onnx-int8-trt", "trt-int8", "trt-fp32"]
        assert int8.calibration.comparison.picked == int8.calibration.method
        engine = manifest.artifact("trt-int8")
        assert engine.tensorrt.flavour == "tensorrt_rtx" and engine.parent == "onnx-int8-trt"
        assert manifest.artifact("onnx-fp32").parity.passed and manifest.spec.batch_dynamic
    else:
        assert manifest.spec.fused_preprocess and manifest.spec.labels and manifest.fused.argmax
        assert int8.mixed_precision.budget_miou_drop == original["artifacts"]["onnx-int8-ort"]["mixed_precision"]["budget_miou_drop"]
        assert int8.parity.compared.startswith("class maps")
    # Written back, nothing is lost: only null optional fields (engines' built_on_gpu on a CPU) are left out.
    written = manifest.to_dict()
    for entry in original["artifacts"].values():
        for key in [k for k, v in entry.items() if v is None and k in ("built_on_gpu", "hardware_compatibility_level")]:
            del entry[key]
    assert written == original


def _write(tmp_path, edit) -> Path:
    data = json.loads((DATA / "v1_fused.json").read_text())
    edit(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "schema version 2; this segdeploy reads up to 1.*upgrade segdeploy"),
        (lambda d: d.update(schema_version=0), "invalid manifest schema version 0: it must be an integer from 1 to 1"),
        (lambda d: d.update(schema_version=-3), "invalid manifest schema version -3"),
        (lambda d: d.update(schema_version="1"), 'invalid manifest schema version "1"'),
        (lambda d: d.update(schema_version=True), "invalid manifest schema version true"),
        (lambda d: d.pop("schema_version"), "invalid manifest schema version null"),
        (lambda d: d.pop("input"), r"is invalid: input is missing"),
        (lambda d: d.update(model=[]), r"is invalid: model must be an object, not a list"),
        (lambda d: d["model"].update(num_classes="six"), r"model\.num_classes must be an integer, not a string \('six'\)"),
        (lambda d: d["input"].update(shape="1x3"), r"input\.shape must be a list"),
        (lambda d: d["artifacts"]["onnx-fp32"].pop("sha256"), r"artifacts\.onnx-fp32\.sha256 is missing"),
        (lambda d: d["artifacts"]["onnx-int8-ort"]["calibration"].update(images=None), r"calibration\.images must be an integer, not null"),
        (lambda d: d["classes"].update(names="road"), r"classes\.names must be a list"),
        (lambda d: d["preprocess"].update(std=[0, 1, 1]), r"preprocess is invalid: std values must be positive"),
        (lambda d: d.update(artifacts=[1]), r"artifacts must be an object"),
    ],
)
def test_invalid_content_is_one_clear_error(tmp_path, edit, message):
    directory = _write(tmp_path, edit)
    with pytest.raises(SegdeployError, match=message) as err:
        Manifest.load(directory)
    text = str(err.value)
    assert "\n" not in text and str(directory / "manifest.json") in text


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not a deploy directory"),
        ("{not json", "corrupt"),
        (json.dumps({"schema": "other"}), "not a segdeploy manifest"),
        (json.dumps([1, 2]), "not a segdeploy manifest"),
    ],
)
def test_not_a_manifest(tmp_path, content, message):
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(SegdeployError, match=message):
        Manifest.load(tmp_path)


def test_unknown_keys_are_kept(tmp_path):
    """A key this segdeploy does not know (written by a newer one of the same schema version) survives a save."""
    directory = _write(tmp_path, lambda d: (d.update(lock={"owner": 1}), d["artifacts"]["onnx-fp32"].update(note="x")))
    manifest = Manifest.load(directory)
    manifest.save()
    again = json.loads((directory / "manifest.json").read_text())
    assert again["lock"] == {"owner": 1} and again["artifacts"]["onnx-fp32"]["note"] == "x"


def test_cli_reports_an_invalid_manifest_in_one_line(cli, tmp_path):
    directory = _write(tmp_path, lambda d: d.update(schema_version="1"))
    proc = cli("bench", str(directory), "--no-plots")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
