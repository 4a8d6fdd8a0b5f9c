"""Liquidity in settlement (report §3.7): what an intermediary does when a payer's shadow wallet
cannot cover an offline payment yet because money the payer received offline has not settled.

Three remedies, chosen per network in the signed limits policy (:class:`Liquidity`):

- ``restrict`` is enforced by the card (money received offline is not spendable offline), so
  nothing here is needed for it;
- ``pool``: borrow the gap from the central bank's liquidity pool, at most what the payer card
  says it received offline and not yet repaid, and repay it from the next money that reaches
  the payer's shadow wallet;
- ``receipts``: the payment carries the unsettled payments that funded it; settle those first.

Whatever the policy, a payment that still cannot settle waits in the pending-settlement queue
(the ``shortfalls`` table at the payer's intermediary, ``awaited`` at the payee's) and settles
in the payer's own order as soon as money reaches the payer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update

from offpay.bank.evidence import verify_payment
from offpay.central.bank import NOTARY_ID, open_result
from offpay.crypto.pki import Role
from offpay.errors import InsufficientFunds, OffpayError
from offpay.money import Money
from offpay.store import schema
from offpay.store.moves import close_move, open_move
from offpay.wire.envelope import Signed, payload_of, sign
from offpay.wire.messages import OfflinePayment, PoolRequest, SettlementStatus

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


@dataclass(frozen=True)
class Pending:
    """A payment in the pending-settlement queue, as one of its parties sees it."""

    tx_id: bytes
    direction: str  # "out": our device pays; "in": our device is paid
    device: str
    counterparty: str
    amount: Money
    since: dt.datetime


@dataclass(frozen=True)
class Waited:
    """A payment that was queued, and when (if yet) it settled."""

    tx_id: bytes
    amount: Money
    queued_at: dt.datetime
    settled_at: dt.datetime | None


def _aware(t: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back without their zone; every time stored here is UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _nonce(*parts: bytes) -> bytes:
    """A pool request's nonce, derived from the loan's name at the central bank (never from
    the payment id, which the central bank could recompute from device ids and counters)."""
    return hashlib.sha256(b"\x00".join((b"offpay-pool", *parts))).digest()[:16]


def central_loan_id(loan: Any) -> bytes:
    """What the central bank knows a loan (a row of ``pool_loans``) by: the pseudonym of the
    payment it funded, or its id for a loan drawn before pseudonyms."""
    return bytes(loan.pseudonym) if loan.pseudonym is not None else bytes(loan.loan_id)


class LiquidityDesk:
    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    # -- policy receipts --------------------------------------------------------------------

    def settle_funding(self, payment: OfflinePayment) -> None:
        """Settle, in the order the payer's card listed them, the unsettled payments it received
        that fund ``payment``. Each receipt is verified like any payment and settles at most
        once; one that is forged, or that did not pay the payer, is refused and recorded against
        the card that carried it."""
        bank = self.bank
        for receipt in payment.funding:
            try:
                funded = verify_payment(receipt, bank.trust)
            except OffpayError as exc:
                bank.ledger.anomaly("bad_receipt", payment.sender, payment.tx_id, exc.message)
                continue
            if funded.receiver != payment.sender:
                bank.ledger.anomaly(
                    "foreign_receipt",
                    payment.sender,
                    payment.tx_id,
                    f"a funding receipt pays {funded.receiver}, not the payer",
                )
                continue
            if self._settled_here(funded.tx_id):
                continue
            try:
                bank.settle(receipt, funded)
            except OffpayError:
                continue  # its own parties' syncs settle it later; this payment may wait

    def _settled_here(self, tx_id: bytes) -> bool:
        d, c = schema.debits, schema.credits
        with self.bank.db.connect() as conn:
            return (
                conn.execute(select(d.c.tx_id).where(d.c.tx_id == tx_id)).first() is not None
                or conn.execute(select(c.c.tx_id).where(c.c.tx_id == tx_id)).first() is not None
            )

    # -- policy pool ----------------------------------------------------------------------------

    def draw(self, payment: OfflinePayment, account: str, gap: int) -> bool:
        """Borrow ``gap`` into ``account`` for ``payment``; True if the money is there. A draw
        is refused when the payer card did not say it received that much offline beyond the
        loans its device already owes, and queued when the pool cannot cover it."""
        bank, loans = self.bank, schema.pool_loans_held
        with bank.db.begin() as conn:
            row = conn.execute(select(loans).where(loans.c.loan_id == payment.tx_id)).first()
            if row is not None and row.state == "drawn":
                return True
            central_id = bank.pseudonym(payment.tx_id) if row is None else central_loan_id(row)
            if row is None or row.state == "refused":
                owed = conn.execute(
                    select(func.coalesce(func.sum(loans.c.outstanding), 0)).where(
                        loans.c.device_id == payment.sender, loans.c.state != "refused"
                    )
                ).scalar_one()
                if gap > payment.payer_received.minor - int(owed):
                    return False
                attempt = 0 if row is None else row.attempt + 1
                values = dict(amount=gap, outstanding=gap, state="pending", attempt=attempt)
                if row is None:
                    conn.execute(
                        insert(loans).values(
                            loan_id=payment.tx_id,
                            device_id=payment.sender,
                            pseudonym=central_id,
                            **values,
                        )
                    )
                else:
                    conn.execute(
                        update(loans).where(loans.c.loan_id == payment.tx_id).values(**values)
                    )
            else:  # a draw whose answer was lost: ask again with the same nonce
                attempt, gap = row.attempt, row.amount
            nonce = _nonce(b"draw", central_id, str(attempt).encode())
            open_move(conn, nonce, "draw", gap)
        return self._send_draw(payment.tx_id, payment.sender, account, gap, nonce)

    def _central_id(self, loan_id: bytes) -> bytes:
        loans = schema.pool_loans_held
        with self.bank.db.connect() as conn:
            row = conn.execute(select(loans).where(loans.c.loan_id == loan_id)).one()
        return central_loan_id(row)

    def _send_draw(
        self, loan_id: bytes, device_id: str, account: str, gap: int, nonce: bytes
    ) -> bool:
        """Ask the central bank for the loan (again, with the same nonce, after a lost answer)
        and take its answer in: the money into ``account``, or the loan refused."""
        bank, loans = self.bank, schema.pool_loans_held
        request = PoolRequest(
            bank.id, NOTARY_ID, nonce, "draw", self._central_id(loan_id), Money(gap, bank.currency)
        )
        try:
            result = self._ask("pool-draw", request)
        except OffpayError:
            return False  # left pending; retry_pending() or the next attempt resends it
        with bank.db.begin() as conn:
            close_move(conn, nonce)
            if result.status is not SettlementStatus.DONE:
                conn.execute(
                    update(loans)
                    .where(loans.c.loan_id == loan_id, loans.c.state == "pending")
                    .values(state="refused", outstanding=0)
                )
                bank.ledger.anomaly_in(
                    conn,
                    "pool_exhausted",
                    device_id,
                    loan_id,
                    f"the pool cannot lend {Money(gap, bank.currency)}; the payment waits",
                )
                return False
            drawn = conn.execute(
                update(loans)
                .where(loans.c.loan_id == loan_id, loans.c.state == "pending")
                .values(state="drawn")
            )
            if drawn.rowcount == 1:
                bank.ledger.move(conn, None, account, gap, "pool-draw", loan_id)
        return True

    def repay(self, device_id: str, account: str, budget: int) -> None:
        """Money reached ``device_id``'s shadow wallet: up to ``budget`` of it goes back to the
        pool for the device's loans, oldest first. The wallet is debited and the move opened in
        one transaction, so a cut before the central bank answers loses nothing: the move is
        resent by :meth:`retry`."""
        bank, loans = self.bank, schema.pool_loans_held
        with bank.db.connect() as conn:
            owed = conn.execute(
                select(loans)
                .where(
                    loans.c.device_id == device_id,
                    loans.c.state == "drawn",
                    loans.c.outstanding > 0,
                )
                .order_by(loans.c.loan_id)
            ).all()
        for loan in owed:
            amount = min(loan.outstanding, budget)
            if amount <= 0:
                return
            nonce = _nonce(b"repay", central_loan_id(loan), str(loan.outstanding).encode())
            try:
                with bank.db.begin() as conn:
                    bank.ledger.move(conn, account, None, amount, "pool-repay", loan.loan_id)
                    done = conn.execute(
                        update(loans)
                        .where(
                            loans.c.loan_id == loan.loan_id,
                            loans.c.outstanding == loan.outstanding,
                        )
                        .values(outstanding=loans.c.outstanding - amount)
                    )
                    if done.rowcount != 1:
                        raise InsufficientFunds("the loan changed under us")
                    open_move(conn, nonce, "repay", amount)
                    conn.execute(
                        insert(schema.pool_repays).values(
                            nonce=nonce, loan_id=loan.loan_id, amount=amount, done=False
                        )
                    )
            except InsufficientFunds:
                return  # the money was taken by a racing settlement; repay later
            budget -= amount
            self._send_repay(nonce, loan.loan_id, amount)

    def _send_repay(self, nonce: bytes, loan_id: bytes, amount: int) -> None:
        bank = self.bank
        request = PoolRequest(
            bank.id,
            NOTARY_ID,
            nonce,
            "repay",
            self._central_id(loan_id),
            Money(amount, bank.currency),
        )
        try:
            self._ask("pool-repay", request)
        except OffpayError:
            return  # the move stays open; retry() resends the same request
        with bank.db.begin() as conn:
            close_move(conn, nonce)
            conn.execute(
                update(schema.pool_repays)
                .where(schema.pool_repays.c.nonce == nonce)
                .values(done=True)
            )

    def retry(self) -> int:
        """Resend pool requests whose answers were lost; returns how many. A loan whose answer
        was lost is taken in; if its payment settled meanwhile from money that reached the
        payer, the loan is repaid at once, so the pool is never left short."""
        r, loans, s = schema.pool_repays, schema.pool_loans_held, schema.shortfalls
        bank = self.bank
        with bank.db.connect() as conn:
            repays = conn.execute(select(r).where(r.c.done.is_(False))).all()
            drawing = conn.execute(select(loans).where(loans.c.state == "pending")).all()
        for row in repays:
            self._send_repay(bytes(row.nonce), bytes(row.loan_id), row.amount)
        for loan in drawing:
            loan_id, device = bytes(loan.loan_id), bank.device(loan.device_id)
            nonce = _nonce(b"draw", central_loan_id(loan), str(loan.attempt).encode())
            if not self._send_draw(loan_id, device.id, device.account_id, loan.amount, nonce):
                continue
            with bank.db.connect() as conn:
                waiting = conn.execute(
                    select(s.c.tx_id).where(s.c.tx_id == loan_id, s.c.open)
                ).first()
            if waiting is not None:
                bank.retry_shortfalls(device.id)
            else:
                self.repay(device.id, device.account_id, loan.amount)
        return len(repays) + len(drawing)

    def _ask(self, kind: str, request: PoolRequest) -> object:
        bank = self.bank
        data = bank.network.send("central-bank", kind, sign(request, bank.credential).to_bytes())
        result = open_result(data, bank.trust, request, Role.NOTARY)
        if result.amount != request.amount:
            raise OffpayError("the central bank's answer is about another amount")
        if request.kind == "repay" and result.status is not SettlementStatus.DONE:
            raise OffpayError(f"the central bank refused a repayment: {result.code}")
        return result

    # -- the queue as its parties see it ----------------------------------------------------

    def pending(self, device_id: str | None = None) -> list[Pending]:
        """Payments waiting for settlement that one of our devices made or is owed."""
        bank, s, a = self.bank, schema.shortfalls, schema.awaited
        with bank.db.connect() as conn:
            out_q = select(s).where(s.c.open.is_(True))
            in_q = select(a).where(a.c.open.is_(True))
            if device_id is not None:
                out_q = out_q.where(s.c.device_id == device_id)
                in_q = in_q.where(a.c.device_id == device_id)
            outs = conn.execute(out_q).all()
            ins = conn.execute(in_q).all()
        money = lambda minor: Money(minor, bank.currency)  # noqa: E731
        rows = [
            Pending(
                bytes(r.tx_id),
                "out",
                r.device_id,
                payload_of(Signed.from_bytes(bytes(r.payment)), OfflinePayment).receiver,
                money(r.amount),
                _aware(r.queued_at),
            )
            for r in outs
        ]
        rows += [
            Pending(bytes(r.tx_id), "in", r.device_id, r.payer, money(r.amount), _aware(r.since))
            for r in ins
        ]
        return sorted(rows, key=lambda p: p.since)

    def waited(self) -> list[Waited]:
        """Every payment that was ever queued here as the payer's intermediary."""
        s = schema.shortfalls
        with self.bank.db.connect() as conn:
            rows = conn.execute(select(s).order_by(s.c.queued_at)).all()
        return [
            Waited(
                bytes(r.tx_id),
                Money(r.amount, self.bank.currency),
                _aware(r.queued_at),
                None if r.settled_at is None else _aware(r.settled_at),
            )
            for r in rows
        ]
