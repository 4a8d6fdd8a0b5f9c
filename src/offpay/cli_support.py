"""How every `offpay` command refuses: one line on stderr that says what is wrong, exit 2.

A command turns bad input into a typed error (an :class:`~offpay.errors.OffpayError` with a
stable code) and lets :func:`refusals` print it; a person sees one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from offpay.errors import OffpayError

USAGE_EXIT = 2  # bad input or a refused start: nothing was done


class UsageError(OffpayError):
    """A command-line option that cannot be used as given (a bad value, a missing file)."""

    code = "cli.bad_option"


def fail(error: OffpayError) -> NoReturn:
    """Print ``error`` as one line on stderr (no wrapping, whatever the terminal's width) and
    exit 2."""
    Console(stderr=True, soft_wrap=True).print(f"[red]{escape(error.message)}[/red]")
    raise typer.Exit(USAGE_EXIT)


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """A typed refusal raised in the block ends the command with :func:`fail`."""
    try:
        yield
    except OffpayError as exc:
        fail(exc)


def writable_folder(path: Path, option: str) -> Path:
    """``path`` as a folder this process can write into, created if missing; a file, a path
    through a file or a folder that cannot be written is a :class:`UsageError`."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path} cannot be used: {exc.strerror or exc}") from None
    return path
