"""Limits as a signed, versioned document rather than constants in the card (report §3.8).

The intermediary signs a :class:`LimitsPolicy`; cards and terminals accept a newer version at
sync and refuse an older one, so a hostile relay cannot loosen limits by replaying an old one.
"""

from __future__ import annotations

import dataclasses
import enum

from offpay.crypto.pki import Credential, Role, TrustStore
from offpay.errors import LimitExceeded, OffpayError, PolicyError
from offpay.money import Money
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import LimitsPolicy, Liquidity

# The e-krona pilot's limits (report §3.3), as defaults, not as code.
DEFAULT_CARD_MAX_OFFLINE_TRANSACTIONS = 5
DEFAULT_CARD_MAX_BALANCE_MINOR = 3_000_00
DEFAULT_TERMINAL_MAX_OFFLINE_PAYMENTS = 12
DEFAULT_TERMINAL_MAX_RECEIVED_MINOR = 20_000_00
# Funding receipts one payment may carry (policy ``receipts``): enough for a card's whole
# offline log (5 entries) and part of what funded those.
DEFAULT_MAX_RECEIPTS = 8
# A card reported lost or stolen is blocked at once; payments it signed before that and that
# reach an intermediary within this window still settle (a shop may sync once a day or less).
DEFAULT_BLOCKED_WINDOW_HOURS = 7 * 24
MAX_RECEIPTS_CEILING = 64


def default_policy(
    issuer: str,
    version: int = 1,
    currency: str = "SEK",
    liquidity: Liquidity = Liquidity.QUEUE,
) -> LimitsPolicy:
    return LimitsPolicy(
        issuer=issuer,
        version=version,
        currency=currency,
        card_max_offline_transactions=DEFAULT_CARD_MAX_OFFLINE_TRANSACTIONS,
        card_max_balance=Money(DEFAULT_CARD_MAX_BALANCE_MINOR, currency),
        terminal_max_offline_payments=DEFAULT_TERMINAL_MAX_OFFLINE_PAYMENTS,
        terminal_max_received=Money(DEFAULT_TERMINAL_MAX_RECEIVED_MINOR, currency),
        liquidity=liquidity,
        max_receipts=DEFAULT_MAX_RECEIPTS,
        blocked_window_hours=DEFAULT_BLOCKED_WINDOW_HOURS,
    )


def check_policy(policy: LimitsPolicy) -> LimitsPolicy:
    """Refuse a policy whose numbers make no sense, before anyone signs or applies it."""
    if policy.version < 1:
        raise PolicyError("policy version must be 1 or more", code="policy.bad_version")
    counts = (
        policy.card_max_offline_transactions,
        policy.terminal_max_offline_payments,
        policy.card_max_daily_payments,
        policy.max_offline_hours,
        policy.token_max_ancestry,
    )
    if any(n is not None and (type(n) is not int or n < 0) for n in counts):
        raise PolicyError("a count or hours limit is negative", code="policy.bad_limit")
    if policy.blocked_window_hours < 0:
        raise PolicyError("the blocked-card window cannot be negative", code="policy.bad_limit")
    if not 0 <= policy.max_receipts <= MAX_RECEIPTS_CEILING:
        raise PolicyError(
            f"max_receipts must be between 0 and {MAX_RECEIPTS_CEILING}", code="policy.bad_limit"
        )
    amounts = (
        policy.card_max_balance,
        policy.terminal_max_received,
        policy.payment_max,
        policy.card_max_offline_spent,
        policy.card_max_daily_spent,
        policy.element_max_holding,
    )
    for amount in amounts:
        if amount is None:
            continue
        if amount.currency != policy.currency or amount.minor < 0:
            raise PolicyError(
                "an amount limit is negative or in another currency", code="policy.bad_limit"
            )
    return policy


def check_payment_max(policy: LimitsPolicy, amount: Money) -> None:
    """The per-payment maximum, as every device enforces it: the paying card, the terminal
    module and the card that receive, the token elements on both sides."""
    if policy.payment_max is not None and amount > policy.payment_max:
        raise LimitExceeded(
            "payment_max", f"one offline payment may move at most {policy.payment_max}"
        )


def sign_policy(policy: LimitsPolicy, engine: Credential) -> Signed[LimitsPolicy]:
    check_policy(policy)
    if engine.identity.institution != policy.issuer:
        raise PolicyError("a policy must be signed by its issuer", code="policy.wrong_issuer")
    return sign(policy, engine)  # type: ignore[return-value]


def accept_policy(
    signed: Signed[LimitsPolicy],
    trust: TrustStore,
    institution: str,
    current: LimitsPolicy | None,
) -> LimitsPolicy:
    """The policy in ``signed`` if it comes from ``institution`` and is not older than
    ``current``; a device calls this before replacing its limits."""
    try:
        policy, _ = open_signed(
            signed, LimitsPolicy, trust, Role.ENGINE, receiver=None, institution=institution
        )
    except PolicyError:
        raise
    except OffpayError as exc:
        raise PolicyError(f"policy is not validly signed: {exc}", code="policy.unsigned") from exc
    if policy.issuer != institution:
        raise PolicyError(
            f"policy issued by {policy.issuer}, expected {institution}", code="policy.wrong_issuer"
        )
    check_policy(policy)
    if current is not None:
        if policy.version < current.version:
            raise PolicyError(
                f"policy version {policy.version} is older than the current {current.version}",
                code="policy.downgrade",
            )
        if policy.version == current.version and policy != current:
            raise PolicyError(
                f"two different policies claim version {policy.version}", code="policy.conflict"
            )
    return policy


# --- the limits, described once -----------------------------------------------------------


