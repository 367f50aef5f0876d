"""Atomic writes leave nothing on failure; new directories are removed when filling them fails."""

from __future__ import annotations

import pytest

from segdeploy.atomic import atomic_path, atomic_write_text, new_directory, sha256_file


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
