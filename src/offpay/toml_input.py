"""Reading a TOML file a person wrote, checked by a pydantic model: any mistake becomes one
typed line naming the file and the first bad field, never a traceback."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from offpay.errors import OffpayError

T = TypeVar("T", bound=BaseModel)


class InputFileError(OffpayError):
    """A settings or script file that cannot be read or does not say what it must."""

    code = "input.invalid"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InputFileError(f"cannot read {path}: {reason}", code="input.unreadable") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(f"{path} is not valid TOML: {exc}", code="input.not_toml") from None


def where(loc: tuple[int | str, ...]) -> str:
    """A field's path as a person reads it: ``steps[3].expect``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validated(model: type[T], data: Any, source: str) -> T:
    """``data`` as ``model``, or :class:`InputFileError` naming ``source`` and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        field = where(tuple(first["loc"]))
        raise InputFileError(
            f"{source}: {field}: {message}" if field else f"{source}: {message}"
        ) from None
