"""Atomic file writes: write to a temp file beside the target, then rename.

A crash or an error mid-write never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

TEMP_SUFFIX = ".tmp"  # temp files are .NAME.<random>.tmp beside their target


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success rename it onto `target`."""
    target = Path(target)
    with staged_path(target) as tmp_path:
        try:
            yield tmp_path
            os.replace(tmp_path, target)
        finally:
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_path(target: str | os.PathLike) -> Iterator[Path]:
    """A hidden temp path beside `target` (``.NAME.<random>.tmp``), removed if the block fails.

    For files that several must replace together (`segdeploy.manifest.locking.commit` moves them into
    place). A write error that names no file (ENOSPC from a write) is re-raised naming `target`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp_path
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def new_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield `target` for filling; if it did not exist before and filling fails, remove it."""
    target = Path(target)
    existed = target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        yield target
    except BaseException:
        if not existed:
            shutil.rmtree(target, ignore_errors=True)
        raise


def check_writable_dir(folder: str | os.PathLike) -> None:
    """Prove a file can be created in `folder` (before work whose results go there), leaving no trace:
    folders created for the probe are removed again."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".segdeploy-probe.", suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:  # mkstemp's error names the random probe file: name the folder instead
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    finally:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
