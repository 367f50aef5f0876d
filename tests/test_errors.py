"""Operating-system failures are one line naming the path and what to do (`errors.os_error`), and the
deploy directory and the user's files are unchanged: disk full, read-only, a path under a regular file,
a name too long; bench saves finished results elsewhere when its report folder fails."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tests.helpers import REPO, fails, forget_artifact, snapshot

# -- operating-system failures ---------------------------------------------------------------------


def test_disk_full_while_writing_a_graph(tiny, monkeypatch):
    import onnx

    deploy, _ = tiny
    forget_artifact(deploy, "onnx-fp16")
    before = snapshot(deploy)
    real_save = onnx.save

    def full_disk(model, path, *args, **kwargs):
        Path(path).write_bytes(b"\x08" * 100)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save", full_disk)
    fails("build", deploy, "-p", "fp16", contains=("no space left on device", "model.fp16.onnx", "free some space"))
    monkeypatch.setattr(onnx, "save", real_save)
    assert snapshot(deploy) == before


def test_disk_full_while_saving_the_manifest_leaves_no_untracked_graph(tiny, monkeypatch):
    """The issue's case: disk full left an untracked model.fp16.onnx behind."""
    import segdeploy.manifest.store

    deploy, _ = tiny
    forget_artifact(deploy, "onnx-fp16")
    before = snapshot(deploy)

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(segdeploy.manifest.store, "atomic_write_text", full_disk)
    fails("build", deploy, "-p", "fp16", contains=("no space left on device", "manifest.json"))
    assert snapshot(deploy) == before


def test_read_only_deploy_directory(tiny, monkeypatch):
    import segdeploy.manifest.locking

    deploy, _ = tiny
    before = snapshot(deploy)
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".segdeploy.lock") and flags & os.O_RDWR:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(segdeploy.manifest.locking.os, "open", read_only)
    fails("build", deploy, "-p", "int8", contains=("read-only file system", str(deploy), "write somewhere else"))
    assert snapshot(deploy) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(tiny):
    deploy, _ = tiny
    before = snapshot(deploy)
    os.chmod(deploy, 0o555)
    try:
        fails("build", deploy, "-p", "int8", contains=str(deploy))
    finally:
        os.chmod(deploy, 0o755)
    assert snapshot(deploy) == before


@pytest.mark.parametrize("where", ["export", "run", "bench"])
def test_output_under_a_regular_file(tiny, scene_images, tmp_path, where):
    deploy, net = tiny
    (tmp_path / "file.txt").write_text("not a folder")
    before = snapshot(tmp_path)
    target = tmp_path / "file.txt" / "out"
    args = {"export": ["export", f"{net}:build", "--input-shape", "1x3x32x48", "-o", target],
            "run": ["run", deploy, REPO / "calib" / "images" / "scene_0000.jpg", "-o", target],
            "bench": ["bench", deploy, "--data", scene_images, "--limit", "1", "--report-dir", target]}[where]
    fails(*args, contains=("not a directory", "file.txt", "is a file, not a folder"))
    assert snapshot(tmp_path) == before


def test_file_name_too_long(tiny, tmp_path):
    _, net = tiny
    fails("export", f"{net}:build", "--input-shape", "1x3x32x48", "-o", tmp_path / ("x" * 300),
          contains=("file name too long", "use a shorter"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py", "tiny"]  # nothing made


def test_bench_report_that_cannot_be_written_is_saved_elsewhere(tiny, scene_images, tmp_path, monkeypatch):
    """The issue's case: a failing report folder crashed bench after the whole benchmark ran."""
    import tempfile

    import segdeploy.bench.reports as reports

    deploy, _ = tiny
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "fallback"))
    (tmp_path / "fallback").mkdir()
    real = reports.atomic_write_text

    def failing(path, text):
        if Path(path).parent == tmp_path / "reports":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)

    monkeypatch.setattr(reports, "atomic_write_text", failing)
    line = fails("bench", deploy, "--data", scene_images, "--limit", "2", "--iterations", "2",
                 "--warmup", "0", "--rounds", "1", "--no-plots", "--report-dir", tmp_path / "reports",
                 contains=("could not write the reports", "the results were saved to"))
    saved = list((tmp_path / "fallback").glob("segdeploy-bench-*.json"))
    assert len(saved) == 1 and str(saved[0]) in line
    report = json.loads(saved[0].read_text())
    assert report["targets"]["onnx-fp16"]["latency"]["inference"]["median"] > 0


def test_bench_report_folder_that_is_read_only_fails_before_work(tiny, scene_images, tmp_path, monkeypatch):
    import tempfile as tempfile_module

    import segdeploy.atomic

    deploy, _ = tiny
    calls = []
    real = tempfile_module.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path / "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(dir) / "probe"))
        return real(*args, dir=dir, **kwargs)

    import segdeploy.bench.benchmark as bench_run

    monkeypatch.setattr(segdeploy.atomic.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(bench_run, "measure_accuracy", lambda *a, **k: calls.append(1))
    (tmp_path / "ro").mkdir()
    fails("bench", deploy, "--data", scene_images, "--report-dir", tmp_path / "ro",
          contains=("read-only file system", str(tmp_path / "ro")))
    assert calls == []  # refused before any measuring
