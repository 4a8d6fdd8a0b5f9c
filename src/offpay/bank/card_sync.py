"""A card's session with its intermediary (report §3.4 and §3.7): top-up and defund, the
payments in its log, its counters, the instruction that answers it, and its confirmation.

A session is checked against what the card confirmed before (a stale session is refused; a
card that spent from a state it had left is blocked), the instruction we issued last is
reconciled with what the card applied, the uploaded payments are settled (the batch path,
:mod:`offpay.bank.batch`), and a signed, numbered instruction addressed to the card answers
the session's own nonce (report §3.8 points 1 and 3). A defund's money goes online only when
the card confirms it applied the instruction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, func, insert, select, update

from offpay.bank.batch import BatchDesk
from offpay.bank.containment import Containment
from offpay.bank.records import Outcome, SyncReport
from offpay.bank.refusal import Refusals
from offpay.bank.settlement import Settlement
from offpay.crypto.pki import Role
from offpay.errors import (
    DeviceStateError,
    InsufficientFunds,
    LimitExceeded,
    OffpayError,
    Refused,
)
from offpay.money import Money
from offpay.store import schema
from offpay.wire.envelope import Signed, open_signed, payload_of, sign
from offpay.wire.messages import (
    CardConfirmation,
    CardInstruction,
    CardSession,
    Direction,
    OfflinePayment,
    Operation,
    SettlementStatus,
    payment_tx_id,
)

if TYPE_CHECKING:
    from offpay.bank.desks import Bank

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


class CardSync:
    def __init__(
        self,
        bank: Bank,
        *,
        batch: BatchDesk,
        settlement: Settlement,
        refusals: Refusals,
        containment: Containment,
    ) -> None:
        self.bank = bank
        self.batch = batch
        self.settlement = settlement
        self.refusals = refusals
        self.containment = containment

    def sync(self, data: bytes) -> SyncReport:
        """A card's signed session: checked, its payments settled, its top-up made; the
        report carries the signed instruction that answers it."""
        bank = self.bank
        self.containment.release_expired()
        request = bank.from_device(data, CardSession, Role.CARD)
        session, ident, device = request.message, request.identity, request.device
        if request.answered is not None:  # a relay's retry: the same answer, nothing moves twice
            return SyncReport(ident.id, (), request.answered)
        counters_in_range(
            ident.id,
            seq=session.seq,
            session_no=session.session_no,
            instruction_no=session.instruction_no,
        )
        if session.balance.currency != bank.currency or session.amount.currency != bank.currency:
            raise Refused("session is in another currency", code="bank.currency")
        if (
            session.seq < device.last_seq
            or session.session_no <= device.last_session_no
            or self.confirmed_beyond(device, session)
        ):
            self.stale_session(device, session)
        issued_no = self.resolve_pending(device, session)
        _, policy = bank.policy()
        if session.operation is Operation.TOP_UP:
            bank.require_positive(session.amount)
            online = bank.balance(f"{device.customer_id}/online")
            if session.amount > online:
                raise InsufficientFunds(f"online wallet holds {online}, not {session.amount}")
            if session.balance + session.amount > policy.card_max_balance:
                raise LimitExceeded(
                    "card_max_balance",
                    f"a top-up of {session.amount} would take the card above "
                    f"{policy.card_max_balance}",
                )
        if session.operation is Operation.DEFUND:
            bank.require_positive(session.amount)
            if session.amount > session.balance:
                raise InsufficientFunds(f"the card holds {session.balance}, not {session.amount}")
        self.refusals.declare(ident.id, session.declined)
        outcomes = self.batch.settle_upload(
            ident.id, [(e.direction, e.payment) for e in session.log]
        )
        if session.operation is Operation.TOP_UP:
            self.top_up(device, session)
        # After the top-up, so that money the card's earlier payments still owe is taken first
        # and the card is never handed money that is already spoken for.
        self.settlement.retry_shortfalls(ident.id)
        return SyncReport(ident.id, outcomes, self.instruct(device, session, issued_no, outcomes))

    def top_up(self, device: Row[Any], session: CardSession) -> None:
        """Online wallet to shadow wallet, once per card session (keyed by its nonce)."""
        bank = self.bank
        j, shadow = schema.journal, f"{device.customer_id}/shadow"
        with bank.db.begin() as conn:
            done = conn.execute(
                select(j.c.id).where(
                    j.c.account_id == shadow, j.c.reason == "top-up", j.c.reference == session.nonce
                )
            ).first()
            if done is None:
                bank.ledger.move(
                    conn,
                    f"{device.customer_id}/online",
                    shadow,
                    session.amount.minor,
                    "top-up",
                    session.nonce,
                )

    # -- is this session the card's current state? ---------------------------------------------

    def confirmed_beyond(self, device: Row[Any], session: CardSession) -> bool:
        """The card confirmed an instruction beyond the state this session shows."""
        i = schema.instructions
        with self.bank.db.connect() as conn:
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

    def stale_session(self, device: Row[Any], session: CardSession) -> None:
        """A session showing a state older than one the card confirmed since. A relay that held
        a session back and delivers it late looks exactly like this, and must not get an honest
        card blocked: the session is refused. A card that was really rolled back gives itself
        away by its payments: one whose counter the card had already passed when it confirmed,
        and that we never saw in its uploads, is proof, and the card is blocked."""
        bank = self.bank
        d, s = schema.debits, schema.shortfalls
        for entry in session.log:
            if entry.direction is not Direction.OUT or entry.seq > device.last_seq:
                continue
            tx_id = payload_of(entry.payment, OfflinePayment).tx_id
            with bank.db.connect() as conn:
                debited = conn.execute(select(d.c.evidence).where(d.c.tx_id == tx_id)).first()
                queued = conn.execute(select(s.c.payment).where(s.c.tx_id == tx_id)).first()
            seen = {bytes(debited.evidence)} if debited is not None else set()
            if queued is not None:
                seen.add(Signed.from_bytes(bytes(queued.payment)).digest)
            if entry.payment.digest not in seen:  # never uploaded, or another payment there
                self.containment.rolled_back(device.id, payload_of(entry.payment, OfflinePayment))
                raise DeviceStateError(
                    "the card spent again from a state it had left: it was rolled back and is "
                    "blocked",
                    code="device.rolled_back",
                )
        bank.ledger.anomaly(
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

    # -- instructions: what we issued, what the card applied -------------------------------------

    def resolve_pending(self, device: Row[Any], session: CardSession) -> int:
        """Reconcile the last instruction we issued with what the card says it applied; returns
        the number the next instruction must carry."""
        issued = device.issued_no
        if session.instruction_no == issued:
            if issued:
                applied = session.last_instruction
                nonce = None if applied is None else payload_of(applied, CardInstruction).nonce
                self.complete_instruction(device.id, issued, nonce)
            return issued + 1
        if session.instruction_no == issued - 1:
            # The card never applied our last instruction (the relay dropped it): supersede it.
            # Nothing moved for it yet except a top-up, which the shadow wallet already holds.
            # If the card confirmed it, though, it did apply it and now says it did not: its
            # state was rolled back to before that session (a defund spent twice, say).
            # A session that failed after an earlier supersede (a refused top-up, a cut) left
            # the instruction superseded and issued none in its place: the same holds then.
            i = schema.instructions
            with self.bank.db.begin() as conn:
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
        return self.counters_disagree(device, session)

    def counters_disagree(self, device: Row[Any], session: CardSession) -> int:
        """Counter drift (report §3.8 point 7), told apart from tampering by the card's own
        signed history. A card ahead of our records proves it with the last instruction it
        applied, which we signed: our records lost it (a restored database), so we take the
        card's numbers and go on. A card behind them, or ahead without that proof, was rolled
        back or tampered with: it is blocked and revoked."""
        bank = self.bank
        issued = device.issued_no
        if session.instruction_no > issued and session.last_instruction is not None:
            try:
                proof, _ = open_signed(
                    session.last_instruction,
                    CardInstruction,
                    bank.trust,
                    Role.ENGINE,
                    receiver=device.id,
                    institution=bank.name,
                )
            except OffpayError:
                proof = None
            if proof is not None and proof.instruction_no == session.instruction_no:
                with bank.db.begin() as conn:
                    conn.execute(
                        update(schema.devices)
                        .where(schema.devices.c.id == device.id)
                        .values(issued_no=session.instruction_no)
                    )
                    bank.ledger.anomaly_in(
                        conn,
                        "counter_recovered",
                        device.id,
                        None,
                        f"card proved instruction {session.instruction_no}; we had {issued}",
                    )
                return session.instruction_no + 1
        detail = f"card says instruction {session.instruction_no}, we issued {issued}"
        bank.ledger.anomaly("counter_drift", device.id, None, detail)
        bank.block_device(device.id, f"tampered or rolled back: {detail}")
        raise DeviceStateError(
            f"card and intermediary disagree on instructions ({session.instruction_no} vs "
            f"{issued}) and the card cannot prove its history; it is blocked",
            code="device.counter_drift",
        )

    def complete_instruction(self, device_id: str, number: int, nonce: bytes | None = None) -> None:
        """The card applied instruction ``number`` (the one that answered session ``nonce``):
        a defund's money may now go online. Two instructions can carry one number when a relay
        delivered a session late and we superseded the first: the nonce tells which one the card
        applied, and the other is superseded for good."""
        bank = self.bank
        i = schema.instructions
        customer = bank.device(device_id).customer_id  # read before the write transaction
        with bank.db.begin() as conn:
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
                bank.ledger.move(
                    conn, f"{customer}/shadow", f"{customer}/online", row.amount, "defund", None
                )
            applied = payload_of(Signed.from_bytes(bytes(row.payload)), CardInstruction)
        # Applying the instruction took the card's counter from expected_seq to the next value.
        self.counter_reused(device_id, applied.expected_seq + 1, number)

    def counter_reused(self, device_id: str, seq: int, number: int) -> None:
        """A payment under the counter value the card used to apply instruction ``number`` was
        not made by this card: its copy (a clone, or the card's own state restored and spent)
        made it. This catches a clone whose payment reached us before the genuine card's sync,
        which showed a log without it."""
        bank = self.bank
        tx_id = payment_tx_id(device_id, seq)
        with bank.db.connect() as conn:
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
        bank.ledger.anomaly(
            "counter_reused",
            device_id,
            tx_id,
            f"a payment under counter {seq}, which the card used to apply instruction {number}",
        )
        bank.block_device(device_id, "cloned: a payment under a counter the card used for a sync")
        if queued is not None:
            with bank.db.begin() as conn:  # not paid yet, and it never will be
                conn.execute(
                    update(schema.shortfalls)
                    .where(schema.shortfalls.c.tx_id == tx_id)
                    .values(open=False, settled_at=bank.clock())
                )
        self.containment.record_loss(
            device_id,
            tx_id,
            amount,
            "payment by a copy of the card under a counter the card used for a sync"
            + (": settled before it was caught" if debited is not None else ": refused"),
        )

    def instruct(
        self,
        device: Row[Any],
        session: CardSession,
        number: int,
        outcomes: tuple[Outcome, ...],
    ) -> bytes:
        """The signed instruction that answers ``session``: the card's new balance (its shadow
        wallet less what its queued payments will take), the policy and revocations it lacks."""
        bank = self.bank
        signed_policy, policy = bank.policy()
        revocations = self.containment.for_device(session.revocation_version)
        intake_key = bank.intake.renewal(session.intake_version)  # read before the transaction
        shadow = f"{device.customer_id}/shadow"
        amount = session.amount.minor
        with bank.db.begin() as conn:
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
                        f"the shadow wallet holds {Money(balance, bank.currency)}"
                    )
                balance -= amount  # moves online only when the card confirms
            if balance > policy.card_max_balance.minor:
                # Payments received can take a shadow wallet above the card limit (a lapsed
                # request, a shortfall settled late). The excess goes to the online wallet at
                # once: safe, because the card never holds more than the limit it enforces.
                excess = balance - policy.card_max_balance.minor
                bank.ledger.move(
                    conn, shadow, f"{device.customer_id}/online", excess, "sweep", None
                )
                balance -= excess
            instr = CardInstruction(
                sender=bank.id,
                receiver=device.id,
                nonce=session.nonce,
                instruction_no=number,
                expected_seq=session.seq,
                operation=session.operation,
                balance=Money(balance, bank.currency),
                clear_through_seq=session.seq,
                policy=signed_policy if session.policy_version < policy.version else None,
                revocations=revocations,
                engine_time=int(bank.clock().timestamp()),  # the card's clock restarts from it
                intake_key=intake_key,
            )
            payload = sign(instr, bank.credential).to_bytes()
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
                    last_sync_at=bank.clock(),  # the books show when a device last synced
                )
            )
            bank.ledger.remember(conn, device.id, session.nonce, payload)
        return payload

    def confirmation(self, data: bytes) -> bytes:
        """Report §3.4 step 10: the card's signed confirmation releases a defund online."""
        bank = self.bank
        data = bank.intake.open(data)  # sealed to us by the card (issue 19)
        conf, ident = open_signed(
            data, CardConfirmation, bank.trust, Role.CARD, receiver=bank.id, institution=bank.name
        )
        counters_in_range(ident.id, seq=conf.seq, instruction_no=conf.instruction_no)
        device = bank.device(ident.id)
        if conf.instruction_no > device.issued_no:
            raise Refused(
                "confirmation of an instruction never issued", code="bank.unknown_instruction"
            )
        self.complete_instruction(ident.id, conf.instruction_no, conf.nonce)
        i = schema.instructions
        with bank.db.begin() as conn:
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
