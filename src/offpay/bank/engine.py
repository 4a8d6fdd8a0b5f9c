"""An intermediary (report §3.4 and §3.7, DESIGN §2): a thin façade over its desks.

It keeps each user's online wallet and shadow wallet, each merchant's wallet, the devices it
issued and the instructions it sent them. Each part lives in a module named for what it does
(the path of one payment, file by file: docs/architecture.md and :mod:`offpay.bank`):

* :mod:`~offpay.bank.accounts`: customers, wallets, reserve moves; :mod:`~offpay.bank.policies`
* :mod:`~offpay.bank.devices`: issuance, personalisation, certification, device requests
* :mod:`~offpay.bank.card_sync` and :mod:`~offpay.bank.terminal_sync`: a device's session
* :mod:`~offpay.bank.batch` (a whole upload) and :mod:`~offpay.bank.settlement` (one payment):
  :mod:`~offpay.bank.verification`, :mod:`~offpay.bank.plan`, :mod:`~offpay.bank.ledger`,
  :mod:`~offpay.bank.notarisation`, :mod:`~offpay.bank.interbank`
* :mod:`~offpay.bank.liquidity`, :mod:`~offpay.bank.containment`, :mod:`~offpay.bank.refusal`
* :mod:`~offpay.bank.totals`: what the audit and the admin pages read

This module builds them, wires them together and hands each request to the one that answers
it; the desks name the intermediary by :class:`offpay.bank.desks.Bank`, never this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, Row

import offpay.bank.totals as totals
from offpay.bank.accounts import Accounts, reserve_move_nonce
from offpay.bank.batch import BatchDesk
from offpay.bank.card_sync import CardSync
from offpay.bank.containment import Containment, Loss
from offpay.bank.devices import Devices
from offpay.bank.disclosure import disclose
from offpay.bank.intake_key import IntakeKeys
from offpay.bank.interbank import Interbank
from offpay.bank.ledger import Ledger
from offpay.bank.liquidity import LiquidityDesk, Pending
from offpay.bank.names import engine_id
from offpay.bank.notarisation import Notarisation
from offpay.bank.policies import Policies
from offpay.bank.pseudonym_key import load_pseudonym_key
from offpay.bank.records import DeviceRequest, LedgerTotals, Outcome, SyncReport
from offpay.bank.refusal import Refusals
from offpay.bank.settlement import Settlement
from offpay.bank.terminal_sync import TerminalSync
from offpay.bank.verification import VerifiedPayments
from offpay.bank.verifier import Verifier
from offpay.central.bank import CentralBank, Clock, utc_now
from offpay.crypto.keys import Algorithm, PublicKey, Signer
from offpay.crypto.pki import Authority, Credential, Role, TrustStore
from offpay.crypto.pseudonyms import NotaryName
from offpay.device.reader import Transmit
from offpay.device.terminal import TerminalModule
from offpay.errors import Refused
from offpay.liabilities.publish import liabilities_proof
from offpay.money import Money
from offpay.store import schema
from offpay.store.database import DEFAULT_URL, open_database
from offpay.tokens.desk import TokenDesk
from offpay.transport.memory import MemoryNetwork
from offpay.wire.codec import M
from offpay.wire.envelope import Signed
from offpay.wire.messages import (
    Direction,
    LimitsPolicy,
    Liquidity,
    OfflinePayment,
    SettlementResult,
    SettlementStatus,
)

# Names other packages import from here.
__all__ = [
    "Intermediary",
    "LedgerTotals",
    "SyncReport",
    "engine_id",
    "reserve_move_nonce",
]


class Intermediary:
    def __init__(
        self,
        name: str,
        ca: Authority,
        root_der: bytes,
        network: MemoryNetwork,
        *,
        url: str = DEFAULT_URL,
        currency: str = "SEK",
        algorithm: Algorithm = Algorithm.ED25519,
        clock: Clock = utc_now,
        random: Callable[[int], bytes] = os.urandom,
        mint_chain: tuple[bytes, ...] = (),
        liquidity: Liquidity = Liquidity.QUEUE,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        """``limits``: the first policy's limits where they differ from the defaults."""
        self.name = name
        self.id = engine_id(name)
        self.ca = ca
        self.root_der = root_der
        self.network = network
        self.currency = currency
        self.algorithm = algorithm
        self.clock = clock
        self.random = random
        self.trust = TrustStore(root_der)
        self.credential: Credential = ca.credential_for(self.id, Role.ENGINE, clock(), algorithm)
        self.db: Engine = open_database(url, schema.bank)
        self.pseudonym_key = load_pseudonym_key(self.db, random)
        self.intake = IntakeKeys(self.db, self.id, name, self.credential, random, clock)
        self.ledger = Ledger(self.db, name, currency)
        self.policies = Policies(self)
        self.policies.ensure(liquidity, limits or {})
        self.interbank = Interbank(self)
        self.accounts = Accounts(self, self.interbank)
        self.devices = Devices(self, self.accounts)
        self.liquidity = LiquidityDesk(self)
        self.containment = Containment(self)
        self.refusals = Refusals(self)
        self.batch = BatchDesk(self)
        self.verifier = Verifier(root_der)
        self.verification = VerifiedPayments(self)
        self.notarisation = Notarisation(self, self.batch)
        self.settlement = Settlement(
            self,
            verification=self.verification,
            notarisation=self.notarisation,
            interbank=self.interbank,
            liquidity=self.liquidity,
            containment=self.containment,
            refusals=self.refusals,
        )
        self.card_sync = CardSync(
            self,
            batch=self.batch,
            settlement=self.settlement,
            refusals=self.refusals,
            containment=self.containment,
        )
        self.terminal_sync = TerminalSync(
            self, batch=self.batch, refusals=self.refusals, containment=self.containment
        )
        self.tokens: TokenDesk | None = TokenDesk(self, mint_chain) if mint_chain else None
        network.register(name, self.handle)

    @classmethod
    def join(
        cls,
        name: str,
        central: CentralBank,
        network: MemoryNetwork,
        *,
        url: str = DEFAULT_URL,
        algorithm: Algorithm = Algorithm.ED25519,
        random: Callable[[int], bytes] = os.urandom,
        liquidity: Liquidity = Liquidity.QUEUE,
    ) -> Intermediary:
        """Admit a new intermediary to ``central``'s network and register it on ``network``:
        its CA key is certified by the root; currency, clock and minting key come from there."""
        signer = Signer.generate(algorithm)
        chain = central.admit(name, signer.public_key)
        return cls(
            name,
            Authority(Credential(signer, chain)),
            central.root_der,
            network,
            url=url,
            currency=central.currency,
            algorithm=algorithm,
            clock=central.clock,
            random=random,
            mint_chain=central.mint.chain,
            liquidity=liquidity,
        )

    # -- requests over the network --------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        """Every request kind this intermediary answers (the services route each one)."""
        handlers = {
            "card-session": self.card_session,
            "card-confirmation": self.card_confirmation,
            "terminal-upload": self.terminal_upload,
            "debit-request": self.interbank.debit_request,
            "credit-request": self.interbank.credit_request,
            "refund-request": self.refusals.refund_request,
            "debit-batch": self.batch.debit_request,
            "credit-batch": self.batch.credit_request,
            # issue 18: a card's sync answered with the customer's inclusion proof
            "liabilities-proof": lambda data: liabilities_proof(self, data),
            "disclosure-request": lambda data: disclose(self, data),
        }
        if self.tokens is not None:
            handlers.update(self.tokens.handlers())
        return handlers

    def handle(self, kind: str, data: bytes) -> bytes:
        handler = self.handlers().get(kind)
        if handler is None:
            raise Refused(f"{self.name} does not handle {kind!r}", code="bank.unknown_request")
        return handler(data)

    def card_session(self, data: bytes) -> bytes:
        return self.sync_card(data).instruction

    def sync_card(self, data: bytes) -> SyncReport:
        return self.card_sync.sync(data)

    def card_confirmation(self, data: bytes) -> bytes:
        return self.card_sync.confirmation(data)

    def terminal_upload(self, data: bytes) -> bytes:
        return self.sync_terminal(data).instruction

    def sync_terminal(self, data: bytes) -> SyncReport:
        return self.terminal_sync.sync(data)

    # -- policy, customers and wallets ----------------------------------------------------------

    def publish_policy(self, policy: LimitsPolicy) -> Signed[LimitsPolicy]:
        return self.policies.publish(policy)

    def current_policy(self) -> tuple[Signed[LimitsPolicy], LimitsPolicy] | None:
        return self.policies.current()

    def policy(self) -> tuple[Signed[LimitsPolicy], LimitsPolicy]:
        return self.policies.get()

    def open_customer(self, name: str, *, merchant: bool = False) -> str:
        return self.accounts.open_customer(name, merchant=merchant)

    def balance(self, account_id: str) -> Money:
        return self.accounts.balance(account_id)

    def fund(self, customer_id: str, amount: Money, reference: str | None = None) -> None:
        self.accounts.fund(customer_id, amount, reference)

    def redeem(self, customer_id: str, amount: Money, reference: str | None = None) -> None:
        self.accounts.redeem(customer_id, amount, reference)

    def require_positive(self, amount: Money) -> None:
        self.accounts.require_positive(amount)

    def nonce(self) -> bytes:
        return self.random(16)

    # -- devices --------------------------------------------------------------------------------

    def issue_card(self, customer_id: str, transmit: Transmit, pin: str) -> str:
        return self.devices.issue_card(customer_id, transmit, pin)

    def personalise_card(self, customer_id: str, key: PublicKey, pin: str) -> tuple[str, bytes]:
        return self.devices.personalise_card(customer_id, key, pin)

    def issue_terminal(self, merchant_id: str, module: TerminalModule) -> str:
        return self.devices.issue_terminal(merchant_id, module)

    def certify_terminal(
        self, merchant_id: str, public_key_der: bytes
    ) -> tuple[str, tuple[bytes, ...], Signed[LimitsPolicy]]:
        return self.devices.certify_terminal(merchant_id, public_key_der)

    def device(self, device_id: str) -> Row[Any]:
        return self.ledger.device(device_id)

    def from_device(self, data: bytes, cls: type[M], role: Role) -> DeviceRequest[M]:
        return self.devices.from_device(data, cls, role)

    def block_device(self, device_id: str, reason: str) -> None:
        """Stop serving a device and revoke it network-wide: its sessions and requests are
        refused from now on, and every device that synchronises learns to refuse it."""
        self.containment.block(device_id, reason)

    def report_lost(self, customer_id: str, device_id: str) -> None:
        self.devices.report_lost(customer_id, device_id)

    # -- settlement (offpay.bank.settlement tells the path of one payment) ----------------------

    def verified(self, signed: Signed[OfflinePayment]) -> OfflinePayment:
        return self.verification.verified(signed)

    def settle_entry(
        self, device_id: str, direction: Direction, signed: Signed[OfflinePayment]
    ) -> Outcome:
        return self.settlement.settle_entry(device_id, direction, signed)

    def outcome(self, p: OfflinePayment, status: SettlementStatus, detail: str = "") -> Outcome:
        return self.settlement.outcome(p, status, detail)

    def settle(
        self, signed: Signed[OfflinePayment], verified: OfflinePayment | None = None
    ) -> Outcome:
        return self.settlement.settle(signed, verified)

    def debit_and_notarise(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, *, borrowed: bool = False
    ) -> tuple[SettlementStatus, str, bytes]:
        return self.settlement.debit_and_notarise(signed, payment, borrowed=borrowed)

    def credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> SettlementStatus:
        return self.settlement.credit(signed, payment, receipt)

    def deliver_credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> None:
        self.settlement.deliver_credit(signed, payment, receipt)

    def record_awaited(self, payment: OfflinePayment) -> None:
        self.settlement.record_awaited(payment)

    def money_arrived(self, device: Row[Any], minor: int | None = None) -> None:
        self.settlement.money_arrived(device, minor)

    def retry_shortfalls(self, device_id: str) -> None:
        self.settlement.retry_shortfalls(device_id)

    def pseudonym(self, tx_id: bytes) -> bytes:
        return self.notarisation.pseudonym(tx_id)

    def notary_name(self, tx_id: bytes, evidence: bytes, *, refund: bool = False) -> NotaryName:
        return self.notarisation.notary_name(tx_id, evidence, refund=refund)

    def ask_notary(
        self, name: NotaryName, payer: str, payee: str, amount: Money
    ) -> tuple[bytes, SettlementResult]:
        return self.notarisation.ask_notary(name, payer, payee, amount)

    def retry_pending(self) -> int:
        """Finish settlements and reserve moves a crash or a lost message left half done;
        returns how many."""
        unfinished = self.settlement.unfinished()  # read before the desks retry theirs
        done = self.accounts.retry_reserve_moves()
        done += self.liquidity.retry() + self.containment.resend_revocations()
        done += self.refusals.retry()
        return done + self.settlement.finish(unfinished)

    def pending(self, device_id: str | None = None) -> list[Pending]:
        """The pending-settlement queue as our devices' holders see it."""
        return self.liquidity.pending(device_id)

    # -- what the audit and the admin pages read ------------------------------------------------

    def losses(self) -> list[Loss]:
        return self.containment.losses()

    def anomalies(self) -> list[tuple[str, str | None, str]]:
        return self.ledger.anomalies()

    def wallets(self) -> dict[str, Money]:
        return totals.wallets(self.db, self.currency)

    def total_held(self) -> Money:
        return totals.total_held(self.db, self.currency)

    def open_shortfalls(self) -> list[tuple[bytes, str, Money]]:
        return totals.open_shortfalls(self.db, self.currency)

    def settled_totals(self) -> tuple[Money, Money]:
        return totals.settled_totals(self.db, self.currency)

    def ledger_totals(self) -> LedgerTotals:
        return totals.ledger_totals(self.db, self.currency)

    def in_transit(self) -> Money:
        return totals.in_transit(self.db, self.currency)
