"""Limits as a signed, versioned document rather than constants in the card (report §3.8).

The intermediary signs a :class:`LimitsPolicy`; cards and terminals accept a newer version at
sync and refuse an older one, so a hostile relay cannot loosen limits by replaying an old one.
"""

from __future__ import annotations

import dataclasses

from offpay.crypto.pki import Credential, Role, TrustStore
from offpay.errors import OffpayError, PolicyError
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
    counts = (policy.card_max_offline_transactions, policy.terminal_max_offline_payments)
    if any(n < 0 for n in counts):
        raise PolicyError("a transaction count limit is negative", code="policy.bad_limit")
    if policy.blocked_window_hours < 0:
        raise PolicyError("the blocked-card window cannot be negative", code="policy.bad_limit")
    if not 0 <= policy.max_receipts <= MAX_RECEIPTS_CEILING:
        raise PolicyError(
            f"max_receipts must be between 0 and {MAX_RECEIPTS_CEILING}", code="policy.bad_limit"
        )
    for amount in (policy.card_max_balance, policy.terminal_max_received):
        if amount.currency != policy.currency or amount.minor < 0:
            raise PolicyError(
                "an amount limit is negative or in another currency", code="policy.bad_limit"
            )
    return policy


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


# The limits a network's operator sets (``offpay network init``, the back office's
# ``/v1/admin/policy``): counts, and amounts in minor units.
LIMIT_COUNTS = (
    "card_max_offline_transactions",
    "terminal_max_offline_payments",
    "max_receipts",
    "blocked_window_hours",
)
LIMIT_AMOUNTS = ("card_max_balance", "terminal_max_received")
LIMIT_FIELDS = LIMIT_COUNTS + LIMIT_AMOUNTS


def revised_policy(
    current: LimitsPolicy, limits: dict[str, int], version: int | None = None
) -> LimitsPolicy:
    """``current`` with ``limits`` (field name → count or minor units) changed, as version
    ``version`` (the next one by default); checked like any policy before it is signed."""
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise PolicyError(
            f"no limit named {', '.join(sorted(unknown))} (limits: {', '.join(LIMIT_FIELDS)})",
            code="policy.unknown_limit",
        )
    changes: dict[str, object] = {
        name: Money(value, current.currency) if name in LIMIT_AMOUNTS else value
        for name, value in limits.items()
    }
    changes["version"] = current.version + 1 if version is None else version
    return check_policy(dataclasses.replace(current, **changes))  # type: ignore[arg-type]
