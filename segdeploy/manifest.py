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
        self.data["updated"] = now_iso()
        path = self.directory / FILENAME
        atomic_write_text(path, json.dumps(self.data, indent=2, sort_keys=False) + "\n")
        return path

    # -- artifacts -------------------------------------------------------------------------
    @property
    def artifacts(self) -> dict[str, dict]:
        return self.data.setdefault("artifacts", {})

    def add_artifact(self, name: str, filename: str, **fields: Any) -> dict:
        """Record `filename` (relative to the deploy directory) under `name`, with its sha256."""
        path = self.directory / filename
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
        # companions: files the artifact needs beside its main one (an OpenVINO IR's weights, …)
        for record in [entry, *entry.get("companions", {}).values()]:
            path = self.directory / record["file"]
            if not path.is_file():
                raise SegdeployError(f"artifact {name!r} is missing: {path}", "rebuild it")
            if sha256_file(path) != record["sha256"]:
                raise SegdeployError(
                    f"artifact {name!r} ({path.name}) was modified after it was recorded (sha256 mismatch)",
                    "rebuild it with segdeploy",
                )
        return self.directory / entry["file"]
