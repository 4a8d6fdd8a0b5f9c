"""A scenario is a TOML file checked by a typed schema (pydantic), so that a mistake is refused
with one line naming the field and the rule before anything runs.

Amounts are written as text in the scenario's currency (``"SEK 150"``, ``"150.00"``), read by
the same parser as every other amount in offpay, or as whole minor units (``15000``). The limits
become a real :class:`~offpay.wire.messages.LimitsPolicy` and pass the protocol's own check.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from offpay.errors import MoneyError, OffpayError, PolicyError
from offpay.money import Money, parse_money
from offpay.policy import LIMITS_BY_NAME, Unit, check_policy, default_policy
from offpay.tokens.desk import DEFAULT_MAX_ANCESTRY
from offpay.wire.messages import LimitsPolicy, Liquidity

MINUTES_PER_DAY = 24 * 60


class ScenarioError(OffpayError):
    """A scenario file that cannot be run: unreadable, not TOML, or against a rule."""

    code = "scenario.invalid"


class Scheme(StrEnum):
    BALANCE = "balance"  # card balances and shadow wallets (e-krona report §3.4–3.7)
    TOKENS = "tokens"  # sign-once tokens (Federal Reserve FEDS 2025-105)


def _minor(value: Any, info: ValidationInfo) -> Any:
    """An amount as minor units: text is read by :func:`offpay.money.parse_money` in the
    scenario's currency; a whole number is taken as minor units already."""
    if isinstance(value, bool):
        raise ValueError("an amount is text such as 'SEK 150' or whole minor units")
    if isinstance(value, str):
        currency = (info.context or {}).get("currency", "SEK")
        try:
            money = parse_money(value, currency)
        except MoneyError as exc:
            raise ValueError(exc.message) from None
        if money.currency != currency:
            raise ValueError(f"amount {value!r} is not in the scenario's currency {currency}")
        return money.minor
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Minor = Annotated[int, Field(ge=0)]


class Share(_Strict):
    name: str = Field(min_length=1, max_length=64)
    share: float = Field(gt=0, le=1)


class Population(_Strict):
    """Who is in the network. People each hold one card (or one token element); merchants each
    run one shop terminal; each person and merchant banks with one intermediary and lives in
    one region, drawn by the shares given."""

    people: int = Field(ge=1, le=50_000_000)
    merchants: int = Field(default=0, ge=0, le=10_000_000)
    intermediaries: tuple[Share, ...] = (
        Share(name="bank-a", share=0.5),
        Share(name="bank-b", share=0.5),
    )
    regions: tuple[Share, ...] = (Share(name="all", share=1.0),)
    names: tuple[str, ...] = ()  # names for the first people, as scripts refer to them

    @field_validator("intermediaries", "regions")
    @classmethod
    def _shares(cls, shares: tuple[Share, ...]) -> tuple[Share, ...]:
        if not shares:
            raise ValueError("name at least one")
        names = [s.name for s in shares]
        if len(set(names)) != len(names):
            raise ValueError("names must differ")
        if not math.isclose(sum(s.share for s in shares), 1.0, abs_tol=1e-6):
            raise ValueError("shares must add up to 1")
        return shares

    @model_validator(mode="after")
    def _names_fit(self) -> Population:
        if len(self.names) > self.people:
            raise ValueError("more names than people")
        if len(set(self.names)) != len(self.names):
            raise ValueError("names must differ")
        return self


class AmountDistribution(_Strict):
    """Payment amounts: log-normal around a median, in whole currency units, cut to a range.
    Card payments are right-skewed with a long tail (ECB SPACE 2022 and the Riksbank's payment
    surveys report medians of a few hundred SEK or a few tens of euros)."""

    median: Annotated[int, Field(gt=0)]
    sigma: float = Field(default=0.8, ge=0, le=4)
    min: Minor = 100
    max: Annotated[int, Field(gt=0)] = 3_000_00

    _amounts = field_validator("median", "min", "max", mode="before")(_minor)

    @model_validator(mode="after")
    def _ordered(self) -> AmountDistribution:
        if not self.min <= self.median <= self.max:
            raise ValueError("min <= median <= max must hold")
        return self


