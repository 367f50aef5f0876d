"""One writer at a time per deploy directory, and a write order that survives interruption.

**Lock.** Commands that write into a deploy directory (export, build, bench, pipeline) hold an
exclusive `fcntl.flock` on ``DIR/.segdeploy.lock`` while they work. Another command on the same
directory prints one line saying whom it waits for and waits up to ``SEGDEPLOY_LOCK_TIMEOUT``
seconds (default 3600), then refuses with one line. The kernel drops a flock when its process
ends, however it ends: a killed command never leaves a stale lock. Nested use in one process
(pipeline → export → build) is re-entrant.

**Journal.** A writer records what it is doing in ``DIR/.segdeploy.journal`` (`journal`): the
command, its pid and the files present when it started. Files are written under temp names and
renamed into place (`segdeploy.atomic`); the manifest is saved after each artifact. When several
files must change together (export --force: the new model.onnx *and* its manifest), `commit`
writes them under temp names first, records the switch in the journal — the commit point — and
only then renames them. If the writer fails, or dies (Ctrl-C, crash, kill, disk full), whoever
next holds the lock finds the journal and `repair`s: a recorded switch is completed (otherwise the
old files were never touched); artifacts whose file is missing or no longer matches its recorded
sha256 (a rebuild cut short) are dropped from the manifest with what was built from them; new
model files no manifest entry describes are removed; leftover temp files are deleted. The next
command therefore accepts the directory as it is, without --force.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from segdeploy.atomic import TEMP_SUFFIX, atomic_write_text, sha256_file
from segdeploy.errors import SegdeployError
from segdeploy.faults import fault_point
from segdeploy.manifest.names import FP32_GRAPH

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locking, the journal still protects each write
    fcntl = None

LOCK_FILE = ".segdeploy.lock"
JOURNAL_FILE = ".segdeploy.journal"
TIMEOUT_ENV = "SEGDEPLOY_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0
NOTICE_AFTER_S = 1.0
ARTIFACT_SUFFIXES = (".onnx", ".engine")  # what a repair may remove when no manifest entry describes it

_held: dict[tuple[str, int], list] = {}  # (real path, thread) -> [fd, depth]
_guard = threading.Lock()


def notify(message: str) -> None:
    """One progress line on stderr (waiting for a lock, a repair made)."""
    sys.stderr.write(f"segdeploy: {message}\n")
    sys.stderr.flush()


# -- the lock -------------------------------------------------------------------------------


@contextlib.contextmanager
def deploy_lock(directory: str | os.PathLike, command: str, *, timeout: float | None = None,
                optional: bool = False) -> Iterator[None]:
    """Hold DIR's lock (waiting for another command if needed); a dead writer's leftovers are repaired first.

    `optional`: a command that only reads DIR (bench with reports elsewhere) runs unlocked where DIR
    is read-only to it (no writer can change it there either)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SegdeployError(f"deploy directory not found: {directory}" if not directory.exists()
                             else f"{directory} is not a directory", "create it with `segdeploy export`")
    key = (os.path.realpath(directory), threading.get_ident())
    if fcntl is None:
        yield
        return
    with _guard:
        held = _held.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:  # re-entrant: this thread holds it already
        try:
            yield
        finally:
            held[1] -= 1
        return
    try:
        fd = _acquire(directory, command, _timeout(timeout))
    except OSError as exc:
        if optional and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            yield
            return
        raise
    with _guard:
        _held[key] = [fd, 1]
    try:
        if (directory / JOURNAL_FILE).exists():
            repair(directory, report=notify)
        remove_stale_temps(directory)
        yield
    finally:
        with _guard:
            del _held[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def holds_lock(directory: str | os.PathLike) -> bool:
    return (os.path.realpath(directory), threading.get_ident()) in _held


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise SegdeployError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None


def _acquire(directory: Path, command: str, timeout: float) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        start, waiting = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = _owner(fd)
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise SegdeployError(
                        f"{directory} is in use by {owner} (waited {timeout:g} s)",
                        f"let it finish, or wait longer with {TIMEOUT_ENV}=SECONDS",
                    ) from None
                if not waiting and waited >= NOTICE_AFTER_S:  # a lock released at once needs no notice
                    notify(f"waiting for {owner} to finish with {directory} …")
                    waiting = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _owner(fd: int) -> str:
    try:
        pid, _, command = os.pread(fd, 200, 0).decode(errors="replace").strip().partition(" ")
        return f"`segdeploy {command}` (pid {int(pid)})"
    except (OSError, ValueError):
        return "another segdeploy command"


def repair_if_abandoned(directory: str | os.PathLike) -> None:
    """For readers: if a writer died mid-way (its journal is left and nobody holds the lock), repair now."""
    directory = Path(directory)
    if fcntl is None or not (directory / JOURNAL_FILE).exists() or holds_lock(directory):
        return
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    except OSError:
        return  # read-only or no lock file: nothing we may change; verification will speak
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # a live writer: it will finish or its journal waits for the next command
    try:
        if (directory / JOURNAL_FILE).exists():
            repair(directory, report=notify)
    except OSError:
        pass  # cannot write here: leave the journal for a command that can
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- the journal ------------------------------------------------------------------------------


@contextlib.contextmanager
def journal(directory: str | os.PathLike, command: str) -> Iterator[None]:
    """Record an in-progress write (hold the lock first); on failure tidy up, on a crash the next command does."""
    directory = Path(directory)
    _write_journal(directory, {"command": command, "pid": os.getpid(), "before": sorted(_names(directory))})
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):  # never mask the real error; the next command repairs
            repair(directory, report=None)
        raise
    (directory / JOURNAL_FILE).unlink(missing_ok=True)


