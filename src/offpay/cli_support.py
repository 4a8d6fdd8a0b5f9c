"""How every `offpay` command refuses: one line on stderr that says what is wrong, exit 2.

A command turns bad input into a typed error (an :class:`~offpay.errors.OffpayError` with a
stable code) and lets :func:`refusals` print it; a person sees one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

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


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class Interrupt:
    """Ctrl-C stops the command, always. Python turns SIGINT into a KeyboardInterrupt wherever
    the main thread is; when that is inside a finaliser or a C extension's callback, the
    exception is printed as "Exception ignored ..." and lost, and the command carried on. Here
    the request is also remembered: :meth:`check` (called before every line the command
    prints, see :class:`StoppableConsole`) raises it again, and the lost one is not printed."""

    def __init__(self) -> None:
        self.requested = False
        self._handler: Any = None
        self._hook: Any = None

    def __enter__(self) -> Interrupt:
        try:
            self._handler = signal.signal(signal.SIGINT, self._interrupt)
        except ValueError:  # not the main thread (a command run by a test): signals stay
            return self
        self._hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._hook is not None:
            signal.signal(signal.SIGINT, self._handler)
            sys.unraisablehook = self._hook

    def _interrupt(self, _signum: int, _frame: object) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def _unraisable(self, info: Any) -> None:
        if self.requested and issubclass(info.exc_type, KeyboardInterrupt):
            return  # lost where it was raised; check() raises it again
        self._hook(info)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


class StoppableConsole(Console):
    """A console that stops its command at the next line after Ctrl-C (:class:`Interrupt`)."""

    def __init__(self, interrupt: Interrupt, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interrupt = interrupt

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.interrupt.check()
        super().print(*objects, **kwargs)


def stopped() -> NoReturn:
    """The one line a command stopped by Ctrl-C prints; exit 130."""
    Console(stderr=True, soft_wrap=True).print("stopped (Ctrl-C)")
    raise typer.Exit(INTERRUPTED_EXIT)


def one_line_summaries(app: typer.Typer) -> typer.Typer:
    """Give every command of ``app`` (and of its sub-apps) a one-line summary for the command
    lists of ``--help``: the first paragraph of its docstring with its line breaks joined.
    Typer lists a command's docstring with the breaks of the source, so a list row would
    otherwise end mid-sentence."""
    for info in app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.split("\n\n")[0].split())
    for group in app.registered_groups:
        if group.typer_instance is not None:
            one_line_summaries(group.typer_instance)
    return app
