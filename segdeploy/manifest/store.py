"""The deploy directory's manifest: the one record every command reads and extends.

Layout::

    deploy/<model>/
        manifest.json      versioned schema, validated on read, written atomically
        model.onnx         the verified FP32 export
        ...                precision graphs, engines, reports added by build / bench

`Manifest.load` validates the whole file against the records of `manifest.records` and
turns any problem into one `SegdeployError` line naming the file and the field.
`verify()` refuses an artifact whose bytes no longer match its recorded sha256, or a graph that
does not parse. A writer that died mid-way (its journal left behind, `manifest.locking`) is
repaired before the manifest is read.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.atomic import atomic_write_text, sha256_file
from segdeploy.classes import ClassInfo
from segdeploy.errors import SegdeployError
from segdeploy.manifest.records import (
    Artifact,
    CompanionFile,
    FusionRecord,
    InputRecord,
    ModelRecord,
    OutputRecord,
    PipelineState,
)
from segdeploy.manifest.locking import repair_if_abandoned
from segdeploy.manifest.schema import Record, SchemaError, decode, encode, keeps_unknown, optional
from segdeploy.preprocess import Preprocess

SCHEMA = "segdeploy/manifest"
SCHEMA_VERSION = 1
FILENAME = "manifest.json"
REEXPORT = "re-export with `segdeploy export --force`"


def tool_versions(*modules: str) -> dict[str, str]:
    """Versions of the named packages that are importable (lazy: only imports what is asked)."""
    import importlib

    from segdeploy.version import __version__

    versions = {"segdeploy": __version__, "python": platform.python_version()}
    for name in modules:
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except (ImportError, AttributeError):
            continue
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class ManifestContent(Record):
    """Everything manifest.json holds (schema version 1). Written by `export` (`Manifest.new`)
    and extended by build (artifacts) and pipeline (its state)."""

    schema: str
    schema_version: int
    created: str
    model: ModelRecord
    input: InputRecord
    output: OutputRecord
    preprocess: Preprocess
    classes: ClassInfo
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    fused: FusionRecord | None = optional()
    updated: str | None = optional()
    pipeline: PipelineState | None = optional()
    unknown: dict = keeps_unknown()


class Manifest:
    """A deploy directory's manifest.json, typed: `manifest.model.num_classes`, `manifest.artifact(name).sha256`."""

    def __init__(self, directory: str | Path, content: ManifestContent):
        self.directory = Path(directory)
        self.content = content

    # -- sections ------------------------------------------------------------------------------
    @property
    def model(self) -> ModelRecord:
        return self.content.model

    @property
    def input(self) -> InputRecord:
        return self.content.input

    @property
    def output(self) -> OutputRecord:
        return self.content.output

    @property
    def preprocess(self) -> Preprocess:
        return self.content.preprocess

    @property
    def classes(self) -> ClassInfo:
        return self.content.classes

    @property
    def fused(self) -> FusionRecord | None:
        return self.content.fused

    @property
    def artifacts(self) -> dict[str, Artifact]:
        return self.content.artifacts

    @property
    def pipeline(self) -> PipelineState | None:
        return self.content.pipeline

    @pipeline.setter
    def pipeline(self, state: PipelineState | None) -> None:
        self.content.pipeline = state

    @property
    def spec(self):
        """What the graph takes and gives (`GraphSpec`)."""
        from segdeploy.graph_spec import GraphSpec

        return GraphSpec.of(self)

    # -- create / load / save --------------------------------------------------------------
    @classmethod
    def new(cls, directory: str | Path, *, model: ModelRecord, input: InputRecord, output: OutputRecord,
            preprocess: Preprocess, classes: ClassInfo, fused: FusionRecord | None = None,
            pipeline: PipelineState | None = None) -> "Manifest":
        content = ManifestContent(SCHEMA, SCHEMA_VERSION, now_iso(), model, input, output, preprocess, classes,
                                  fused=fused, pipeline=pipeline)
        return cls(directory, content)

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
            raise SegdeployError(f"{path} is corrupt ({exc})", REEXPORT) from None
        return cls(directory, parse(data, path))

    @staticmethod
    def exists(directory: str | Path) -> bool:
        return (Path(directory) / FILENAME).is_file()

    def to_dict(self) -> dict:
        return encode(self.content)

    def save(self) -> Path:
        path = self.directory / FILENAME
        atomic_write_text(path, self.dumps())
        return path

    def dumps(self) -> str:
        """The manifest.json text (stamped `updated`), for `save` or a staged commit (`locking.commit`)."""
        self.content.updated = now_iso()
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    # -- artifacts -------------------------------------------------------------------------
    def add_artifact(self, name: str, filename: str, *, kind: str, precision: str, backend: str,
                     staged: Path | None = None, companions: dict[str, str] | None = None, **fields) -> Artifact:
        """Record `filename` (relative to the deploy directory) under `name`, with its sha256 and size
        (of `staged`, the temp file that will become `filename`, when given); `companions` (role →
        filename) are the files it needs beside it, recorded the same way."""
        artifact = Artifact(**self._file_record(filename, staged), created=now_iso(), kind=kind, precision=precision,
                            backend=backend, **fields)
        if companions:
            artifact.companions = {role: CompanionFile(**self._file_record(file)) for role, file in companions.items()}
        self.artifacts[name] = artifact
        return artifact

    def _file_record(self, filename: str, staged: Path | None = None) -> dict:
        path = staged or self.directory / filename
        return {"file": filename, "sha256": sha256_file(path), "bytes": path.stat().st_size}

    def artifact(self, name: str) -> Artifact:
        try:
            return self.artifacts[name]
        except KeyError:
            valid = ", ".join(self.artifacts) or "none"
            raise SegdeployError(f"no artifact {name!r} in {self.directory}; artifacts: {valid}") from None

    def path_of(self, name: str) -> Path:
        return self.directory / self.artifact(name).file

    def verify(self, name: str) -> Path:
        """Path of artifact `name` after checking that its bytes, and its companions', still match the manifest."""
        entry = self.artifact(name)
        for record in [entry, *(entry.companions or {}).values()]:
            path = self.directory / record.file
            if not path.is_file():
                raise SegdeployError(f"artifact {name!r} is missing: {path}", "rebuild it")
            digest = sha256_file(path)
            if digest != record.sha256:
                raise SegdeployError(
                    f"artifact {name!r} ({path.name}) was modified after it was recorded (sha256 mismatch)",
                    "rebuild it with segdeploy",
                )
            if path.suffix == ".onnx":  # a graph: a hash re-recorded over a truncated file must not pass
                _check_graph_parses(path, digest)
        return self.directory / entry.file


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


def parse(data, path: Path) -> ManifestContent:
    """Validate parsed manifest.json content; every problem is one line naming the file and field."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SegdeployError(f"{path} is not a segdeploy manifest")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        shown = json.dumps(version)
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise SegdeployError(f"{path} has manifest schema version {shown}; this segdeploy reads up to {SCHEMA_VERSION}",
                                 "upgrade segdeploy")
        raise SegdeployError(f"{path} has an invalid manifest schema version {shown}: it must be an integer "
                             f"from 1 to {SCHEMA_VERSION}", REEXPORT)
    try:
        return decode(ManifestContent, data, "manifest")
    except SchemaError as exc:
        raise SegdeployError(f"{path} is invalid: {exc.where.removeprefix('manifest.')} {exc.problem}", REEXPORT) from None
