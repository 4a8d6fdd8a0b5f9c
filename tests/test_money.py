from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from offpay.errors import MoneyError
from offpay.money import CURRENCIES, MAX_MINOR, Money, exponent, format_money, parse_money

minor_amounts = st.integers(min_value=-MAX_MINOR, max_value=MAX_MINOR)


def code_of(exc: pytest.ExceptionInfo[MoneyError]) -> str:
    return exc.value.code


# --- construction -----------------------------------------------------------------------------


def test_default_currency_is_sek() -> None:
    assert Money(1250) == Money(1250, "SEK")


def test_currency_table() -> None:
    assert CURRENCIES == {"SEK": 2, "EUR": 2, "USD": 2, "JPY": 0}
    assert exponent("JPY") == 0


@pytest.mark.parametrize("bad", [12.5, 12.0, float("nan"), float("inf"), Decimal("12"), "12", None])
def test_constructor_refuses_non_integers(bad: object) -> None:
    with pytest.raises(MoneyError) as exc:
        Money(bad)  # type: ignore[arg-type]
    assert code_of(exc) == "money.malformed"


@pytest.mark.parametrize("bad", [True, False])
def test_constructor_refuses_bool(bad: bool) -> None:
    with pytest.raises(MoneyError) as exc:
        Money(bad)
    assert code_of(exc) == "money.malformed"


@pytest.mark.parametrize("currency", ["XXX", "sek", "", "SEKK"])
def test_constructor_refuses_unknown_currency(currency: str) -> None:
    with pytest.raises(MoneyError) as exc:
        Money(1, currency)
    assert code_of(exc) == "money.unknown_currency"


@pytest.mark.parametrize("minor", [MAX_MINOR + 1, -MAX_MINOR - 1, 2**64])
def test_constructor_refuses_overflow(minor: int) -> None:
    with pytest.raises(MoneyError) as exc:
        Money(minor)
    assert code_of(exc) == "money.overflow"


def test_range_limits_are_accepted() -> None:
    assert Money(MAX_MINOR).minor == MAX_MINOR
    assert Money(-MAX_MINOR).minor == -MAX_MINOR


def test_negative_allowed_in_type_but_not_in_amount() -> None:
    assert Money(-5).minor == -5
    assert Money.amount(5, "EUR") == Money(5, "EUR")
    assert Money.amount(0) == Money(0)
    with pytest.raises(MoneyError) as exc:
        Money.amount(-5)
    assert code_of(exc) == "money.negative"
    with pytest.raises(MoneyError) as exc:
        Money.amount(1.5)  # type: ignore[arg-type]
    assert code_of(exc) == "money.malformed"


def test_frozen() -> None:
    m = Money(1)
    with pytest.raises(AttributeError):
        m.minor = 2  # type: ignore[misc]


def test_hashable_and_equal_by_value() -> None:
    assert len({Money(1), Money(1), Money(1, "EUR")}) == 2
    assert Money(1, "SEK") != Money(1, "EUR")


# --- arithmetic and comparison ----------------------------------------------------------------


def test_add_sub_neg() -> None:
    assert Money(150) + Money(250) == Money(400)
    assert Money(150) - Money(250) == Money(-100)
    assert -Money(150) == Money(-150)
    assert -Money(-MAX_MINOR) == Money(MAX_MINOR)


def test_zero() -> None:
    assert Money.zero() == Money(0, "SEK")
    assert Money.zero("JPY") == Money(0, "JPY")
    assert Money.zero("EUR").is_zero()
    assert not Money(1).is_zero()
    with pytest.raises(MoneyError) as exc:
        Money.zero("XXX")
    assert code_of(exc) == "money.unknown_currency"


