"""Every message goes through here: progress and errors on stderr, results on stdout (human or --json)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Callable, Iterator

import typer
from rich.console import Console

from segdeploy.errors import SegdeployError

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def debug_enabled() -> bool:
    return os.environ.get("SEGDEPLOY_DEBUG", "") not in ("", "0")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a SegdeployError into one line on stderr and its exit code; bugs keep their traceback."""
    try:
        yield
    except SegdeployError as exc:
        if debug_enabled():
            raise
        stderr.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(exc.exit_code) from None


class Steps:
    """Prints each step of a long job with its duration (stderr), silent under --json."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._name: str | None = None
        self._start = 0.0

    def __call__(self, name: str) -> None:
        self._finish()
        self._name, self._start = name, time.perf_counter()

    def _finish(self) -> None:
        if self._name and not self.quiet:
            stderr.print(f"  [green]✓[/] {self._name} [dim]({time.perf_counter() - self._start:.1f}s)[/]", highlight=False)
        self._name = None

    def __enter__(self) -> "Steps":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self._finish()


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print a command's result: the JSON document, or the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render()
