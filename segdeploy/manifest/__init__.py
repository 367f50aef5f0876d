"""The deploy directory's manifest: typed records, a registry of artifact names, validation on read.

* `store`: `Manifest` (load / validate / save / add and verify artifacts);
* `records`: the typed records manifest.json holds;
* `names`: every artifact name and file;
* `schema`: the JSON ↔ record conversion with type checks.

See docs/design.md, "The deploy directory". The names below load `store` on first use, so
importing `segdeploy.manifest.names` (the CLI does, for its choices) stays light.
"""

__all__ = ["FILENAME", "SCHEMA", "SCHEMA_VERSION", "Manifest", "now_iso", "tool_versions"]


def __getattr__(name: str):
    if name in __all__:
        from segdeploy.manifest import store

        return getattr(store, name)
    raise AttributeError(f"module 'segdeploy.manifest' has no attribute {name!r}")