@pytest.mark.parametrize(
    "operation",
    [
        lambda a, b: a + b,
        lambda a, b: a - b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
)
def test_currency_mismatch(operation: object) -> None:
    with pytest.raises(MoneyError) as exc:
        operation(Money(1, "SEK"), Money(1, "EUR"))  # type: ignore[operator]
    assert code_of(exc) == "money.currency_mismatch"


def test_overflow_on_add_and_sub() -> None:
    with pytest.raises(MoneyError) as exc:
        Money(MAX_MINOR) + Money(1)
    assert code_of(exc) == "money.overflow"
    with pytest.raises(MoneyError) as exc:
        Money(-MAX_MINOR) - Money(1)
    assert code_of(exc) == "money.overflow"
    assert Money(MAX_MINOR) + Money(-1) == Money(MAX_MINOR - 1)


def test_comparisons() -> None:
    assert Money(1) < Money(2)
    assert Money(2) <= Money(2)
    assert Money(3) > Money(2)
    assert Money(2) >= Money(2)
    assert not Money(2) < Money(2)


def test_mixing_with_plain_numbers_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Money(1) + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(1) < 2  # type: ignore[operator]  # noqa: B015
    with pytest.raises(TypeError):
        1.5 + Money(1)  # type: ignore[operator]


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SEK 12.50", Money(1250, "SEK")),
        ("12.50 SEK", Money(1250, "SEK")),
        ("12.5", Money(1250, "SEK")),
        ("12", Money(1200, "SEK")),
        ("0", Money(0, "SEK")),
        ("0.01", Money(1, "SEK")),
        ("3 000", Money(300000, "SEK")),
        ("SEK 3 000", Money(300000, "SEK")),
        ("SEK 3 000.00", Money(300000, "SEK")),
        ("1 234 567.89 EUR", Money(123456789, "EUR")),
        ("3000.00", Money(300000, "SEK")),
        ("007", Money(700, "SEK")),
        ("  SEK 1.00\n", Money(100, "SEK")),
        ("USD 0.99", Money(99, "USD")),
        ("JPY 1 500", Money(1500, "JPY")),
        ("1500 JPY", Money(1500, "JPY")),
        ("SEK 92 233 720 368 547 758.07", Money(MAX_MINOR, "SEK")),
        ("JPY 9223372036854775807", Money(MAX_MINOR, "JPY")),
    ],
)
def test_parse_good(text: str, expected: Money) -> None:
    assert parse_money(text) == expected


def test_parse_default_currency() -> None:
    assert parse_money("12", default_currency="JPY") == Money(12, "JPY")
    assert parse_money("1.5", default_currency="EUR") == Money(150, "EUR")
    # An explicit code wins over the default.
    assert parse_money("SEK 1", default_currency="JPY") == Money(100, "SEK")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "money.malformed"),
        ("   ", "money.malformed"),
        ("SEK", "money.malformed"),
        ("abc", "money.malformed"),
        ("12,50", "money.malformed"),
        ("3,000.00", "money.malformed"),
        ("1e3", "money.malformed"),
        ("1E3", "money.malformed"),
        ("12.", "money.malformed"),
        (".5", "money.malformed"),
        ("1.2.3", "money.malformed"),
        ("+12", "money.malformed"),
        ("SEK12.50", "money.malformed"),
        ("12.50SEK", "money.malformed"),
        ("SEK  12.50", "money.malformed"),
        ("SEK 12 SEK", "money.malformed"),
        ("sek 12", "money.malformed"),
        ("3  000", "money.malformed"),
        ("30 00", "money.malformed"),
        ("3 0000", "money.malformed"),
        ("0 000", "money.malformed"),
        ("3_000", "money.malformed"),
        ("3\u2009000", "money.malformed"),
        ("3\u00a0000", "money.malformed"),
        ("\u0661\u0662", "money.malformed"),
        ("12 .50", "money.malformed"),
        ("nan", "money.malformed"),
        ("inf", "money.malformed"),
        ("0x10", "money.malformed"),
        ("-SEK -1", "money.malformed"),
        ("-12", "money.negative"),
        ("-12.50", "money.negative"),
        ("\u221212", "money.negative"),
        ("-SEK 12.50", "money.negative"),
        ("SEK -12.50", "money.negative"),
        ("-12.50 SEK", "money.negative"),
        ("-0", "money.negative"),
        ("12.505", "money.precision"),
        ("SEK 0.001", "money.precision"),
        ("12.500", "money.precision"),
        ("JPY 12.5", "money.precision"),
        ("JPY 12.0", "money.precision"),
        ("XXX 12", "money.unknown_currency"),
        ("12 ABC", "money.unknown_currency"),
        ("SEK 92 233 720 368 547 758.08", "money.overflow"),
        ("JPY 9223372036854775808", "money.overflow"),
        ("9" * 5000, "money.overflow"),
    ],
)
def test_parse_bad(text: str, code: str) -> None:
    with pytest.raises(MoneyError) as exc:
        parse_money(text)
    assert code_of(exc) == code


