"""The plain records an intermediary hands between its steps and back to its callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from sqlalchemy import Row

from offpay.crypto.pki import Identity
from offpay.money import Money
from offpay.wire.codec import M
from offpay.wire.messages import SettlementStatus


@dataclass(frozen=True)
class Outcome:
    """What happened to one uploaded payment during a sync."""

    tx_id: bytes
    amount: Money
    payer: str
    payee: str
    status: SettlementStatus
    detail: str = ""


@dataclass(frozen=True)
class DeviceRequest(Generic[M]):
    message: M
    identity: Identity
    device: Row[Any]
    answered: bytes | None  # the answer given before, if this is a retry


@dataclass(frozen=True)
class SyncReport:
    device: str
    outcomes: tuple[Outcome, ...]
    instruction: bytes

    @property
    def shortfall(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.status is SettlementStatus.SHORT)


@dataclass(frozen=True)
class LedgerTotals:
    held: Money  # in all wallets
    debited: Money  # ever, as the payer's intermediary
    credited: Money  # ever, as the payee's intermediary
    in_transit: Money  # debited here and not yet credited at the payee's intermediary


@dataclass(frozen=True, slots=True)
class VerifiedPayment:
    """What settlement needs of an uploaded payment whose two signatures verified: plain
    values read once, where the payment entered, instead of the decoded message graph. The
    signed bytes themselves travel beside it (:class:`offpay.bank.plan.Entry`)."""

    tx_id: bytes
    sender: str
    receiver: str
    payer_institution: str
    payee_institution: str
    payer_seq: int
    amount: Money
    request_id: bytes  # the payee's request the payment answers
    digest: bytes  # the evidence: SHA-256 over the payer's signed payload and signature
    funding: bool  # it carries funding receipts (policy ``receipts``)
