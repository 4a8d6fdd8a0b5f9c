"""Integer money.

Amounts are counted in minor units (öre, cent, yen) as plain integers, because binary floats
cannot represent most decimal amounts and a payment system must never round silently. Every
amount must also fit a signed 64-bit database column, so arithmetic is checked against that
range instead of growing without bound as Python integers would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from offpay.errors import MoneyError

# Minor-unit exponent per ISO 4217 code: 2 means 100 minor units make one major unit.
# Add a currency by adding a line here; nothing else needs to change.
CURRENCIES: Final[dict[str, int]] = {
    "SEK": 2,
    "EUR": 2,
    "USD": 2,
    "JPY": 0,
}

MAX_MINOR: Final[int] = 2**63 - 1
"""Largest magnitude an amount may have: it must fit a signed 64-bit database column."""

# Decimal digits of MAX_MINOR: a longer digit string cannot fit, so it is refused before int()
# is asked to convert an arbitrarily long string.
_MAX_DIGITS: Final[int] = len(str(MAX_MINOR))


def _number(tag: str) -> str:
    """Pattern of the number part, with group names prefixed by ``tag`` to keep them unique."""
    return (
        rf"(?P<{tag}sign>[-+\u2212])?"
        rf"(?P<{tag}int>[1-9][0-9]{{0,2}}(?: [0-9]{{3}})+|[0-9]+)"
        rf"(?:\.(?P<{tag}frac>[0-9]+))?"
    )


# A sign is matched only so that a negative amount gets its own refusal instead of "malformed".
_AMOUNT_RE: Final[re.Pattern[str]] = re.compile(
    rf"(?P<lead>[-+\u2212])?(?P<pre>[A-Z]{{3}}) {_number('a_')}"
    rf"|{_number('b_')} (?P<post>[A-Z]{{3}})"
    rf"|{_number('c_')}"
)


def exponent(currency: str) -> int:
    """Minor-unit exponent of ``currency``; refuses codes the system does not handle."""
    try:
        return CURRENCIES[currency]
    except (KeyError, TypeError):
        raise MoneyError(f"unknown currency {currency!r}", code="money.unknown_currency") from None


def _checked(minor: int, currency: str) -> Money:
    """Build a result of arithmetic, refusing it if it left the 64-bit range."""
    if not -MAX_MINOR <= minor <= MAX_MINOR:
        raise MoneyError(
            f"result does not fit the supported range of ±{MAX_MINOR} minor units",
            code="money.overflow",
        )
    return Money(minor, currency)


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount in minor units of one currency.

    Negative values are allowed so that deltas and reversals can be expressed; amounts that come
    from people or other systems go through :meth:`amount` or :func:`parse_money`, which refuse
    them.
    """

    minor: int
    currency: str = "SEK"

    def __post_init__(self) -> None:
        # bool is an int subclass, and True as "one öre" is always a bug.
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise MoneyError(
                "an amount must be an integer number of minor units, "
                f"not {type(self.minor).__name__}",
                code="money.malformed",
            )
        exponent(self.currency)
        if not -MAX_MINOR <= self.minor <= MAX_MINOR:
            raise MoneyError(
                f"amount {self.minor} does not fit the supported range of ±{MAX_MINOR} minor units",
                code="money.overflow",
            )

    @classmethod
    def amount(cls, minor: int, currency: str = "SEK") -> Money:
        """A non-negative amount, for values that arrive from outside and must not be deltas."""
        money = cls(minor, currency)
        if money.minor < 0:
            raise MoneyError("an amount may not be negative", code="money.negative")
        return money

    @classmethod
    def zero(cls, currency: str = "SEK") -> Money:
        """The neutral starting point for sums, in the currency being summed."""
        return cls(0, currency)

    def is_zero(self) -> bool:
        """Whether nothing is left; a method so callers need not compare to a zero of a currency."""
        return self.minor == 0

    def _same_currency(self, other: Money, operation: str) -> None:
        # Converting would need a rate and a rounding rule; refusing is the only safe default.
        if self.currency != other.currency:
            raise MoneyError(
                f"cannot {operation} {self.currency} and {other.currency}",
                code="money.currency_mismatch",
            )

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "add")
        return _checked(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "subtract")
        return _checked(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        # The range is symmetric, so negation cannot overflow.
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.minor >= other.minor

    def __str__(self) -> str:
        return format_money(self)

    def __reduce__(self) -> tuple[type[Money], tuple[int, str]]:
        # Devices pickle their whole state into sealed memory on every command; the slotted
        # dataclass's own __getstate__ runs in Python and was most of that cost. Unpickling
        # goes through __init__, so a stored amount is validated again.
        return (Money, (self.minor, self.currency))


def _malformed(text: str) -> MoneyError:
    return MoneyError(
        f'cannot read {text!r} as an amount; write it like "SEK 12.50", "12.50" or "SEK 3 000"',
        code="money.malformed",
    )


def parse_money(text: str, default_currency: str = "SEK") -> Money:
    """Read an amount a person typed, refusing anything ambiguous rather than guessing.

    The accepted form is an optional three-letter code before or after the number, separated by
    one space; digits with ``.`` as the decimal separator and at most as many decimals as the
    currency has; and optionally single spaces between groups of three digits. Negative amounts
    are refused: a person never pays a negative sum.
    """
    if not isinstance(text, str):
        raise MoneyError(
            f"an amount to parse must be text, not {type(text).__name__}", code="money.malformed"
        )
    stripped = text.strip()
    if not stripped:
        raise MoneyError("an amount may not be empty", code="money.malformed")
    match = _AMOUNT_RE.fullmatch(stripped)
    if match is None:
        raise _malformed(text)
    groups = match.groupdict()
    if groups["pre"] is not None:
        prefix = "a_"
        code: str | None = groups["pre"]
    elif groups["post"] is not None:
        prefix = "b_"
        code = groups["post"]
    else:
        prefix = "c_"
        code = None
    lead, sign = groups["lead"], groups[prefix + "sign"]
    if lead is not None and sign is not None:
        raise _malformed(text)
    sign = lead or sign
    if sign is not None:
        if sign == "+":
            raise _malformed(text)
        raise MoneyError(f"an amount may not be negative: {text!r}", code="money.negative")

    currency = code if code is not None else default_currency
    places = exponent(currency)
    whole = groups[prefix + "int"].replace(" ", "")
    frac = groups[prefix + "frac"] or ""
    if len(frac) > places:
        allowed = "no decimal places" if places == 0 else f"at most {places} decimal places"
        raise MoneyError(f"{currency} allows {allowed}: {text!r}", code="money.precision")

    digits = (whole + frac.ljust(places, "0")).lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS or int(digits) > MAX_MINOR:
        raise MoneyError(
            f"amount {text!r} does not fit the supported range of {MAX_MINOR} minor units",
            code="money.overflow",
        )
    return Money(int(digits), currency)


def format_money(m: Money) -> str:
    """Show an amount the way :func:`parse_money` reads it back, e.g. ``SEK 3 000.00``."""
    places = exponent(m.currency)
    whole, frac = divmod(abs(m.minor), 10**places)
    number = f"{whole:,}".replace(",", " ")
    if places:
        number += f".{frac:0{places}d}"
    sign = "-" if m.minor < 0 else ""
    return f"{sign}{m.currency} {number}"


def parse_minor(text: str, currency: str) -> int:
    """The minor units of an amount a person typed for a setting in ``currency`` (a limit, a
    pool): an amount in another currency is refused, never taken as a number of ``currency``."""
    amount = parse_money(text, currency)
    if amount.currency != currency:
        raise MoneyError(
            f"{text!r} is in {amount.currency}; this network counts in {currency}",
            code="money.currency_mismatch",
        )
    return amount.minor
