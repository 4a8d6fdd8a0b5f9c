"""What ``offpay network init`` is told about a new network: intermediaries, algorithm,
liquidity policy, pool and limits, from options and from a TOML file with the same keys
(options win). Checked here, before anything is written::

    banks = ["bank-a", "bank-b"]
    algorithm = "ed25519"
    liquidity = "pool"          # queue | restrict | pool | receipts
    pool = "SEK 100000"

    [limits]
    card_max_offline_transactions = 5
    card_max_balance = "SEK 3000"
    terminal_max_offline_payments = 12
    terminal_max_received = "SEK 20000"
    max_receipts = 8
    blocked_window_hours = 168
    payment_max = "SEK 200"     # optional limits: absent means no limit
    card_max_offline_spent = "SEK 2000"
    card_max_daily_payments = 20
    card_max_daily_spent = "SEK 5000"
    max_offline_hours = 72
    token_max_ancestry = 30
    element_max_holding = "SEK 3000"

The ``[limits]`` keys are :data:`offpay.policy.LIMITS`'s names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from offpay.crypto.keys import Algorithm
from offpay.errors import OffpayError
from offpay.money import Money, parse_minor
from offpay.policy import LIMITS, Unit, default_policy, revised_policy
from offpay.toml_input import read_toml, validated
from offpay.wire.messages import Liquidity

CURRENCY = "SEK"


def _money(value: Any) -> Any:
    """An amount as ``"SEK 3000"`` (or a whole number of minor units)."""
    if isinstance(value, str):
        try:
            return parse_minor(value, CURRENCY)
        except OffpayError as exc:
            raise ValueError(exc.message) from None
    if isinstance(value, Money):
        return value.minor
    return value


Amount = Annotated[int, BeforeValidator(_money), Field(ge=0, le=10**15)]
Count = Annotated[int, Field(ge=0, le=10**6)]


class LimitsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def given(self) -> dict[str, int | None]:
        return self.model_dump(exclude_none=True)


# One key per limit the policy has (offpay.policy.LIMITS), none of them required.
Limits = create_model(  # type: ignore[call-overload]
    "Limits",
    __base__=LimitsBase,
    **{f.name: ((Amount if f.unit is Unit.AMOUNT else Count) | None, None) for f in LIMITS},
)


class NetworkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    banks: list[str] = Field(default_factory=lambda: ["bank-a", "bank-b"])
    algorithm: Algorithm = Algorithm.ED25519
    liquidity: Liquidity = Liquidity.QUEUE
    pool: Amount = 0
    limits: Limits = Field(default_factory=Limits)  # type: ignore[valid-type]


def network_settings(config: Path | None, options: dict[str, Any]) -> NetworkSettings:
    """The file's settings (if any) with every option given (not None) on top, checked; the
    limits are also checked as a whole policy, so a bad one is refused before init."""
    data: dict[str, Any] = read_toml(config) if config is not None else {}
    source = str(config) if config is not None else "options"
    limits = dict(data.get("limits") or {}) if isinstance(data.get("limits"), dict) else None
    for key, value in options.items():
        if value is None:
            continue
        if key in Limits.model_fields:
            limits = limits if limits is not None else {}
            limits[key] = value
        else:
            data[key] = value
    if limits is not None:
        data["limits"] = limits
    return checked(validated(NetworkSettings, data, source))


def checked(settings: NetworkSettings) -> NetworkSettings:
    """``settings`` if its limits make a policy the rules accept (:func:`check_policy`)."""
    first = default_policy("check", 1, CURRENCY, settings.liquidity)
    revised_policy(first, settings.limits.given(), version=1)
    return settings
