"""An intermediary's engine (report §3.4 and §3.7, DESIGN §2).

It keeps each user's online wallet and shadow wallet, each merchant's wallet, the devices it
issued, and the instructions it sent them. Synchronisation settles every offline payment a
device uploads through one pipeline, whoever uploads it first:

1. the payer's intermediary debits the payer's shadow wallet (primary key: the payment id);
2. it records the payment with the central bank's notary (primary key again), which moves the
   value between intermediaries;
3. the payee's intermediary credits the payee's wallet (primary key once more).

Each step is idempotent, so a retry, a duplicate or a race between payer and payee settles the
payment exactly once. A card's new balance is sent as a signed, numbered, addressed instruction
that answers the card's own session nonce, which closes report §3.8 points 1 and 3.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from offpay.bank.batch import BatchDesk, forget_oldest
from offpay.bank.containment import Containment, Loss
from offpay.bank.disclosure import disclose
from offpay.bank.evidence import verify_payment
from offpay.bank.intake_key import IntakeKeys
from offpay.bank.ledger import Ledger
from offpay.bank.liquidity import LiquidityDesk, Pending
from offpay.bank.names import engine_id
from offpay.bank.plan import Entry
from offpay.bank.pseudonym_key import load_pseudonym_key
from offpay.bank.records import DeviceRequest, LedgerTotals, Outcome, SyncReport
from offpay.bank.refusal import Refusals, request_id_of
from offpay.bank.verifier import Verifier
from offpay.central.bank import NOTARY_ID, CentralBank, Clock, open_result, utc_now
from offpay.crypto.keys import Algorithm, PublicKey, Signer, algorithm_of
from offpay.crypto.pki import Authority, Credential, Role, TrustStore
from offpay.crypto.pseudonyms import NotaryName, pseudonym
from offpay.device.card import key_fingerprint, pin_digest
from offpay.device.reader import CardClient
from offpay.device.terminal import TerminalModule
from offpay.errors import (
    DeviceStateError,
    InsufficientFunds,
    LimitExceeded,
    NotFound,
    OffpayError,
    Refused,
    ReplayError,
    SignatureError,
)
from offpay.liabilities.publish import liabilities_proof
from offpay.money import Money
from offpay.policy import default_policy, revised_policy, sign_policy
from offpay.store import schema
from offpay.store.database import DEFAULT_URL, open_database
from offpay.tokens.desk import TokenDesk
from offpay.transport.memory import MemoryNetwork
from offpay.wire.codec import M
from offpay.wire.envelope import Signed, open_signed, payload_of, sign
from offpay.wire.messages import (
    CardConfirmation,
    CardInstruction,
    CardSession,
    CreditRequest,
    DebitRequest,
    Direction,
    LimitsPolicy,
    Liquidity,
    NotariseRequest,
    OfflinePayment,
    Operation,
    Personalisation,
    ReserveTransfer,
    SettlementResult,
    SettlementStatus,
    TerminalInstruction,
    TerminalUpload,
    payment_tx_id,
)

Transmit = Callable[[bytes], bytes]
VERIFIED_KEPT = 4096  # payments whose verification an intermediary remembers
# A device's counters are kept in INTEGER columns (32 bits on PostgreSQL); a card that sends
# one beyond is refused before the database is asked to hold it.
MAX_COUNTER = 2**31 - 1


def counters_in_range(device_id: str, **counters: int) -> None:
    """Refuse a device's counter that is negative or that no counter column can hold."""
    for name, value in counters.items():
        if not 0 <= value <= MAX_COUNTER:
            raise DeviceStateError(
                f"{device_id} sent {name} {value}, outside 0 to {MAX_COUNTER}",
                code="device.counter_out_of_range",
            )


def reserve_move_nonce(reference: str) -> bytes:
    """The nonce of a fund or redeem's request to the central bank, derived from its reference
    so that a retry gets the first answer (and the audit can ask whether it was carried out)."""
    return hashlib.sha256(f"offpay-reserve-move\x00{reference}".encode()).digest()[:16]


def _sum(column: Any, *where: Any) -> Any:
    return select(func.coalesce(func.sum(column), 0)).where(*where).scalar_subquery()


