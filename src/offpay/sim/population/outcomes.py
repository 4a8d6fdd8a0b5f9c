"""What happened to each event, in the same shape from both executors, so that the fidelity
tests compare them column by column and the report reads either.

An outcome is an index into :data:`CODES`: ``ok``, or the stable code of the refusal the
protocol gives (``limit.card_max_offline_transactions``, ``funds.insufficient``…), or a code of
the simulator's own (``offline.unreachable``: an attempt to go online the outage cut off).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CODES: tuple[str, ...] = (
    "ok",
    "offline.unreachable",
    "limit.card_max_offline_transactions",
    "limit.card_max_balance",
    "limit.card_received_not_spendable",
    "limit.terminal_max_offline_payments",
    "limit.terminal_max_received",
    "funds.insufficient",
    "device.revoked",
    "device.busy",
    "device.blocked",
    "device.stale_session",
    "device.rolled_back",
    "token.double_spend",
    "token.invalid",
    "refused",
    "token.revoked",  # an element refuses a token whose history a revoked element signed
    "crypto.revoked",  # a device that synchronised since refuses a revoked card offline
    "wire.replay.duplicate",  # a terminal holds another payment under the card's counter
    "limit.payment_max",  # one payment above the policy's per-payment maximum
    "limit.card_max_offline_spent",  # the card's offline total since its last sync
    "limit.card_max_daily_payments",  # the card's payments on one UTC day, by its clock
    "limit.card_max_daily_spent",  # the card's total paid on one UTC day, by its clock
    "limit.max_offline_hours",  # the card's clock too far past its last sync's signed time
    "limit.token_max_ancestry",  # a token that would carry too many ancestors offline
    "limit.element_max_holding",  # a token element that would hold too much
)
# A code either executor meets that is not above is a fidelity failure to fix, not to map.
INDEX: dict[str, int] = {code: i for i, code in enumerate(CODES)}
OK = INDEX["ok"]
UNREACHABLE = INDEX["offline.unreachable"]
NEVER = -1  # a time that did not come (settled_at, queued_at)


def code_of(code: str) -> int:
    """The index of a refusal code; KeyError names a code no executor may give yet."""
    return INDEX[code]


@dataclass(eq=False)
class Results:
    """Per event (arrays as long as the stream), per person, per merchant, per intermediary.

    Money is integer minor units throughout. ``settled_at`` is the time (minutes) at which the
    payment was recorded by the central bank's notary, ``queued_at`` when it first had to wait
    in the pending-settlement queue, ``pool_drawn`` what the liquidity pool lent for it, and
    ``moved`` what the event moved: a payment's amount (an attacker's "all" resolved), a
    top-up's amount."""

    outcome: np.ndarray  # int16 index into CODES
    moved: np.ndarray  # int64
    settled_at: np.ndarray  # int32, NEVER if not (yet)
    queued_at: np.ndarray  # int32, NEVER if it never waited
    pool_drawn: np.ndarray  # int64
    refunded: np.ndarray  # bool
    pool_after: np.ndarray  # int64, the pool's outstanding loans after the event
    person_online: np.ndarray  # int64, final online wallet
    person_shadow: np.ndarray  # int64, final shadow wallet
    person_card: np.ndarray  # int64, final card (or token element) balance
    person_blocked: np.ndarray  # bool, the person's device is blocked
    merchant_wallet: np.ndarray  # int64
    bank_holdings: np.ndarray  # int64, each intermediary's holdings at the central bank
    pool_outstanding: int = 0
    losses: int = 0  # value lost to broken devices, as the intermediaries recorded it
    loss_bound: int = 0  # what the policy bounds that loss to
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # series an executor adds

    @classmethod
    def empty(cls, events: int, people: int, merchants: int, banks: int) -> Results:
        return cls(
            outcome=np.zeros(events, np.int16),
            moved=np.zeros(events, np.int64),
            settled_at=np.full(events, NEVER, np.int32),
            queued_at=np.full(events, NEVER, np.int32),
            pool_drawn=np.zeros(events, np.int64),
            refunded=np.zeros(events, bool),
            pool_after=np.zeros(events, np.int64),
            person_online=np.zeros(people, np.int64),
            person_shadow=np.zeros(people, np.int64),
            person_card=np.zeros(people, np.int64),
            person_blocked=np.zeros(people, bool),
            merchant_wallet=np.zeros(merchants, np.int64),
            bank_holdings=np.zeros(banks, np.int64),
        )
