"""What an intermediary's desks (accounts, devices, card and terminal sync, settlement,
notarisation, interbank, batches, refusals, liquidity, containment, tokens) may ask of the
intermediary that holds them.

The desks are handed the intermediary itself; they name it by this protocol so that they
depend on what they use, not on the engine module (which imports them): no import circle,
and no desk reaches into another module's private names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Engine, Row

from offpay.bank.intake_key import IntakeKeys
from offpay.bank.ledger import Ledger
from offpay.bank.records import DeviceRequest, Outcome
from offpay.bank.verifier import Verifier
from offpay.central.bank import Clock
from offpay.crypto.keys import Algorithm
from offpay.crypto.pki import Authority, Credential, Role, TrustStore
from offpay.crypto.pseudonyms import NotaryName
from offpay.money import Money
from offpay.transport.memory import MemoryNetwork
from offpay.wire.codec import M
from offpay.wire.envelope import Signed
from offpay.wire.messages import (
    Direction,
    LimitsPolicy,
    OfflinePayment,
    SettlementResult,
    SettlementStatus,
)


class Bank(Protocol):
    """The intermediary as its desks see it (:class:`offpay.bank.engine.Intermediary`)."""

    name: str
    id: str
    currency: str
    algorithm: Algorithm
    ca: Authority
    root_der: bytes
    network: MemoryNetwork
    clock: Clock
    trust: TrustStore
    credential: Credential
    db: Engine
    ledger: Ledger
    verifier: Verifier
    pseudonym_key: bytes  # offpay.crypto.pseudonyms
    intake: IntakeKeys  # offpay.bank.intake_key: devices seal their requests to it
    random: Callable[[int], bytes]

    def nonce(self) -> bytes: ...

    def policy(self) -> tuple[Signed[LimitsPolicy], LimitsPolicy]: ...

    def require_positive(self, amount: Money) -> None: ...

    def balance(self, account_id: str) -> Money: ...

    def device(self, device_id: str) -> Row[Any]: ...

    def block_device(self, device_id: str, reason: str) -> None: ...

    def from_device(self, data: bytes, cls: type[M], role: Role) -> DeviceRequest[M]: ...
    def card_session(self, data: bytes) -> bytes: ...

    def verified(self, signed: Signed[OfflinePayment]) -> OfflinePayment: ...

    def settle(
        self, signed: Signed[OfflinePayment], verified: OfflinePayment | None = None
    ) -> Outcome: ...

    def settle_entry(
        self, device_id: str, direction: Direction, signed: Signed[OfflinePayment]
    ) -> Outcome: ...

    def outcome(self, p: OfflinePayment, status: SettlementStatus, detail: str = "") -> Outcome: ...

    def debit_and_notarise(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, *, borrowed: bool = False
    ) -> tuple[SettlementStatus, str, bytes]: ...

    def pseudonym(self, tx_id: bytes) -> bytes: ...

    def notary_name(self, tx_id: bytes, evidence: bytes, *, refund: bool = False) -> NotaryName: ...

    def ask_notary(
        self, name: NotaryName, payer: str, payee: str, amount: Money
    ) -> tuple[bytes, SettlementResult]: ...

    def credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> SettlementStatus: ...

    def deliver_credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> None: ...

    def record_awaited(self, payment: OfflinePayment) -> None: ...

    def money_arrived(self, device: Row[Any], minor: int | None = None) -> None: ...

    def retry_shortfalls(self, device_id: str) -> None: ...
