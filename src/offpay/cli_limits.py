"""The limits-policy options shared by ``offpay network init`` and ``offpay policy publish``:
one option per :data:`offpay.policy.LIMITS` entry, built from that description rather than
listed here. Amounts are written ``"SEK 200"``; an optional limit (absent means no limit) also
takes ``none``, which lifts it in a new policy."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from offpay.errors import PolicyError
from offpay.money import parse_minor
from offpay.policy import LIMITS, LimitField, Unit

F = TypeVar("F", bound=Callable[..., Any])
LIFT = "none"


def _option(field: LimitField) -> Any:
    """The typer annotation of one limit's option."""
    amount = ' An amount, e.g. "SEK 200".' if field.unit is Unit.AMOUNT else ""
    lift = f' "{LIFT}": no limit.' if field.optional else ""
    help_text = f"{field.description}{amount}{lift}"
    if field.unit is Unit.AMOUNT or field.optional:
        return Annotated[str | None, typer.Option(help=help_text, show_default=False)]
    return Annotated[int | None, typer.Option(help=help_text, min=0, show_default=False)]


def with_limit_options(command: F) -> F:
    """``command`` with one ``--<limit>`` option per limit of :data:`LIMITS` added to its
    signature; it receives them together as ``limit_options`` (name → text, int or None)."""
    signature = inspect.signature(command, eval_str=True)  # typer reads ours as given
    own = [p for p in signature.parameters.values() if p.name != "limit_options"]
    added = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_option(f)
        )
        for f in LIMITS
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {f.name: kwargs.pop(f.name, None) for f in LIMITS}
        return command(*args, **kwargs, limit_options=given)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def limits_given(options: dict[str, Any], currency: str = "SEK") -> dict[str, int | None]:
    """The limits given on the command line: counts, amounts in minor units, and None for an
    optional limit given as ``none`` (lifted)."""
    by_name = {f.name: f for f in LIMITS}
    given: dict[str, int | None] = {}
    for name, value in options.items():
        if value is None:
            continue
        field = by_name[name]
        if isinstance(value, str) and value.strip().lower() == LIFT:
            if not field.optional:
                raise PolicyError(
                    f"--{name.replace('_', '-')} cannot be lifted", code="policy.bad_limit"
                )
            given[name] = None
        elif field.unit is Unit.AMOUNT:
            given[name] = parse_minor(str(value), currency)
        else:
            given[name] = _count(name, value)
    return given


def _count(name: str, value: object) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise PolicyError(
            f"--{name.replace('_', '-')} must be a whole number, not {value!r}",
            code="policy.bad_limit",
        ) from None
    if number < 0:
        raise PolicyError(f"--{name.replace('_', '-')} cannot be negative", code="policy.bad_limit")
    return number
