"""Manifest: schema checks, artifact hashes, tamper detection; atomic writes leave nothing on failure."""

from __future__ import annotations

import json

import pytest

from segdeploy.atomic import atomic_path, atomic_write_text, new_directory, sha256_file
from segdeploy.errors import SegdeployError
from segdeploy.manifest import SCHEMA_VERSION, Manifest


def test_round_trip_and_verify(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello")
    manifest = Manifest.new(tmp_path, model={"name": "m"})
    entry = manifest.add_artifact("a", "a.bin", precision="fp32")
    manifest.save()
    # sha256 of b"hello", computed independently of segdeploy
    assert entry["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    loaded = Manifest.load(tmp_path)
    assert loaded.artifact("a")["precision"] == "fp32"
    assert loaded.verify("a") == tmp_path / "a.bin"


def test_tampered_artifact_is_refused(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello")
    manifest = Manifest.new(tmp_path)
    manifest.add_artifact("a", "a.bin")
    manifest.save()
    (tmp_path / "a.bin").write_bytes(b"hellO")
    with pytest.raises(SegdeployError, match="modified after it was recorded"):
        Manifest.load(tmp_path).verify("a")
    (tmp_path / "a.bin").unlink()
    with pytest.raises(SegdeployError, match="missing"):
        Manifest.load(tmp_path).verify("a")
    with pytest.raises(SegdeployError, match="no artifact 'b'.*artifacts: a"):
        Manifest.load(tmp_path).artifact("b")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not a deploy directory"),
        ("{not json", "corrupt"),
        (json.dumps({"schema": "other"}), "not a segdeploy manifest"),
        (json.dumps({"schema": "segdeploy/manifest", "schema_version": SCHEMA_VERSION + 1}), "upgrade segdeploy"),
    ],
)
def test_bad_manifests(tmp_path, content, message):
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(SegdeployError, match=message):
        Manifest.load(tmp_path)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(target, "done")
    assert target.read_text() == "done" and len(list(tmp_path.iterdir())) == 1
    assert sha256_file(target) == "a4c3ed04a95a3da14a9d235c83d868bed7c0f45cf7f3faa751ee8f50598d2211"


def test_new_directory_removed_on_failure_but_existing_kept(tmp_path):
    with pytest.raises(ValueError):
        with new_directory(tmp_path / "fresh") as d:
            (d / "x").write_text("x")
            raise ValueError
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(ValueError):
        with new_directory(tmp_path / "old"):
            raise ValueError
    assert (tmp_path / "old").is_dir()
