"""A service's logs: one line per record on stderr, as text (``key=value`` after the message)
or as JSON lines (``--log-format json``, one object per line, for a log shipper).

Three loggers carry what an operator watches: ``offpay.access`` (one line per HTTP request),
``offpay.events`` (one line per settlement, refusal and anomaly) and ``offpay.service`` (the
service's own warnings and failures). A record's structured fields are passed as ``extra`` and
become JSON keys or ``key=value`` pairs; nothing is formatted into the message twice.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from offpay.errors import OffpayError

ACCESS = logging.getLogger("offpay.access")
EVENTS = logging.getLogger("offpay.events")

# Attributes every LogRecord has; anything else on a record came in as ``extra``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogSettingError(OffpayError):
    code = "service.bad_log_setting"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was logged with (its ``extra``)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``: readable, and still one line per record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = " ".join(f"{k}={_text(v)}" for k, v in fields_of(record).items())
        head, sep, tail = line.partition("\n")  # a traceback stays below the line
        return f"{head} {pairs}{sep}{tail}" if pairs else line


def _text(value: object) -> str:
    """A value as one token: quoted (and escaped, so one line stays one line) if it has
    whitespace, quotes, an equals sign or nothing in it."""
    text = str(value)
    plain = text and not any(c.isspace() or c in "='\"\\" or not c.isprintable() for c in text)
    return text if plain else repr(text)


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes, not when it was set up."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(
    level: str = LogLevel.INFO, fmt: str = LogFormat.TEXT, stream: TextIO | None = None
) -> logging.Handler:
    """Send every record of ``level`` and above to ``stream`` (stderr) in ``fmt``; uvicorn's
    own loggers go the same way (its access log is replaced by ``offpay.access``)."""
    try:
        level_no = logging.getLevelNamesMapping()[LogLevel(level).value.upper()]
        formatter = json_formatter() if LogFormat(fmt) is LogFormat.JSON else TextFormatter()
    except ValueError:
        raise LogSettingError(
            f"unknown log setting {level!r}/{fmt!r}: levels are "
            f"{', '.join(LogLevel)}; formats are {', '.join(LogFormat)}"
        ) from None
    handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for chatty in ("httpx", "httpcore"):  # a line per outgoing call: offpay.access has ours
        logging.getLogger(chatty).setLevel(max(level_no, logging.WARNING))
    return handler