class Behaviour(_Strict):
    payments_per_person_per_day: float = Field(default=1.0, ge=0, le=100)
    person_to_person_share: float = Field(default=0.1, ge=0, le=1)
    amount: AmountDistribution = AmountDistribution(median=150_00, sigma=0.8, max=3_000_00)
    active_hours: tuple[int, int] = (8, 22)  # payments happen between these hours of a day
    person_online_per_day: float = Field(default=0.5, ge=0, le=100)
    merchant_online_per_day: float = Field(default=1.0, ge=0, le=100)
    top_up_to: Minor = 1_000_00  # a card is topped up to this when its holder goes online
    start_topped_up: bool = True  # everyone goes online once at the start (drawn behaviour)
    online_wallet: Minor = 20_000_00  # each person's online wallet at the start

    _amounts = field_validator("top_up_to", "online_wallet", mode="before")(_minor)

    @field_validator("active_hours")
    @classmethod
    def _hours(cls, hours: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= hours[0] < hours[1] <= 24:
            raise ValueError("need 0 <= first hour < last hour <= 24")
        return hours


class Outage(_Strict):
    """Devices of the named intermediaries and regions (all when none is named) cannot reach
    their intermediary from ``start_hour`` for ``hours``; intermediaries and the central bank
    still reach each other. A device that failed to go online during the outage tries again
    within ``reconnect_hours`` after it ends (the load when the network comes back)."""

    start_hour: float = Field(default=0, ge=0)
    hours: float = Field(gt=0)
    intermediaries: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    reconnect_hours: float = Field(default=2, ge=0)


class Limits(_Strict):
    """Overrides of the report's limits (§3.3); what is left out keeps its default."""

    card_max_offline_transactions: int | None = Field(default=None, ge=0, le=1000)
    card_max_balance: Minor | None = None
    terminal_max_offline_payments: int | None = Field(default=None, ge=0, le=100_000)
    terminal_max_received: Minor | None = None
    max_receipts: int | None = Field(default=None, ge=0)
    blocked_window_hours: int | None = Field(default=None, ge=0)
    # Limits beyond the pilot's (docs/limits.md); left out, there is none.
    payment_max: Minor | None = None
    card_max_offline_spent: Minor | None = None
    card_max_daily_payments: int | None = Field(default=None, ge=0)
    card_max_daily_spent: Minor | None = None
    max_offline_hours: int | None = Field(default=None, ge=0)
    token_max_ancestry: int | None = Field(default=None, ge=0)
    element_max_holding: Minor | None = None

    _amounts = field_validator(
        "card_max_balance",
        "terminal_max_received",
        "payment_max",
        "card_max_offline_spent",
        "card_max_daily_spent",
        "element_max_holding",
        mode="before",
    )(_minor)


# The limits each executor models so far; any other limit set in a scenario is refused, so a
# run never silently ignores a limit the protocol would enforce.
SIMULATED_LIMITS = {
    Scheme.BALANCE: frozenset(
        {
            "card_max_offline_transactions",
            "card_max_balance",
            "terminal_max_offline_payments",
            "terminal_max_received",
            "max_receipts",
            "blocked_window_hours",
            "payment_max",
            "card_max_offline_spent",
            "card_max_daily_payments",
            "card_max_daily_spent",
            "max_offline_hours",
        }
    ),
    Scheme.TOKENS: frozenset(
        {
            "card_max_offline_transactions",
            "card_max_balance",
            "terminal_max_offline_payments",
            "terminal_max_received",
            "max_receipts",
            "blocked_window_hours",
            "payment_max",
            "card_max_offline_spent",
            "card_max_daily_payments",
            "card_max_daily_spent",
            "max_offline_hours",
            "token_max_ancestry",
            "element_max_holding",
        }
    ),
}


class LiquidityRule(_Strict):
    policy: Liquidity = Liquidity.QUEUE
    pool: Minor = 0  # what the central bank puts in its liquidity pool (policy ``pool``)

    _amounts = field_validator("pool", mode="before")(_minor)


class Attacks(_Strict):
    """Shares of devices an attacker breaks at ``start_hour``: a cloned card gets a twin with its
    key and state; a rolled-back card is later written back to the state it had then; a broken
    token element double-spends what it held. Each broken device then tries ``payments``
    payments at shops, each of ``amount`` or, with ``amount = "all"``, of everything the copy
    still holds, spread over ``hours`` after ``start_hour``. A rolled-back card is written back
    just before its first such payment; its holder goes on using it as before."""

    cloned_cards: float = Field(default=0, ge=0, le=1)
    rolled_back_cards: float = Field(default=0, ge=0, le=1)
    broken_elements: float = Field(default=0, ge=0, le=1)
    start_hour: float = Field(default=0, ge=0)
    hours: float = Field(default=24, gt=0)  # the broken devices' payments spread over these
    payments: int = Field(default=1, ge=1, le=100)
    amount: Literal["all"] | Minor = "all"

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> Any:
        return value if value == "all" else _minor(value, info)


class TokenRules(_Strict):
    """The token scheme's own rule: a token whose ancestry is longer than ``max_ancestry`` is
    renewed (deposited and minted afresh) at its holder's next online moment."""

    max_ancestry: int = Field(default=DEFAULT_MAX_ANCESTRY, ge=0, le=10_000)


class ScriptKind(StrEnum):
    SHOP = "shop"  # a person pays a merchant's terminal
    P2P = "p2p"  # a person pays another person
    ONLINE = "online"  # a person goes online: sync, then top up
    SHOP_ONLINE = "shop-online"  # a merchant syncs its terminal


class ScriptStep(_Strict):
    """One event given by hand (the report's Alice–Bob–Charlie is three people and a script).
    People are named by ``population.names`` or by number from 0; merchants as ``m0``, ``m1``…"""

    at_hour: float = Field(ge=0)
    kind: ScriptKind
    who: str
    to: str | None = None
    amount: Minor | None = None

    _amounts = field_validator("amount", mode="before")(_minor)

    @model_validator(mode="after")
    def _complete(self) -> ScriptStep:
        pays = self.kind in (ScriptKind.SHOP, ScriptKind.P2P)
        if pays and (self.to is None or not self.amount):
            raise ValueError(f"a {self.kind} step needs 'to' and a positive 'amount'")
        if not pays and (self.to is not None or self.amount is not None):
            raise ValueError(f"a {self.kind} step takes no 'to' or 'amount'")
        return self


class Scenario(_Strict):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    seed: int = Field(default=0, ge=0, lt=2**63)
    days: float = Field(gt=0, le=366)
    currency: str = Field(default="SEK", pattern=r"^[A-Z]{3}$")
    scheme: Scheme = Scheme.BALANCE
    population: Population
    behaviour: Behaviour = Behaviour()
    outage: Outage | None = None
    limits: Limits = Limits()
    liquidity: LiquidityRule = LiquidityRule()
    attacks: Attacks = Attacks()
    tokens: TokenRules = TokenRules()
    script: tuple[ScriptStep, ...] = ()
    generate: bool = True  # draw behaviour's payments; false: only the script runs

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        banks = {s.name for s in self.population.intermediaries}
        regions = {s.name for s in self.population.regions}
        if self.outage is not None:
            for name in self.outage.intermediaries:
                if name not in banks:
                    raise ValueError(
                        f"outage.intermediaries: {name!r} is not an intermediary of the population"
                    )
            for name in self.outage.regions:
                if name not in regions:
                    raise ValueError(f"outage.regions: {name!r} is not a region of the population")
            if self.outage.start_hour >= self.days * 24:
                raise ValueError("outage.start_hour: the outage starts after the scenario ends")
        if self.liquidity.policy is Liquidity.POOL and self.liquidity.pool == 0:
            raise ValueError("liquidity.pool: policy 'pool' needs a pool above 0")
        broken = round(self.attacks.cloned_cards * self.population.people)
        broken += round(self.attacks.rolled_back_cards * self.population.people)
        broken += round(self.attacks.broken_elements * self.population.people)
        if broken > self.population.people:
            raise ValueError("attacks: the shares break more devices than there are people")
        if self.attacks.broken_elements and self.scheme is not Scheme.TOKENS:
            raise ValueError("attacks.broken_elements: applies to the token scheme only")
        cards = self.attacks.cloned_cards or self.attacks.rolled_back_cards
        if cards and self.scheme is Scheme.TOKENS:
            raise ValueError(
                "attacks: cloned and rolled-back cards apply to the balance scheme; "
                "the token scheme's attack is broken_elements"
            )
        if self.attacks.start_hour >= self.days * 24 and self.attacks != Attacks(
            start_hour=self.attacks.start_hour
        ):
            raise ValueError("attacks.start_hour: the attacks start after the scenario ends")
        for step in self.script:
            if step.at_hour >= self.days * 24:
                raise ValueError(
                    f"script: a step at hour {step.at_hour} is after the scenario ends"
                )
        unmodelled = sorted(
            set(self.limits.model_dump(exclude_none=True)) - SIMULATED_LIMITS[self.scheme]
        )
        if unmodelled:
            raise ValueError(
                f"limits: the simulator does not model {', '.join(unmodelled)} under the "
                f"{self.scheme.value} scheme yet (docs/limits.md)"
            )
        holding = self.limits.element_max_holding
        if holding is not None and holding < self.behaviour.top_up_to:
            # a person tops up to top_up_to, and the element refuses every withdrawal that
            # would take it above its holding limit: no one could ever top up
            raise ValueError(
                "limits.element_max_holding: below behaviour.top_up_to, every top-up "
                "would be refused"
            )
        self.policy  # noqa: B018 - the limits must pass the protocol's own check
        return self

    @property
    def policy(self) -> LimitsPolicy:
        """The limits as the intermediaries sign them: the report's defaults, overridden by
        ``limits``, checked by :func:`offpay.policy.check_policy`."""
        base = default_policy("scenario", 2, self.currency, self.liquidity.policy)
        changes: dict[str, Any] = {}
        for field, value in self.limits.model_dump(exclude_none=True).items():
            amount = LIMITS_BY_NAME[field].unit is Unit.AMOUNT
            changes[field] = Money(value, self.currency) if amount else value
        policy = dataclasses.replace(base, **changes)
        try:
            return check_policy(policy)
        except PolicyError as exc:
            raise ValueError(f"limits: {exc.message}") from None

    @property
    def minutes(self) -> int:
        return round(self.days * MINUTES_PER_DAY)


def _where(error: dict[str, Any]) -> str:
    """The field's dotted path; a rule across fields names its field in its message."""
    return "".join(f"{part}." if isinstance(part, str) else f"[{part}]." for part in error["loc"])


def parse_scenario(data: dict[str, Any]) -> Scenario:
    """A scenario from its decoded TOML, or :class:`ScenarioError` naming the first bad field."""
    currency = data.get("currency", "SEK") if isinstance(data, dict) else "SEK"
    try:
        return Scenario.model_validate(data, context={"currency": currency})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        where = _where(first).rstrip(".")
        text = f"{where}: {message}" if where else message
        raise ScenarioError(text, code="scenario.invalid") from None


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ScenarioError(
            f"cannot read scenario {path}: {reason}", code="scenario.unreadable"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path} is not valid TOML: {exc}", code="scenario.not_toml") from None
    return parse_scenario(data)