# Built once: the audit runs after every step of every flow test.
_LEDGER_TOTALS = select(
    _sum(schema.accounts.c.balance),
    _sum(schema.debits.c.amount),
    _sum(schema.credits.c.amount),
    _sum(schema.debits.c.amount, schema.debits.c.credited.is_(False)),
)


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
        self._ensure_policy(liquidity, limits or {})
        self.liquidity = LiquidityDesk(self)
        self.containment = Containment(self)
        self.refusals = Refusals(self)
        self.batch = BatchDesk(self)
        self.verifier = Verifier(root_der)
        self._verified: dict[tuple[bytes, bytes, tuple[bytes, ...]], OfflinePayment] = {}
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

    # -- policy ---------------------------------------------------------------------------------

    def _ensure_policy(self, liquidity: Liquidity, limits: Mapping[str, int]) -> None:
        if self.current_policy() is None:
            first = default_policy(self.name, 1, self.currency, liquidity)
            self.publish_policy(revised_policy(first, dict(limits), version=1))

    def publish_policy(self, policy: LimitsPolicy) -> Signed[LimitsPolicy]:
        """Sign and store a new limits policy; devices take it at their next sync."""
        current = self.current_policy()
        if current is not None and policy.version <= current[1].version:
            raise Refused(
                f"policy version must be above {current[1].version}", code="policy.downgrade"
            )
        signed = sign_policy(policy, self.credential)
        with self.db.begin() as conn:
            conn.execute(
                insert(schema.policies).values(version=policy.version, signed=signed.to_bytes())
            )
        return signed

    def current_policy(self) -> tuple[Signed[LimitsPolicy], LimitsPolicy] | None:
        with self.db.connect() as conn:
            row = conn.execute(
                select(schema.policies).order_by(schema.policies.c.version.desc()).limit(1)
            ).first()
        if row is None:
            return None
        signed = Signed.from_bytes(bytes(row.signed))
        return signed, open_signed(signed, LimitsPolicy, self.trust, Role.ENGINE, receiver=None)[0]  # type: ignore[return-value]

    def policy(self) -> tuple[Signed[LimitsPolicy], LimitsPolicy]:
        current = self.current_policy()
        assert current is not None
        return current

    # -- customers and wallets ------------------------------------------------------------------

    def open_customer(self, name: str, *, merchant: bool = False) -> str:
        cid = f"{self.name}:{name}"
        kinds = ("merchant",) if merchant else ("online", "shadow")
        with self.db.begin() as conn:
            conn.execute(
                insert(schema.customers).values(
                    id=cid, name=name, kind="merchant" if merchant else "person"
                )
            )
            for kind in kinds:
                conn.execute(
                    insert(schema.accounts).values(
                        id=f"{cid}/{kind}",
                        customer_id=cid,
                        kind=kind,
                        currency=self.currency,
                        balance=0,
                    )
                )
        return cid

    def balance(self, account_id: str) -> Money:
        with self.db.connect() as conn:
            row = conn.execute(
                select(schema.accounts.c.balance).where(schema.accounts.c.id == account_id)
            ).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        return Money(row.balance, self.currency)

    def wallets(self) -> dict[str, Money]:
        with self.db.connect() as conn:
            rows = conn.execute(select(schema.accounts).order_by(schema.accounts.c.id)).all()
        return {r.id: Money(r.balance, self.currency) for r in rows}

    def total_held(self) -> Money:
        with self.db.connect() as conn:
            total = conn.execute(select(func.coalesce(func.sum(schema.accounts.c.balance), 0)))
            return Money(int(total.scalar_one()), self.currency)

    def fund(self, customer_id: str, amount: Money, reference: str | None = None) -> None:
        """A customer buys e-krona: the intermediary's reserve at the central bank moves into
        the customer's online wallet. Retrying with the same ``reference`` after a cut
        connection completes the move once."""
        self.require_positive(amount)
        self._account(customer_id, "online")
        self._reserve_move(customer_id, amount.minor, reference or self.nonce().hex())

    def redeem(self, customer_id: str, amount: Money, reference: str | None = None) -> None:
        """The opposite of :meth:`fund`: e-krona leave the customer's online wallet."""
        self.require_positive(amount)
        self._account(customer_id, "online")
        self._reserve_move(customer_id, -amount.minor, reference or self.nonce().hex())

    def _reserve_move(self, customer_id: str, minor: int, reference: str) -> None:
        """Record the move first, then ask the central bank with a nonce derived from the
        reference (so a retry gets the same answer), then finish it locally. Money leaves a
        wallet before it leaves the intermediary, and enters one only after it arrived."""
        r = schema.reserve_moves
        online = f"{customer_id}/online"
        with self.db.begin() as conn:
            row = conn.execute(select(r).where(r.c.reference == reference)).first()
            if row is not None and (row.customer_id, row.amount) != (customer_id, minor):
                raise Refused("reference used for another move", code="bank.reference_reused")
            if row is not None and row.state != "pending":
                return
            if row is None:
                conn.execute(
                    insert(r).values(
                        reference=reference, customer_id=customer_id, amount=minor, state="pending"
                    )
                )
                if minor < 0:
                    self.ledger.move(conn, online, None, -minor, "redemption", None)
        nonce = reserve_move_nonce(reference)
        try:
            self._central(
                "reserve-transfer",
                ReserveTransfer(self.id, NOTARY_ID, nonce, Money(minor, self.currency)),
            )
        except InsufficientFunds:
            with self.db.begin() as conn:
                conn.execute(update(r).where(r.c.reference == reference).values(state="refused"))
                if minor < 0:
                    self.ledger.move(conn, None, online, -minor, "redemption-refused", None)
            raise
        with self.db.begin() as conn:
            done = conn.execute(
                update(r)
                .where(r.c.reference == reference, r.c.state == "pending")
                .values(state="done")
            )
            if done.rowcount == 1 and minor > 0:
                self.ledger.move(conn, None, online, minor, "funding", None)

    def require_positive(self, amount: Money) -> None:
        if amount.currency != self.currency or amount.minor <= 0:
            raise Refused(
                f"amount must be a positive {self.currency} amount", code="bank.bad_amount"
            )

    def _account(self, customer_id: str, kind: str) -> str:
        account = f"{customer_id}/{kind}"
        self.balance(account)
        return account

    def nonce(self) -> bytes:
        return self.random(16)

    # -- issuing devices ------------------------------------------------------------------------

    def issue_card(self, customer_id: str, transmit: Transmit, pin: str) -> str:
        """Personalise a blank card for a customer: certify the key it generated, load the
        root, its chain, its PIN digest and the current policy (report §3.2)."""
        client = CardClient(transmit)
        card_id, personalisation = self.personalise_card(customer_id, client.public_key(), pin)
        client.personalise(personalisation)
        return card_id

    def personalise_card(self, customer_id: str, key: PublicKey, pin: str) -> tuple[str, bytes]:
        """The card id and the signed personalisation for a card's key; apart from
        :meth:`issue_card` so that a card in a branch's reader, across the network, is issued
        by the same code."""
        self._account(customer_id, "shadow")
        if not (4 <= len(pin) <= 12 and pin.isdigit()):
            raise Refused("PIN must be 4 to 12 digits", code="bank.bad_pin")
        card_id = f"card:{self.name}:{key_fingerprint(key)[:12]}"
        chain = self.ca.issue(card_id, Role.CARD, key, self.clock())
        signed_policy, _ = self.policy()
        perso = Personalisation(
            sender=self.id,
            receiver=key_fingerprint(key),
            card=card_id,
            institution=self.name,
            root=self.root_der,
            chain=chain,
            pin_digest=pin_digest(card_id, pin),
            policy=signed_policy,
            intake_key=self.intake.signed(),
        )
        self.ledger.register_device(card_id, "card", customer_id, f"{customer_id}/shadow")
        return card_id, sign(perso, self.credential).to_bytes()

    def issue_terminal(self, merchant_id: str, module: TerminalModule) -> str:
        terminal_id, chain, policy = self.certify_terminal(merchant_id, module.public_key)
        module.personalise(
            terminal_id, self.name, self.root_der, chain, policy, self.intake.signed()
        )
        return terminal_id

    def certify_terminal(
        self, merchant_id: str, public_key_der: bytes
    ) -> tuple[str, tuple[bytes, ...], Signed[LimitsPolicy]]:
        """A terminal module's id, certificate chain and the current policy; apart from
        :meth:`issue_terminal` so that a module reached over the network is issued alike."""
        account = self._account(merchant_id, "merchant")
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        try:
            key = load_der_public_key(public_key_der)
            algorithm_of(key)
        except (ValueError, SignatureError):
            raise Refused("not a supported public key", code="bank.bad_key") from None
        terminal_id = f"terminal:{self.name}:{key_fingerprint(key)[:12]}"
        chain = self.ca.issue(terminal_id, Role.TERMINAL, key, self.clock())  # type: ignore[arg-type]
        self.ledger.register_device(terminal_id, "terminal", merchant_id, account)
        return terminal_id, chain, self.policy()[0]

    def device(self, device_id: str) -> Row[Any]:
        return self.ledger.device(device_id)

    # -- requests over the network --------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        """Every request kind this intermediary answers (the services route each one)."""
        handlers = {
            "card-session": self.card_session,
            "card-confirmation": self.card_confirmation,
            "terminal-upload": self.terminal_upload,
            "debit-request": self._debit_request,
            "credit-request": self._credit_request,
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

    def from_device(self, data: bytes, cls: type[M], role: Role) -> DeviceRequest[M]:
        """A request from one of our devices: signed by it, addressed to us, from a device we
        issued and have not blocked; with the answer already given if it is a retry."""
        data = self.intake.open(data)  # sealed to us by the device (issue 19)
        msg, ident = open_signed(
            data,
            cls,
            self.trust,
            role,
            receiver=self.id,
            institution=self.name,
            now=self.clock(),
        )
        cached = self.ledger.seen(ident.id, msg.nonce)  # type: ignore[attr-defined]
        device = self.device(ident.id)
        if cached is None and device.status != "active":
            raise DeviceStateError(f"{ident.id} is blocked", code="device.blocked")
        return DeviceRequest(msg, ident, device, cached)

    # -- card synchronisation, top-up and defund (report §3.4, §3.7) --------------------------

    def card_session(self, data: bytes) -> bytes:
        return self.sync_card(data).instruction

    def sync_card(self, data: bytes) -> SyncReport:
        self.containment.release_expired()
        request = self.from_device(data, CardSession, Role.CARD)
        session, ident, device = request.message, request.identity, request.device
        if request.answered is not None:  # a relay's retry: the same answer, nothing moves twice
            return SyncReport(ident.id, (), request.answered)
        counters_in_range(
            ident.id,
            seq=session.seq,
            session_no=session.session_no,
            instruction_no=session.instruction_no,
        )
        if session.balance.currency != self.currency or session.amount.currency != self.currency:
            raise Refused("session is in another currency", code="bank.currency")
        if (
            session.seq < device.last_seq
            or session.session_no <= device.last_session_no
            or self._confirmed_beyond(device, session)
        ):
            self._stale_session(device, session)
        issued_no = self._resolve_pending(device, session)
        _, policy = self.policy()
        if session.operation is Operation.TOP_UP:
            self.require_positive(session.amount)
            online = self.balance(f"{device.customer_id}/online")
            if session.amount > online:
                raise InsufficientFunds(f"online wallet holds {online}, not {session.amount}")
            if session.balance + session.amount > policy.card_max_balance:
                raise LimitExceeded(
                    "card_max_balance",
                    f"a top-up of {session.amount} would take the card above "
                    f"{policy.card_max_balance}",
                )
        if session.operation is Operation.DEFUND:
            self.require_positive(session.amount)
            if session.amount > session.balance:
                raise InsufficientFunds(f"the card holds {session.balance}, not {session.amount}")
        self.refusals.declare(ident.id, session.declined)
        outcomes = self.batch.settle_upload(
            ident.id, [(e.direction, e.payment) for e in session.log]
        )
        if session.operation is Operation.TOP_UP:
            self._top_up(device, session)
        # After the top-up, so that money the card's earlier payments still owe is taken first
        # and the card is never handed money that is already spoken for.
        self.retry_shortfalls(ident.id)
        return SyncReport(
            ident.id, outcomes, self._instruct_card(device, session, issued_no, outcomes)
        )

    def _top_up(self, device: Row[Any], session: CardSession) -> None:
        """Online wallet to shadow wallet, once per card session (keyed by its nonce)."""
        j, shadow = schema.journal, f"{device.customer_id}/shadow"
        with self.db.begin() as conn:
            done = conn.execute(
                select(j.c.id).where(
                    j.c.account_id == shadow, j.c.reason == "top-up", j.c.reference == session.nonce
                )
            ).first()
            if done is None:
                self.ledger.move(
                    conn,
                    f"{device.customer_id}/online",
                    shadow,
                    session.amount.minor,
                    "top-up",
                    session.nonce,
                )

    def _confirmed_beyond(self, device: Row[Any], session: CardSession) -> bool:
        """The card confirmed an instruction beyond the state this session shows."""
        i = schema.instructions
        with self.db.connect() as conn:
            return (
                conn.execute(
                    select(i.c.id).where(
                        i.c.device_id == device.id,
                        i.c.instruction_no > session.instruction_no,
                        i.c.state == "applied",
                    )
                ).first()
                is not None
            )

    def _stale_session(self, device: Row[Any], session: CardSession) -> None:
        """A session showing a state older than one the card confirmed since. A relay that held
        a session back and delivers it late looks exactly like this, and must not get an honest
        card blocked: the session is refused. A card that was really rolled back gives itself
        away by its payments: one whose counter the card had already passed when it confirmed,
        and that we never saw in its uploads, is proof, and the card is blocked."""
        d, s = schema.debits, schema.shortfalls
        for entry in session.log:
            if entry.direction is not Direction.OUT or entry.seq > device.last_seq:
                continue
            tx_id = payload_of(entry.payment, OfflinePayment).tx_id
            with self.db.connect() as conn:
                debited = conn.execute(select(d.c.evidence).where(d.c.tx_id == tx_id)).first()
                queued = conn.execute(select(s.c.payment).where(s.c.tx_id == tx_id)).first()
            seen = {bytes(debited.evidence)} if debited is not None else set()
            if queued is not None:
                seen.add(Signed.from_bytes(bytes(queued.payment)).digest)
            if entry.payment.digest not in seen:  # never uploaded, or another payment there
                self._rolled_back(device.id, entry.payment)
                raise DeviceStateError(
                    "the card spent again from a state it had left: it was rolled back and is "
                    "blocked",
                    code="device.rolled_back",
                )
        self.ledger.anomaly(
            "stale_session",
            device.id,
            None,
            f"session at counter {session.seq}, instruction {session.instruction_no}; the card "
            f"confirmed counter {device.last_seq} and a later instruction",
        )
        raise DeviceStateError(
            "this session shows an older state than the card confirmed since: a session held "
            "back and delivered late; start a new one",
            code="device.stale_session",
        )

    def _rolled_back(self, device_id: str, signed: Signed[OfflinePayment]) -> None:
        payment = payload_of(signed, OfflinePayment)
        self.ledger.anomaly(
            "rolled_back",
            device_id,
            payment.tx_id,
            f"payment at counter {payment.payer_seq}, which the card had passed when it "
            "last confirmed a sync",
        )
        self.block_device(device_id, "rolled back: spent from a state it had left")
        self.containment.record_loss(
            device_id,
            payment.tx_id,
            payment.amount.minor,
            f"payment to {payment.receiver} made by a rolled-back card: not settled",
        )

    def _resolve_pending(self, device: Row[Any], session: CardSession) -> int:
        """Reconcile the last instruction we issued with what the card says it applied; returns
        the number the next instruction must carry."""
        issued = device.issued_no
        if session.instruction_no == issued:
            if issued:
                applied = session.last_instruction
                nonce = None if applied is None else payload_of(applied, CardInstruction).nonce
                self._complete_instruction(device.id, issued, nonce)
            return issued + 1
        if session.instruction_no == issued - 1:
            # The card never applied our last instruction (the relay dropped it): supersede it.
            # Nothing moved for it yet except a top-up, which the shadow wallet already holds.
            # If the card confirmed it, though, it did apply it and now says it did not: its
            # state was rolled back to before that session (a defund spent twice, say).
            # A session that failed after an earlier supersede (a refused top-up, a cut) left
            # the instruction superseded and issued none in its place: the same holds then.
            i = schema.instructions
            with self.db.begin() as conn:
                states = set(
                    conn.execute(
                        select(i.c.state).where(
                            i.c.device_id == device.id, i.c.instruction_no == issued
                        )
                    ).scalars()
                )
                if states and "applied" not in states:
                    conn.execute(
                        update(i)
                        .where(
                            i.c.device_id == device.id,
                            i.c.instruction_no == issued,
                            i.c.state == "issued",
                        )
                        .values(state="superseded")
                    )
                    return issued
        return self._counters_disagree(device, session)

    def _counters_disagree(self, device: Row[Any], session: CardSession) -> int:
        """Counter drift (report §3.8 point 7), told apart from tampering by the card's own
        signed history. A card ahead of our records proves it with the last instruction it
        applied, which we signed: our records lost it (a restored database), so we take the
        card's numbers and go on. A card behind them, or ahead without that proof, was rolled
        back or tampered with: it is blocked and revoked."""
        issued = device.issued_no
        if session.instruction_no > issued and session.last_instruction is not None:
            try:
                proof, _ = open_signed(
                    session.last_instruction,
                    CardInstruction,
                    self.trust,
                    Role.ENGINE,
                    receiver=device.id,
                    institution=self.name,
                )
            except OffpayError:
                proof = None
            if proof is not None and proof.instruction_no == session.instruction_no:
                with self.db.begin() as conn:
                    conn.execute(
                        update(schema.devices)
                        .where(schema.devices.c.id == device.id)
                        .values(issued_no=session.instruction_no)
                    )
                    self.ledger.anomaly_in(
                        conn,
                        "counter_recovered",
                        device.id,
                        None,
                        f"card proved instruction {session.instruction_no}; we had {issued}",
                    )
                return session.instruction_no + 1
        detail = f"card says instruction {session.instruction_no}, we issued {issued}"
        self.ledger.anomaly("counter_drift", device.id, None, detail)
        self.block_device(device.id, f"tampered or rolled back: {detail}")
        raise DeviceStateError(
            f"card and intermediary disagree on instructions ({session.instruction_no} vs "
            f"{issued}) and the card cannot prove its history; it is blocked",
            code="device.counter_drift",
        )

    def _complete_instruction(
        self, device_id: str, number: int, nonce: bytes | None = None
    ) -> None:
        """The card applied instruction ``number`` (the one that answered session ``nonce``):
        a defund's money may now go online. Two instructions can carry one number when a relay
        delivered a session late and we superseded the first: the nonce tells which one the card
        applied, and the other is superseded for good."""
        i = schema.instructions
        customer = self.device(device_id).customer_id  # read before the write transaction
        with self.db.begin() as conn:
            rows = conn.execute(
                select(i).where(i.c.device_id == device_id, i.c.instruction_no == number)
            ).all()
            chosen = [
                r
                for r in rows
                if (nonce is None and r.state == "issued")
                or (
                    nonce is not None
                    and payload_of(Signed.from_bytes(bytes(r.payload)), CardInstruction).nonce
                    == nonce
                )
            ]
            if not chosen or chosen[0].state == "applied":
                return
            row = chosen[0]
            conn.execute(update(i).where(i.c.id == row.id).values(state="applied"))
            for other in rows:
                if other.id != row.id and other.state == "issued":
                    conn.execute(update(i).where(i.c.id == other.id).values(state="superseded"))
            if row.operation == Operation.DEFUND.value:  # issued, or superseded yet applied
                self.ledger.move(
                    conn, f"{customer}/shadow", f"{customer}/online", row.amount, "defund", None
                )
            applied = payload_of(Signed.from_bytes(bytes(row.payload)), CardInstruction)
        # Applying the instruction took the card's counter from expected_seq to the next value.
        self._counter_reused(device_id, applied.expected_seq + 1, number)

    def _counter_reused(self, device_id: str, seq: int, number: int) -> None:
        """A payment under the counter value the card used to apply instruction ``number`` was
        not made by this card: its copy (a clone, or the card's own state restored and spent)
        made it. This catches a clone whose payment reached us before the genuine card's sync,
        which showed a log without it."""
        tx_id = payment_tx_id(device_id, seq)
        with self.db.connect() as conn:
            debited = conn.execute(
                select(schema.debits.c.amount).where(schema.debits.c.tx_id == tx_id)
            ).first()
            queued = conn.execute(
                select(schema.shortfalls.c.amount).where(
                    schema.shortfalls.c.tx_id == tx_id, schema.shortfalls.c.open
                )
            ).first()
        if debited is None and queued is None:
            return
        amount = debited.amount if debited is not None else queued.amount
        self.ledger.anomaly(
            "counter_reused",
            device_id,
            tx_id,
            f"a payment under counter {seq}, which the card used to apply instruction {number}",
        )
        self.block_device(device_id, "cloned: a payment under a counter the card used for a sync")
        if queued is not None:
            with self.db.begin() as conn:  # not paid yet, and it never will be
                conn.execute(
                    update(schema.shortfalls)
                    .where(schema.shortfalls.c.tx_id == tx_id)
                    .values(open=False, settled_at=self.clock())
                )
        self.containment.record_loss(
            device_id,
            tx_id,
            amount,
            "payment by a copy of the card under a counter the card used for a sync"
            + (": settled before it was caught" if debited is not None else ": refused"),
        )

    def _instruct_card(
        self,
        device: Row[Any],
        session: CardSession,
        number: int,
        outcomes: tuple[Outcome, ...],
    ) -> bytes:
        signed_policy, policy = self.policy()
        revocations = self.containment.for_device(session.revocation_version)
        intake_key = self.intake.renewal(session.intake_version)  # read before the transaction
        shadow = f"{device.customer_id}/shadow"
        amount = session.amount.minor
        with self.db.begin() as conn:
            held = conn.execute(
                select(schema.accounts.c.balance).where(schema.accounts.c.id == shadow)
            ).scalar_one()
            # Payments of this card that wait in the queue are spoken for: the card is never
            # handed money they will take (it already spent it). What they need beyond the
            # shadow wallet comes from money the card received but that has not settled yet.
            queued = conn.execute(
                select(func.coalesce(func.sum(schema.shortfalls.c.amount), 0)).where(
                    schema.shortfalls.c.device_id == device.id, schema.shortfalls.c.open
                )
            ).scalar_one()
            balance = max(0, held - int(queued))
            if session.operation is Operation.DEFUND:
                if any(
                    o.status is not SettlementStatus.DONE
                    and o.status is not SettlementStatus.ALREADY
                    for o in outcomes
                ):
                    raise Refused(
                        "the card holds payments that did not settle; defund after they do",
                        code="bank.unsynchronised",
                    )
                if amount > balance:
                    raise InsufficientFunds(
                        f"the shadow wallet holds {Money(balance, self.currency)}"
                    )
                balance -= amount  # moves online only when the card confirms
            if balance > policy.card_max_balance.minor:
                # Payments received can take a shadow wallet above the card limit (a lapsed
                # request, a shortfall settled late). The excess goes to the online wallet at
                # once: safe, because the card never holds more than the limit it enforces.
                excess = balance - policy.card_max_balance.minor
                self.ledger.move(
                    conn, shadow, f"{device.customer_id}/online", excess, "sweep", None
                )
                balance -= excess
            instr = CardInstruction(
                sender=self.id,
                receiver=device.id,
                nonce=session.nonce,
                instruction_no=number,
                expected_seq=session.seq,
                operation=session.operation,
                balance=Money(balance, self.currency),
                clear_through_seq=session.seq,
                policy=signed_policy if session.policy_version < policy.version else None,
                revocations=revocations,
                engine_time=int(self.clock().timestamp()),  # the card's clock restarts from it
                intake_key=intake_key,
            )
            payload = sign(instr, self.credential).to_bytes()
            # The auditor rebuilds the shadow wallet the balance was drawn from (issue 18).
            through = conn.execute(select(func.max(schema.journal.c.id))).scalar()
            conn.execute(
                insert(schema.instructions).values(
                    device_id=device.id,
                    instruction_no=number,
                    operation=session.operation.value,
                    amount=amount if session.operation is Operation.DEFUND else 0,
                    state="issued",
                    payload=payload,
                    journal_through=through,
                )
            )
            conn.execute(
                update(schema.devices)
                .where(schema.devices.c.id == device.id)
                .values(
                    issued_no=number,
                    last_seq=session.seq,
                    last_session_no=session.session_no,
                    last_sync_at=self.clock(),  # the books show when a device last synced
                )
            )
            self.ledger.remember(conn, device.id, session.nonce, payload)
        return payload

    def card_confirmation(self, data: bytes) -> bytes:
        """Report §3.4 step 10: the card's signed confirmation releases a defund online."""
        data = self.intake.open(data)  # sealed to us by the card (issue 19)
        conf, ident = open_signed(
            data, CardConfirmation, self.trust, Role.CARD, receiver=self.id, institution=self.name
        )
        counters_in_range(ident.id, seq=conf.seq, instruction_no=conf.instruction_no)
        device = self.device(ident.id)
        if conf.instruction_no > device.issued_no:
            raise Refused(
                "confirmation of an instruction never issued", code="bank.unknown_instruction"
            )
        self._complete_instruction(ident.id, conf.instruction_no, conf.nonce)
        i = schema.instructions
        with self.db.begin() as conn:
            conn.execute(
                update(schema.devices)
                .where(schema.devices.c.id == ident.id, schema.devices.c.last_seq < conf.seq)
                .values(last_seq=conf.seq)
            )
            # Kept as the card's proof of what it applied, for the auditor (issue 18).
            conn.execute(
                update(i)
                .where(
                    i.c.device_id == ident.id,
                    i.c.instruction_no == conf.instruction_no,
                    i.c.state == "applied",
                    i.c.confirmation.is_(None),
                )
                .values(confirmation=data)
            )
        return b""

    # -- terminal synchronisation ---------------------------------------------------------------

    def terminal_upload(self, data: bytes) -> bytes:
        return self.sync_terminal(data).instruction

    def sync_terminal(self, data: bytes) -> SyncReport:
        request = self.from_device(data, TerminalUpload, Role.TERMINAL)
        upload, ident, device = request.message, request.identity, request.device
        if request.answered is not None:
            return SyncReport(ident.id, (), request.answered)
        # A reset that never reached the terminal (issued_no - 1) is fine: its payments are
        # settled already and settle again as no-ops.
        if upload.instruction_no not in (device.issued_no, device.issued_no - 1):
            self.ledger.anomaly(
                "counter_drift", ident.id, None, "terminal instruction numbers differ"
            )
            raise DeviceStateError(
                "terminal and intermediary disagree on instructions",
                code="device.counter_drift",
            )
        self.refusals.declare(ident.id, upload.declined)
        outcomes = self.batch.settle_upload(ident.id, [(Direction.IN, p) for p in upload.payments])
        signed_policy, policy = self.policy()
        number = upload.instruction_no + 1
        instr = TerminalInstruction(
            sender=self.id,
            receiver=ident.id,
            nonce=upload.nonce,
            instruction_no=number,
            clear_through_seq=upload.first_seq + len(upload.payments) - 1,
            policy=signed_policy if upload.policy_version < policy.version else None,
            revocations=self.containment.for_device(upload.revocation_version),
            intake_key=self.intake.renewal(upload.intake_version),
        )
        payload = sign(instr, self.credential).to_bytes()
        with self.db.begin() as conn:
            conn.execute(
                update(schema.devices)
                .where(schema.devices.c.id == ident.id)
                .values(issued_no=number, last_sync_at=self.clock())
            )
            self.ledger.remember(conn, ident.id, upload.nonce, payload)
        return SyncReport(ident.id, outcomes, payload)

    # -- settlement -----------------------------------------------------------------------------

    def verified(self, signed: Signed[OfflinePayment]) -> OfflinePayment:
        """:func:`verify_payment`, once per payment this intermediary sees: the same signed
        payment (payload, signature and chains) reaches it again at later hops of one sync."""
        key = (signed.payload, signed.signature, signed.chain)
        payment = self._verified.get(key)
        if payment is None:
            payment = verify_payment(signed, self.trust)
            self._keep_verified(key, payment)
        return payment

    def verified_all(self, payments: Sequence[Signed[OfflinePayment]]) -> list[OfflinePayment]:
        """:meth:`verified` for each payment, a big batch across processes; raises the error
        :meth:`verified` raises for the first invalid one."""
        todo = [s for s in payments if (s.payload, s.signature, s.chain) not in self._verified]
        results = self.verifier.verify_all(todo)
        if results is not None:
            for signed, payment in zip(todo, results, strict=True):
                if payment is not None:
                    self._keep_verified((signed.payload, signed.signature, signed.chain), payment)
        return [self.verified(s) for s in payments]

    def _keep_verified(
        self, key: tuple[bytes, bytes, tuple[bytes, ...]], payment: OfflinePayment
    ) -> None:
        forget_oldest(self._verified, VERIFIED_KEPT)
        self._verified[key] = payment

    def settle_entry(
        self, device_id: str, direction: Direction, signed: Signed[OfflinePayment]
    ) -> Outcome:
        try:
            payment = self.verified(signed)
        except OffpayError as exc:
            # A tamper-resistant device uploaded something that is not a valid payment: keep
            # the rest of its upload, refuse this entry and record it against the device.
            self.ledger.anomaly("invalid_entry", device_id, None, f"[{exc.code}] {exc.message}")
            # An honest card or terminal module verified every payment it stored and signs its
            # upload: an invalid one in it proves the device was tampered with.
            self.block_device(device_id, f"uploaded an invalid payment: {exc.code}")
            return Outcome(
                b"", Money.zero(self.currency), "", "", SettlementStatus.REFUSED, exc.message
            )
        party = payment.sender if direction is Direction.OUT else payment.receiver
        if party != device_id:
            self.ledger.anomaly(
                "foreign_entry", device_id, payment.tx_id, "log entry of another device"
            )
            return self.outcome(payment, SettlementStatus.REFUSED, "entry names another device")
        return self.settle(signed, payment)

    def outcome(self, p: OfflinePayment, status: SettlementStatus, detail: str = "") -> Outcome:
        return Outcome(p.tx_id, p.amount, p.sender, p.receiver, status, detail)

    def settle(
        self, signed: Signed[OfflinePayment], verified: OfflinePayment | None = None
    ) -> Outcome:
        """Settle one offline payment exactly once, whichever party uploaded it. ``verified``:
        the payment as :func:`verify_payment` already returned it, so it is not checked twice."""
        payment = verified if verified is not None else verify_payment(signed, self.trust)
        if payment.funding:
            self.liquidity.settle_funding(payment)  # policy receipts: causal order first
        if payment.payer_institution == self.name:
            status, detail, receipt = self.debit_and_notarise(signed, payment)
            if receipt:
                self.deliver_credit(signed, payment, receipt)
        else:
            # Report §3.7: a payment request to the payer's intermediary, which debits,
            # notarises and credits us back; its answer carries the notary's receipt so that
            # we can credit ourselves should its credit message have been lost.
            request = DebitRequest(
                self.id, engine_id(payment.payer_institution), self.nonce(), signed
            )
            result = self._ask_bank(payment.payer_institution, "debit-request", request)
            status, detail = result.status, result.detail
            if result.notary_receipt and payment.payee_institution == self.name:
                self.credit(signed, payment, result.notary_receipt)
        if status is SettlementStatus.SHORT and payment.payee_institution == self.name:
            self.record_awaited(payment)
        return self.outcome(payment, status, detail)

    def record_awaited(self, payment: OfflinePayment) -> None:
        """The payee's side of the queue: our device is owed a payment that waits."""
        a = schema.awaited
        with self.db.begin() as conn:
            if conn.execute(select(a.c.tx_id).where(a.c.tx_id == payment.tx_id)).first() is None:
                conn.execute(
                    insert(a).values(
                        tx_id=payment.tx_id,
                        device_id=payment.receiver,
                        payer=payment.sender,
                        amount=payment.amount.minor,
                        open=True,
                        since=self.clock(),
                    )
                )

    def debit_and_notarise(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, *, borrowed: bool = False
    ) -> tuple[SettlementStatus, str, bytes]:
        """Steps 1 and 2 at the payer's intermediary; returns the notary's receipt if the
        payment is (now or already) debited and recorded. Under policy ``pool`` a gap is
        borrowed once before the payment is queued."""
        d = schema.debits
        device = self.device(payment.sender)
        gap = 0
        conflict = False
        if device.kind == "card" and payment.payer_seq <= device.last_seq:
            with self.db.connect() as conn:
                known = conn.execute(select(d.c.tx_id).where(d.c.tx_id == payment.tx_id)).first()
                queued = conn.execute(
                    select(schema.shortfalls.c.tx_id).where(
                        schema.shortfalls.c.tx_id == payment.tx_id
                    )
                ).first()
            if known is None and queued is None:
                # The card had passed this counter when it confirmed a sync, and its uploads
                # never showed this payment: it was made from a state the card had left.
                self._rolled_back(device.id, signed)
                return SettlementStatus.REFUSED, "made by a rolled-back card", b""
        if device.status != "active" and not self.containment.settles_despite_block(device.id):
            with self.db.connect() as conn:
                known = conn.execute(select(d.c.tx_id).where(d.c.tx_id == payment.tx_id)).first()
            if known is None:
                self.ledger.anomaly(
                    "late_payment",
                    payment.sender,
                    payment.tx_id,
                    f"a payment of {payment.amount} from a blocked card arrived after the window",
                )
                return SettlementStatus.REFUSED, "the payer's card is blocked", b""
        try:
            with self.db.begin() as conn:
                existing = conn.execute(select(d).where(d.c.tx_id == payment.tx_id)).first()
                waiting = conn.execute(
                    select(schema.shortfalls.c.payment).where(
                        schema.shortfalls.c.tx_id == payment.tx_id
                    )
                ).first()
                if (
                    existing is None
                    and waiting is not None
                    and Signed.from_bytes(bytes(waiting.payment)).digest != signed.digest
                ):
                    # The first copy to arrive waits in the queue; this one is another payment
                    # under the same counter: a clone's. Neither is paid by this one arriving.
                    self.ledger.anomaly_in(
                        conn,
                        "conflicting_payment",
                        payment.sender,
                        payment.tx_id,
                        "two different payments carry the same card counter (one waits)",
                    )
                    conflict = True
                elif existing is not None:
                    if bytes(existing.evidence) != signed.digest:
                        self.ledger.anomaly_in(
                            conn,
                            "conflicting_payment",
                            payment.sender,
                            payment.tx_id,
                            "two different payments carry the same card counter",
                        )
                        conflict = True
                        status = SettlementStatus.REFUSED
                    status = SettlementStatus.ALREADY
                else:
                    try:
                        self.ledger.move(
                            conn,
                            device.account_id,
                            None,
                            payment.amount.minor,
                            "offline-out",
                            payment.tx_id,
                        )
                    except InsufficientFunds:
                        status = SettlementStatus.SHORT
                        # Goes to the payee's intermediary too: no account id (it names the
                        # customer) and no balance (docs/privacy.md).
                        detail = f"the payer's shadow wallet does not cover {payment.amount} yet"
                        held = conn.execute(
                            select(schema.accounts.c.balance).where(
                                schema.accounts.c.id == device.account_id
                            )
                        ).scalar_one()
                        gap = payment.amount.minor - held
                    else:
                        conn.execute(
                            insert(d).values(
                                tx_id=payment.tx_id,
                                device_id=payment.sender,
                                amount=payment.amount.minor,
                                evidence=signed.digest,
                                payment=signed.to_bytes(),
                                notarised=False,
                                credited=False,
                                pseudonym=self.pseudonym(payment.tx_id),
                            )
                        )
                        status = SettlementStatus.DONE
        except IntegrityError:
            return self.debit_and_notarise(signed, payment)  # a racing sync debited first
        if conflict:
            # A cloned or rolled-back card: the counter was used twice. Block and revoke it;
            # the second payment is not settled (no money is created) and is a reported loss.
            self.block_device(payment.sender, "two payments with the same counter: cloned")
            self.containment.record_loss(
                payment.sender,
                payment.tx_id,
                payment.amount.minor,
                f"payment to {payment.receiver} refused: its counter was used by another payment",
            )
            return SettlementStatus.REFUSED, "conflicting payment with the same id", b""
        if status is SettlementStatus.SHORT:
            if (
                not borrowed
                and self.policy()[1].liquidity is Liquidity.POOL
                and self.liquidity.draw(payment, device.account_id, gap)
            ):
                return self.debit_and_notarise(signed, payment, borrowed=True)
            self._record_shortfall(payment, signed)
            return status, detail, b""
        receipt = self._notarise(payment, signed)
        with self.db.begin() as conn:
            conn.execute(
                update(schema.shortfalls)
                .where(schema.shortfalls.c.tx_id == payment.tx_id, schema.shortfalls.c.open)
                .values(open=False, settled_at=self.clock())
            )
        return status, "", receipt

    def _record_shortfall(self, payment: OfflinePayment, signed: Signed[OfflinePayment]) -> None:
        s = schema.shortfalls
        with self.db.begin() as conn:
            if conn.execute(select(s.c.tx_id).where(s.c.tx_id == payment.tx_id)).first():
                return
            conn.execute(
                insert(s).values(
                    tx_id=payment.tx_id,
                    device_id=payment.sender,
                    amount=payment.amount.minor,
                    payment=signed.to_bytes(),
                    open=True,
                    queued_at=self.clock(),
                )
            )
        self.ledger.anomaly(
            "shortfall",
            payment.sender,
            payment.tx_id,
            f"shadow wallet cannot cover {payment.amount} to {payment.receiver}",
        )

    def retry_shortfalls(self, device_id: str) -> None:
        """Settle, in the payer's own order, the payments a device made that its shadow wallet
        could not cover before; called when the device syncs and when money reaches it. The
        device's log may be cleared by then: the engine kept the signed payments."""
        s = schema.shortfalls
        with self.db.connect() as conn:
            rows = conn.execute(
                select(s.c.payment).where(s.c.device_id == device_id, s.c.open.is_(True))
            ).all()
        if not rows:
            return
        waiting = sorted(
            (Signed.from_bytes(bytes(r.payment)) for r in rows),
            key=lambda signed: payload_of(signed, OfflinePayment).payer_seq,
        )
        for signed in waiting:
            if self.settle(signed).status is SettlementStatus.SHORT:
                return  # later payments of this payer wait behind the earlier one

    def pseudonym(self, tx_id: bytes) -> bytes:
        """What the notary knows our payment, refund or loan ``tx_id`` by."""
        return pseudonym(self.pseudonym_key, tx_id)

    def notary_name(self, tx_id: bytes, evidence: bytes, *, refund: bool = False) -> NotaryName:
        """What the notary records the payment (or refund) we debited as ``tx_id`` under: its
        pseudonym, or its id for a debit made before pseudonyms (the notary knows it so)."""
        d = schema.debits
        with self.db.connect() as conn:
            row = conn.execute(select(d.c.pseudonym).where(d.c.tx_id == tx_id)).first()
        if row is not None and row.pseudonym is None:
            return NotaryName.legacy(tx_id, evidence)
        return NotaryName.of(self.pseudonym_key, tx_id, evidence, refund=refund)

    def ask_notary(
        self, name: NotaryName, payer: str, payee: str, amount: Money
    ) -> tuple[bytes, SettlementResult]:
        """Record a move from institution ``payer`` to ``payee`` with the notary (a payment,
        or a refund going the other way) under ``name``; returns its signed receipt and what
        it says (:func:`open_result` checks that it names ``name``)."""
        request = NotariseRequest(
            sender=self.id,
            receiver=NOTARY_ID,
            nonce=self.nonce(),
            pseudonym=name.pseudonym,
            commitment=name.commitment,
            payer_institution=payer,
            payee_institution=payee,
            amount=amount,
        )
        receipt = self.network.send(
            "central-bank", "notarise", sign(request, self.credential).to_bytes()
        )
        return receipt, open_result(receipt, self.trust, request, Role.NOTARY)

    def _notarise(self, payment: OfflinePayment, signed: Signed[OfflinePayment]) -> bytes:
        receipt, result = self.ask_notary(
            self.notary_name(payment.tx_id, signed.digest),
            payment.payer_institution,
            payment.payee_institution,
            payment.amount,
        )
        if result.amount != payment.amount:
            raise ReplayError("the notary's answer is about another payment")
        if result.status not in (SettlementStatus.DONE, SettlementStatus.ALREADY):
            raise Refused(
                f"the notary refused payment {payment.tx_id.hex()}",
                code=result.code or "central.refused",
            )
        with self.db.begin() as conn:
            conn.execute(
                update(schema.debits)
                .where(schema.debits.c.tx_id == payment.tx_id)
                .values(notarised=True)
            )
        return receipt

    def _check_receipt(
        self, receipt: bytes, signed: Signed[OfflinePayment], payment: OfflinePayment
    ) -> bytes | None:
        """A credit needs the notary's signed word that the payer's intermediary recorded
        this very payment; returns the pseudonym it was recorded under (None: before them)."""
        names = self.batch.recorded_as(receipt, [Entry(0, signed, payment)])
        if names is None:
            raise Refused("the notary receipt does not cover this payment", code="bank.no_receipt")
        return names[0]

    def credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> SettlementStatus:
        """Step 3 at the payee's intermediary, keyed by the payment id."""
        recorded_as = self._check_receipt(receipt, signed, payment)
        c = schema.credits
        device = self.device(payment.receiver)
        try:
            with self.db.begin() as conn:
                if conn.execute(select(c.c.tx_id).where(c.c.tx_id == payment.tx_id)).first():
                    status = SettlementStatus.ALREADY
                else:
                    conn.execute(
                        insert(c).values(
                            tx_id=payment.tx_id,
                            device_id=payment.receiver,
                            amount=payment.amount.minor,
                            evidence=signed.digest,
                            payment=signed.to_bytes(),
                            request_id=request_id_of(payment),
                            pseudonym=recorded_as,
                        )
                    )
                    self.ledger.move(
                        conn,
                        None,
                        device.account_id,
                        payment.amount.minor,
                        "offline-in",
                        payment.tx_id,
                    )
                    status = SettlementStatus.DONE
        except IntegrityError:
            return SettlementStatus.ALREADY  # a racing sync credited first: the key held
        with self.db.begin() as conn:
            conn.execute(
                update(schema.awaited)
                .where(schema.awaited.c.tx_id == payment.tx_id)
                .values(open=False)
            )
        if status is SettlementStatus.DONE:
            if self.refusals.declined(payment):
                self.refusals.refund(signed, payment)  # the payee declined it: it goes back
            else:
                self.money_arrived(device, payment.amount.minor)
        return status

    def money_arrived(self, device: Row[Any], minor: int | None = None) -> None:
        """Money reached a device's wallet: it makes a refund the device owes, repays a pool
        loan, then may fund a waiting payment (in that order: the oldest debt first)."""
        self.refusals.retry_owed_for(device.id)
        if device.kind == "card":
            if minor is not None:
                self.liquidity.repay(device.id, device.account_id, minor)
            self.retry_shortfalls(device.id)

    def deliver_credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> None:
        if payment.payee_institution == self.name:
            self.credit(signed, payment, receipt)
        else:
            request = CreditRequest(
                self.id, engine_id(payment.payee_institution), self.nonce(), signed, receipt
            )
            try:
                result = self._ask_bank(payment.payee_institution, "credit-request", request)
            except OffpayError:
                return  # left for retry_pending(); the debit row says it is not credited
            if result.status not in (SettlementStatus.DONE, SettlementStatus.ALREADY):
                return
        with self.db.begin() as conn:
            conn.execute(
                update(schema.debits)
                .where(schema.debits.c.tx_id == payment.tx_id)
                .values(credited=True)
            )

    def retry_pending(self) -> int:
        """Finish settlements and reserve moves a crash or a lost message left half done;
        returns how many."""
        d, r = schema.debits, schema.reserve_moves
        with self.db.connect() as conn:
            rows = conn.execute(
                select(d).where(
                    d.c.notarised.is_(False) | d.c.credited.is_(False),
                    d.c.tx_id.not_in(select(schema.refunds.c.refund_id)),
                )
            ).all()
            moves = conn.execute(select(r).where(r.c.state == "pending")).all()
        for move in moves:
            self._reserve_move(move.customer_id, move.amount, move.reference)
        repaid = (
            self.liquidity.retry() + self.containment.resend_revocations() + self.refusals.retry()
        )
        for row in rows:
            signed = Signed.from_bytes(bytes(row.payment))
            payment = verify_payment(signed, self.trust)
            self.deliver_credit(signed, payment, self._notarise(payment, signed))
        return len(rows) + len(moves) + repaid

    def pending(self, device_id: str | None = None) -> list[Pending]:
        """The pending-settlement queue as our devices' holders see it."""
        return self.liquidity.pending(device_id)

    # -- requests from other intermediaries (report §3.7: payment requests) --------------------

    def _debit_request(self, data: bytes) -> bytes:
        """Another intermediary asks us to pay out of our customer's shadow wallet. Unlike the
        pilot, which paid "without verification", we verify the payer card's signature."""
        req, ident = open_signed(data, DebitRequest, self.trust, Role.ENGINE, receiver=self.id)
        cached = self.ledger.seen(ident.id, req.nonce)
        if cached is not None:
            return cached
        payment = verify_payment(req.payment, self.trust)
        receipt = b""
        # Any intermediary may present a payment our customer made: whoever holds the signed
        # payment (its payee's bank, or one holding it as a funding receipt) may settle it.
        if payment.payer_institution != self.name:
            status, detail = SettlementStatus.REFUSED, "the payer is not our customer"
        else:
            status, detail, receipt = self.debit_and_notarise(req.payment, payment)
            if receipt:
                self.deliver_credit(req.payment, payment, receipt)
        return self._answer_bank(ident.id, req, payment, status, detail, receipt)

    def _credit_request(self, data: bytes) -> bytes:
        req, ident = open_signed(data, CreditRequest, self.trust, Role.ENGINE, receiver=self.id)
        cached = self.ledger.seen(ident.id, req.nonce)
        if cached is not None:
            return cached
        payment = verify_payment(req.payment, self.trust)
        if payment.payee_institution != self.name or payment.payer_institution != ident.institution:
            raise Refused("payment does not concern these two banks", code="bank.wrong_parties")
        status = self.credit(req.payment, payment, req.notary_receipt)
        return self._answer_bank(ident.id, req, payment, status, "", b"")

    def _answer_bank(
        self,
        to: str,
        req: DebitRequest | CreditRequest,
        payment: OfflinePayment,
        status: SettlementStatus,
        detail: str,
        receipt: bytes,
    ) -> bytes:
        """Signed, addressed, naming the payment exactly, and remembered for a retry."""
        result = SettlementResult(
            self.id,
            to,
            req.nonce,
            payment.tx_id,
            req.payment.digest,
            payment.amount,
            status,
            "",
            detail,
            receipt,
        )
        response = sign(result, self.credential).to_bytes()
        with self.db.begin() as conn:
            self.ledger.remember(conn, to, req.nonce, response)
        return response

    # -- talking to others ----------------------------------------------------------------------

    def _ask_bank(
        self, institution: str, kind: str, request: DebitRequest | CreditRequest
    ) -> SettlementResult:
        data = self.network.send(institution, kind, sign(request, self.credential).to_bytes())
        result = open_result(data, self.trust, request, Role.ENGINE, institution)
        payment = payload_of(request.payment, OfflinePayment)
        if result.tx_id != payment.tx_id:
            raise ReplayError("the answer is about another payment")
        return result

    def _central(self, kind: str, request: ReserveTransfer) -> SettlementResult:
        data = self.network.send("central-bank", kind, sign(request, self.credential).to_bytes())
        result = open_result(data, self.trust, request, Role.NOTARY)
        if result.status is not SettlementStatus.DONE or result.amount != request.amount:
            raise Refused("the central bank did not make the move", code="bank.reserve_refused")
        return result

    def block_device(self, device_id: str, reason: str) -> None:
        """Stop serving a device and revoke it network-wide: its sessions and requests are
        refused from now on, and every device that synchronises learns to refuse it."""
        self.containment.block(device_id, reason)

    def report_lost(self, customer_id: str, device_id: str) -> None:
        """The holder reports a card lost or stolen (issue: lost or stolen card)."""
        device = self.device(device_id)
        if device.customer_id != customer_id:
            raise Refused("that card is not this customer's", code="bank.not_holder")
        self.block_device(device_id, "reported lost or stolen by its holder")

    def losses(self) -> list[Loss]:
        return self.containment.losses()

    # -- anomalies ------------------------------------------------------------------------------

    def anomalies(self) -> list[tuple[str, str | None, str]]:
        return self.ledger.anomalies()

    def open_shortfalls(self) -> list[tuple[bytes, str, Money]]:
        s = schema.shortfalls
        with self.db.connect() as conn:
            rows = conn.execute(select(s).where(s.c.open.is_(True))).all()
        return [(bytes(r.tx_id), r.device_id, Money(r.amount, self.currency)) for r in rows]

    def settled_totals(self) -> tuple[Money, Money]:
        """Everything ever debited here as payer's bank, and credited here as payee's bank."""
        with self.db.connect() as conn:
            debited = conn.execute(
                select(func.coalesce(func.sum(schema.debits.c.amount), 0))
            ).scalar_one()
            credited = conn.execute(
                select(func.coalesce(func.sum(schema.credits.c.amount), 0))
            ).scalar_one()
        return Money(int(debited), self.currency), Money(int(credited), self.currency)

    def ledger_totals(self) -> LedgerTotals:
        """Everything the audit needs from this intermediary, in one query."""
        with self.db.connect() as conn:
            held, debited, credited, transit = conn.execute(_LEDGER_TOTALS).one()
        m = self.currency
        return LedgerTotals(
            Money(int(held), m),
            Money(int(debited), m),
            Money(int(credited), m),
            Money(int(transit), m),
        )

    def in_transit(self) -> Money:
        """Debited here but not yet credited at the payee's intermediary."""
        d = schema.debits
        with self.db.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(d.c.amount), 0)).where(d.c.credited.is_(False))
            ).scalar_one()
        return Money(int(total), self.currency)
