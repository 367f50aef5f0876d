"""The deploy directory's manifest: the one record every command reads and extends.

Layout::

    deploy/<model>/
        manifest.json      versioned schema, written atomically
        model.onnx         the verified FP32 export
        ...                precision graphs, engines, reports added by build / bench

Every artifact entry records its file, sha256, kind, precision, backend, I/O and
provenance; `verify()` refuses an artifact whose bytes no longer match.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any

from segdeploy.atomic import atomic_write_text, sha256_file
from segdeploy.errors import SegdeployError
from segdeploy.locking import repair_if_abandoned

SCHEMA = "segdeploy/manifest"
SCHEMA_VERSION = 1
FILENAME = "manifest.json"


def tool_versions(*modules: str) -> dict[str, str]:
    """Versions of the named packages that are importable (lazy: only imports what is asked)."""
    import importlib

    from segdeploy import __version__

    versions = {"segdeploy": __version__, "python": platform.python_version()}
    for name in modules:
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):
            continue
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class Manifest:
    """A deploy directory's manifest.json (dict-backed; `save()` is atomic)."""

    def __init__(self, directory: str | Path, data: dict[str, Any]):
        self.directory = Path(directory)
        self.data = data

    # -- create / load / save --------------------------------------------------------------
    @classmethod
    def new(cls, directory: str | Path, **sections: Any) -> "Manifest":
        data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": now_iso(), **sections}
        data.setdefault("artifacts", {})
        return cls(directory, data)

    @classmethod
    def load(cls, directory: str | Path) -> "Manifest":
        directory = Path(directory)
        path = directory / FILENAME
        if not directory.is_dir():
            raise SegdeployError(f"deploy directory not found: {directory}", "create it with `segdeploy export`")
        repair_if_abandoned(directory)  # a writer that died mid-way: finish or undo its work first
        if not path.is_file():
            raise SegdeployError(f"{directory} is not a deploy directory (no {FILENAME})", "create it with `segdeploy export`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SegdeployError(f"{path} is corrupt ({exc})", "re-run `segdeploy export`") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise SegdeployError(f"{path} is not a segdeploy manifest")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SegdeployError(
                f"{path} has manifest schema version {version}; this segdeploy reads up to {SCHEMA_VERSION}",
                "upgrade segdeploy",
            )
        return cls(directory, data)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / FILENAME).is_file()

    def save(self) -> Path:
        path = self.directory / FILENAME
        atomic_write_text(path, self.dumps())
        return path

    def dumps(self) -> str:
        """The manifest.json text (stamped `updated`), for `save` or a staged commit."""
        self.data["updated"] = now_iso()
        return json.dumps(self.data, indent=2, sort_keys=False) + "\n"

    # -- artifacts -------------------------------------------------------------------------
    @property
    def artifacts(self) -> dict[str, dict]:
        return self.data.setdefault("artifacts", {})

    def add_artifact(self, name: str, filename: str, *, staged: Path | None = None, **fields: Any) -> dict:
        """Record `filename` (relative to the deploy directory) under `name`, with its sha256
        (of `staged`, the temp file that will become `filename`, when given)."""
        path = staged or self.directory / filename
        entry = {"file": filename, "sha256": sha256_file(path), "bytes": path.stat().st_size, "created": now_iso()}
        entry.update(fields)
        self.artifacts[name] = entry
        return entry

    def artifact(self, name: str) -> dict:
        try:
            return self.artifacts[name]
        except KeyError:
            valid = ", ".join(self.artifacts) or "none"
            raise SegdeployError(f"no artifact {name!r} in {self.directory}; artifacts: {valid}") from None

    def path_of(self, name: str) -> Path:
        return self.directory / self.artifact(name)["file"]

    def verify(self, name: str) -> Path:
        """Path of artifact `name` after checking that its bytes still match the manifest."""
        entry = self.artifact(name)
        path = self.directory / entry["file"]
        if not path.is_file():
            raise SegdeployError(f"artifact {name!r} is missing: {path}", "rebuild it")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise SegdeployError(
                f"artifact {name!r} ({path.name}) was modified after it was recorded (sha256 mismatch)",
                "rebuild it with segdeploy",
            )
        if path.suffix == ".onnx":
            _check_graph_parses(path, digest)
        return path


_parsed: set[tuple[str, str]] = set()  # (path, sha256) of graphs known to parse, checked once per process


def _check_graph_parses(path: Path, digest: str) -> None:
    """A hash can be re-recorded over a truncated or corrupt graph: refuse it in one line, not a protobuf traceback."""
    if (str(path), digest) in _parsed:
        return
    import onnx
    from google.protobuf.message import DecodeError

    try:
        onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SegdeployError(f"{path} is not a readable ONNX graph ({first[:200]})",
                             "export it again, or rebuild it, with segdeploy") from None
    _parsed.add((str(path), digest))