def commit(directory: str | os.PathLike, staged: dict[str, Path], remove: Iterable[str] = ()) -> None:
    """Put staged files in place together: `staged` maps final names to temp files in `directory`.

    Once the journal records the switch, a crash is completed by the next command; before it,
    the old files stand untouched. `remove`: files to delete afterwards (stale artifacts)."""
    directory = Path(directory)
    state = _read_journal(directory)
    state["commit"] = {"replace": {name: Path(tmp).name for name, tmp in staged.items()}, "remove": list(remove)}
    _write_journal(directory, state)
    fault_point("export:committing")
    _finish_commit(directory, state["commit"], on_replaced=lambda: fault_point("export:half-committed"))
    fault_point("export:committed")
    del state["commit"]
    _write_journal(directory, state)


def _finish_commit(directory: Path, plan: dict, on_replaced: Callable[[], None] = lambda: None) -> None:
    for name, tmp in plan.get("replace", {}).items():
        source = _inside(directory, tmp)
        if source is not None and _inside(directory, name) is not None and source.exists():
            os.replace(source, directory / name)
            on_replaced()
    for name in plan.get("remove", []):
        target = _inside(directory, name)
        if target is not None and target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target is not None and (target.is_file() or target.is_symlink()):
            target.unlink()


def repair(directory: str | os.PathLike, report: Callable[[str], None] | None) -> list[str]:
    """Bring a directory whose writer failed or died back to a state every command accepts (see module doc)."""
    directory = Path(directory)
    state = _read_journal(directory)
    notes = []
    if "commit" in state:
        _finish_commit(directory, state["commit"])
        notes.append(f"completed an interrupted `segdeploy {state.get('command', '?')}`")
    notes += _drop_broken_artifacts(directory, set(state.get("before", [])))
    (directory / JOURNAL_FILE).unlink(missing_ok=True)
    remove_stale_temps(directory)
    if report is not None and notes:
        report(f"repaired {directory} after an interrupted command: " + "; ".join(notes))
    return notes


def _drop_broken_artifacts(directory: Path, before: set[str]) -> list[str]:
    """Drop entries whose bytes are missing or changed (a rebuild cut short) and untracked new model files."""
    from segdeploy.manifest.store import FILENAME, Manifest, parse  # lazy: store imports this module

    path = directory / FILENAME
    try:
        content = parse(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, ValueError, SegdeployError):
        return []  # no valid manifest: nothing recorded to check (a fresh export that died); reading it will say why
    artifacts = content.artifacts
    broken = {name for name, entry in artifacts.items() if name != FP32_GRAPH.name and not _intact(directory, entry)}
    broken |= {name for name in artifacts if _descends_from(artifacts, name, broken)}
    notes = []
    for name in sorted(broken):
        target = _inside(directory, artifacts[name].file)
        if target is not None and target.is_file():
            target.unlink()
        del artifacts[name]
        notes.append(f"dropped {name} (incomplete: build it again)")
    if broken:
        Manifest(directory, content).save()
    recorded = {entry.file for entry in artifacts.values()}
    for name in sorted(_names(directory) - before - recorded):
        if name.endswith(ARTIFACT_SUFFIXES) and (directory / name).is_file():
            (directory / name).unlink()
            notes.append(f"removed {name} (written but never recorded)")
    return notes


def _intact(directory: Path, entry) -> bool:
    target = _inside(directory, entry.file)
    try:
        return target is not None and target.is_file() and sha256_file(target) == entry.sha256
    except OSError:
        return False


def _descends_from(artifacts: dict, name: str, broken: set[str]) -> bool:
    seen, parent = set(), name
    while parent in artifacts and parent not in seen:
        seen.add(parent)
        parent = artifacts[parent].parent
        if parent in broken:
            return True
    return False


# -- small helpers ----------------------------------------------------------------------------


def is_bookkeeping(name: str) -> bool:
    """segdeploy's own files in a deploy directory: the lock, the journal and temp files of writes."""
    return name in (LOCK_FILE, JOURNAL_FILE) or (name.startswith(".") and name.endswith(TEMP_SUFFIX))


def remove_stale_temps(directory: Path) -> None:
    """Temp files of writes that never finished (only while holding the lock: no live writer owns them)."""
    for folder in (directory, directory / "bench"):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.is_file():
                    path.unlink(missing_ok=True)


def _names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not is_bookkeeping(p.name)}


def _inside(directory: Path, name: str) -> Path | None:
    """`directory / name` if `name` is a plain file name (a manifest cannot point a repair elsewhere)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return None
    return directory / name


def _read_journal(directory: Path) -> dict:
    try:
        state = json.loads((directory / JOURNAL_FILE).read_text(encoding="utf-8"))
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_journal(directory: Path, state: dict) -> None:
    try:
        atomic_write_text(directory / JOURNAL_FILE, json.dumps(state) + "\n")
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise SegdeployError(f"cannot write in {directory}: {exc.strerror}",
                                 "a deploy directory must be writable for export and build") from None
        raise
