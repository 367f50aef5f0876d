"""The deploy directory's manifest: typed records, a registry of artifact names, validation on read.

* `store`: `Manifest` (load / validate / save / add and verify artifacts);
* `records`: the typed records manifest.json holds;
* `names`: every artifact name and file;
* `schema`: the JSON ↔ record conversion with type checks.

See docs/design.md, "The deploy directory".
"""

from segdeploy.manifest.store import FILENAME, SCHEMA, SCHEMA_VERSION, Manifest, now_iso, tool_versions

__all__ = ["FILENAME", "SCHEMA", "SCHEMA_VERSION", "Manifest", "now_iso", "tool_versions"]