class Unit(enum.StrEnum):
    """How a limit's number is read."""

    COUNT = "count"  # payments, receipts or ancestors
    AMOUNT = "amount"  # minor units of the policy's currency
    HOURS = "hours"


class Scheme(enum.StrEnum):
    """Which scheme's devices enforce a limit."""

    BALANCE = "balance"  # cards and terminal modules
    TOKENS = "tokens"  # token secure elements
    BOTH = "both"


@dataclasses.dataclass(frozen=True)
class LimitField:
    """One limit of :class:`LimitsPolicy`, as a UI shows it: the CLI's options, the network's
    ``--config`` keys, the admin route and the console iterate over :data:`LIMITS` instead of
    copying the list. ``optional``: absent means no limit. ``enforcer``: the device that
    refuses, with the refusal code ``limit.<name>``."""

    name: str
    unit: Unit
    scheme: Scheme
    optional: bool
    enforcer: str
    description: str

    @property
    def code(self) -> str:
        return f"limit.{self.name}"


LIMITS: tuple[LimitField, ...] = (
    LimitField(
        "card_max_offline_transactions",
        Unit.COUNT,
        Scheme.BALANCE,
        False,
        "card",
        "Offline payments a card may make or receive between syncs.",
    ),
    LimitField(
        "card_max_balance",
        Unit.AMOUNT,
        Scheme.BALANCE,
        False,
        "card",
        "Most a card may hold.",
    ),
    LimitField(
        "terminal_max_offline_payments",
        Unit.COUNT,
        Scheme.BALANCE,
        False,
        "terminal",
        "Offline payments a terminal may take between syncs.",
    ),
    LimitField(
        "terminal_max_received",
        Unit.AMOUNT,
        Scheme.BALANCE,
        False,
        "terminal",
        "Most a terminal may take between syncs.",
    ),
    LimitField(
        "max_receipts",
        Unit.COUNT,
        Scheme.BALANCE,
        False,
        "card",
        "Funding receipts one payment may carry (liquidity receipts).",
    ),
    LimitField(
        "blocked_window_hours",
        Unit.HOURS,
        Scheme.BALANCE,
        False,
        "intermediary",
        "Hours a blocked card's earlier payments may still settle.",
    ),
    LimitField(
        "payment_max",
        Unit.AMOUNT,
        Scheme.BOTH,
        True,
        "card, terminal, element",
        "Most one offline payment may move, paid or received (shop or person to person).",
    ),
    LimitField(
        "card_max_offline_spent",
        Unit.AMOUNT,
        Scheme.BOTH,
        True,
        "card, element",
        "Most a card or token element may spend offline since its last online moment, "
        "whatever it holds.",
    ),
    LimitField(
        "card_max_daily_payments",
        Unit.COUNT,
        Scheme.BOTH,
        True,
        "card, element",
        "Offline payments a card or token element may make in one day (UTC, by its clock).",
    ),
    LimitField(
        "card_max_daily_spent",
        Unit.AMOUNT,
        Scheme.BOTH,
        True,
        "card, element",
        "Most a card or token element may spend offline in one day (UTC, by its clock).",
    ),
    LimitField(
        "max_offline_hours",
        Unit.HOURS,
        Scheme.BOTH,
        True,
        "card, element",
        "Hours after its last online moment a card or token element stops paying until it "
        "goes online again.",
    ),
    LimitField(
        "token_max_ancestry",
        Unit.COUNT,
        Scheme.TOKENS,
        True,
        "element",
        "Most ancestors a token may carry to be accepted offline.",
    ),
    LimitField(
        "element_max_holding",
        Unit.AMOUNT,
        Scheme.TOKENS,
        True,
        "element",
        "Most value a token element may hold.",
    ),
)
LIMITS_BY_NAME = {f.name: f for f in LIMITS}

# The limits a network's operator sets (``offpay network init``, the back office's
# ``/v1/admin/policy``): counts, and amounts in minor units. Kept for their callers.
LIMIT_FIELDS = tuple(f.name for f in LIMITS)
LIMIT_AMOUNTS = tuple(f.name for f in LIMITS if f.unit is Unit.AMOUNT)
LIMIT_COUNTS = tuple(f.name for f in LIMITS if f.unit is not Unit.AMOUNT)
OPTIONAL_LIMITS = tuple(f.name for f in LIMITS if f.optional)


def limit_value(policy: LimitsPolicy, name: str) -> int | None:
    """A limit of ``policy`` as a number (amounts in minor units), None for no limit."""
    value = getattr(policy, LIMITS_BY_NAME[name].name)
    return value.minor if isinstance(value, Money) else value


def revised_policy(
    current: LimitsPolicy, limits: dict[str, int | None], version: int | None = None
) -> LimitsPolicy:
    """``current`` with ``limits`` (field name → count or minor units; None lifts an optional
    limit) changed, as version ``version`` (the next one by default); checked like any policy
    before it is signed."""
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise PolicyError(
            f"no limit named {', '.join(sorted(unknown))} (limits: {', '.join(LIMIT_FIELDS)})",
            code="policy.unknown_limit",
        )
    lifted = sorted(n for n, v in limits.items() if v is None and n not in OPTIONAL_LIMITS)
    if lifted:
        raise PolicyError(
            f"{', '.join(lifted)} cannot be lifted, only changed", code="policy.bad_limit"
        )
    for name, value in limits.items():
        if value is not None and (type(value) is not int or value < 0):
            raise PolicyError(f"{name} must be a whole number, 0 or more", code="policy.bad_limit")
    changes: dict[str, object] = {
        name: Money(value, current.currency)
        if name in LIMIT_AMOUNTS and value is not None
        else value
        for name, value in limits.items()
    }
    changes["version"] = current.version + 1 if version is None else version
    return check_policy(dataclasses.replace(current, **changes))  # type: ignore[arg-type]