def test_parse_precision_message_names_the_allowed_places() -> None:
    with pytest.raises(MoneyError) as exc:
        parse_money("1.234 EUR")
    assert "2 decimal places" in exc.value.message
    with pytest.raises(MoneyError) as exc:
        parse_money("JPY 1.5")
    assert "no decimal places" in exc.value.message


def test_parse_refuses_unknown_default_currency() -> None:
    with pytest.raises(MoneyError) as exc:
        parse_money("12", default_currency="XXX")
    assert code_of(exc) == "money.unknown_currency"


@pytest.mark.parametrize("bad", [12.5, 12, None, b"12"])
def test_parse_refuses_non_text(bad: object) -> None:
    with pytest.raises(MoneyError) as exc:
        parse_money(bad)  # type: ignore[arg-type]
    assert code_of(exc) == "money.malformed"


# --- formatting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1250), "SEK 12.50"),
        (Money(0), "SEK 0.00"),
        (Money(5), "SEK 0.05"),
        (Money(300000), "SEK 3 000.00"),
        (Money(123456789, "EUR"), "EUR 1 234 567.89"),
        (Money(-1250), "-SEK 12.50"),
        (Money(-5), "-SEK 0.05"),
        (Money(1500, "JPY"), "JPY 1 500"),
        (Money(999, "JPY"), "JPY 999"),
        (Money(MAX_MINOR), "SEK 92 233 720 368 547 758.07"),
        (Money(-MAX_MINOR, "JPY"), "-JPY 9 223 372 036 854 775 807"),
    ],
)
def test_format(money: Money, text: str) -> None:
    assert format_money(money) == text
    assert str(money) == text


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["SEK", "JPY"])
@given(minor=st.integers(min_value=0, max_value=MAX_MINOR))
def test_round_trip(currency: str, minor: int) -> None:
    m = Money(minor, currency)
    assert parse_money(format_money(m)) == m
    assert parse_money(format_money(m), default_currency="EUR") == m


@given(
    minor=st.integers(min_value=0, max_value=MAX_MINOR),
    currency=st.sampled_from(sorted(CURRENCIES)),
)
def test_round_trip_every_currency(minor: int, currency: str) -> None:
    m = Money(minor, currency)
    assert parse_money(str(m)) == m


@given(a=minor_amounts, b=minor_amounts)
def test_add_is_exact_or_overflows(a: int, b: int) -> None:
    exact = a + b
    if abs(exact) <= MAX_MINOR:
        assert (Money(a) + Money(b)).minor == exact
    else:
        with pytest.raises(MoneyError) as exc:
            Money(a) + Money(b)
        assert code_of(exc) == "money.overflow"


@given(a=minor_amounts, b=minor_amounts)
def test_add_commutative(a: int, b: int) -> None:
    assume(abs(a + b) <= MAX_MINOR)
    assert Money(a) + Money(b) == Money(b) + Money(a)


@given(
    a=st.integers(min_value=-(MAX_MINOR // 3), max_value=MAX_MINOR // 3),
    b=st.integers(min_value=-(MAX_MINOR // 3), max_value=MAX_MINOR // 3),
    c=st.integers(min_value=-(MAX_MINOR // 3), max_value=MAX_MINOR // 3),
)
def test_add_associative(a: int, b: int, c: int) -> None:
    x, y, z = Money(a, "EUR"), Money(b, "EUR"), Money(c, "EUR")
    assert (x + y) + z == x + (y + z)


@given(a=minor_amounts, b=minor_amounts)
def test_sub_is_add_of_negation(a: int, b: int) -> None:
    assume(abs(a - b) <= MAX_MINOR)
    assert Money(a) - Money(b) == Money(a) + -Money(b)


@given(a=minor_amounts, b=minor_amounts)
def test_order_matches_integers(a: int, b: int) -> None:
    assert (Money(a) < Money(b)) == (a < b)
    assert (Money(a) >= Money(b)) == (a >= b)
