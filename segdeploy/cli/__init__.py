"""The `segdeploy` command line: thin commands over library functions (see docs/design.md, "Layers").

`app` (the Typer app) and `main` live in `app`; each command in its own module; shared options
in `options`; printing in `console`; every human rendering in `segdeploy.render`. Importing
this package loads typer and rich only: heavy libraries are imported inside the commands.
"""

from segdeploy.cli.app import app, main

__all__ = ["app", "main"]
