"""Every message of the CLI goes through here: progress, warnings and errors on stderr, results on
stdout (human, rendered by `segdeploy.render`, or --json)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Callable, Iterator

import typer
from rich.console import Console

from segdeploy.errors import SegdeployError, os_error, printable

stdout = Console(soft_wrap=True)
if not stdout.is_terminal:
    stdout.width = 200  # logs and pipes: keep wide tables on one line instead of 80 columns
stderr = Console(stderr=True, soft_wrap=True)


def debug_enabled() -> bool:
    return os.environ.get("SEGDEPLOY_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a SegdeployError or an OSError (disk full, read-only, permission…) into one line on stderr
    and its exit code; bugs keep their traceback. The message is printed as plain text, never as Rich
    markup: a path holding `[/x]` or a hint holding `[r, g, b]` is shown as it is."""
    from rich.text import Text

    try:
        yield
    except (SegdeployError, OSError) as exc:
        if debug_enabled():
            raise
        error = exc if isinstance(exc, SegdeployError) else os_error(exc)
        line = " ".join(printable(part) for part in str(error).splitlines())
        stderr.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, emoji=False)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's exit status for SIGINT, no traceback
        if debug_enabled():
            raise
        stderr.print(Text.assemble(("interrupted", "bold red"), " (what was complete is kept; nothing half-written)"),
                     highlight=False)
        raise typer.Exit(130) from None


class Steps:
    """Shows the step in progress as a transient spinner on an interactive stderr; records timings.

    Nothing is printed when stderr is not a terminal (CI logs, pipes) or under --json, so
    a failure there shows exactly one line: the error.
    """

    def __init__(self, quiet: bool = False):
        self.live = not quiet and stderr.is_terminal
        self.timings: dict[str, float] = {}
        self._name: str | None = None
        self._start = 0.0
        self._status = None

    def __call__(self, name: str) -> None:
        self._finish()
        self._name, self._start = name, time.perf_counter()
        if self._status is not None:
            self._status.update(f"{name} …")

    def _finish(self) -> None:
        if self._name:
            self.timings[self._name] = round(time.perf_counter() - self._start, 2)
        self._name = None

    def __enter__(self) -> "Steps":
        if self.live:
            self._status = stderr.status("starting …")
            self._status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._finish()
        if self._status is not None:
            self._status.__exit__(*exc)


def quiet_library_warnings() -> None:
    """torch/onnx emit deprecation and tracer warnings users cannot act on; SEGDEPLOY_DEBUG shows them."""
    if not debug_enabled():
        import warnings

        warnings.simplefilter("ignore")


def warn(message: str) -> None:
    """A warning the library reports (its `warn` callback): one line on stderr."""
    from rich.text import Text

    stderr.print(Text.assemble(("warning:", "yellow"), " ", printable(message)), highlight=False, emoji=False)


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print a command's result: the JSON document, or the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render()
