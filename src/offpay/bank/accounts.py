"""Customers, their wallets, and the reserve moves that bring e-krona into an online wallet
(funding) or take them out (redemption).

A person has an online wallet and a shadow wallet (the money its card holds offline); a
merchant has one wallet. A reserve move is recorded first, then asked of the central bank
with a nonce derived from its reference (so a retry gets the same answer), then finished
locally: money leaves a wallet before it leaves the intermediary, and enters one only after
it arrived.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from offpay.bank.interbank import Interbank
from offpay.central.bank import NOTARY_ID
from offpay.errors import InsufficientFunds, NotFound, Refused
from offpay.money import Money
from offpay.store import schema
from offpay.wire.messages import ReserveTransfer

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


def reserve_move_nonce(reference: str) -> bytes:
    """The nonce of a fund or redeem's request to the central bank, derived from its reference
    so that a retry gets the first answer (and the audit can ask whether it was carried out)."""
    return hashlib.sha256(f"offpay-reserve-move\x00{reference}".encode()).digest()[:16]


class Accounts:
    def __init__(self, bank: Bank, interbank: Interbank) -> None:
        self.bank = bank
        self.interbank = interbank

    def open_customer(self, name: str, *, merchant: bool = False) -> str:
        bank = self.bank
        cid = f"{bank.name}:{name}"
        kinds = ("merchant",) if merchant else ("online", "shadow")
        with bank.db.begin() as conn:
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
                        currency=bank.currency,
                        balance=0,
                    )
                )
        return cid

    def balance(self, account_id: str) -> Money:
        with self.bank.db.connect() as conn:
            row = conn.execute(
                select(schema.accounts.c.balance).where(schema.accounts.c.id == account_id)
            ).first()
        if row is None:
            raise NotFound(f"no account {account_id}")
        return Money(row.balance, self.bank.currency)

    def account(self, customer_id: str, kind: str) -> str:
        """The id of ``customer_id``'s wallet of ``kind``; :class:`NotFound` if it has none."""
        account = f"{customer_id}/{kind}"
        self.balance(account)
        return account

    def require_positive(self, amount: Money) -> None:
        if amount.currency != self.bank.currency or amount.minor <= 0:
            raise Refused(
                f"amount must be a positive {self.bank.currency} amount", code="bank.bad_amount"
            )

    def fund(self, customer_id: str, amount: Money, reference: str | None = None) -> None:
        """A customer buys e-krona: the intermediary's reserve at the central bank moves into
        the customer's online wallet. Retrying with the same ``reference`` after a cut
        connection completes the move once."""
        self.require_positive(amount)
        self.account(customer_id, "online")
        self.reserve_move(customer_id, amount.minor, reference or self.bank.nonce().hex())

    def redeem(self, customer_id: str, amount: Money, reference: str | None = None) -> None:
        """The opposite of :meth:`fund`: e-krona leave the customer's online wallet."""
        self.require_positive(amount)
        self.account(customer_id, "online")
        self.reserve_move(customer_id, -amount.minor, reference or self.bank.nonce().hex())

    def reserve_move(self, customer_id: str, minor: int, reference: str) -> None:
        """Record the move first, then ask the central bank with a nonce derived from the
        reference (so a retry gets the same answer), then finish it locally. Money leaves a
        wallet before it leaves the intermediary, and enters one only after it arrived."""
        bank = self.bank
        r = schema.reserve_moves
        online = f"{customer_id}/online"
        with bank.db.begin() as conn:
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
                    bank.ledger.move(conn, online, None, -minor, "redemption", None)
        nonce = reserve_move_nonce(reference)
        try:
            self.interbank.ask_central(
                "reserve-transfer",
                ReserveTransfer(bank.id, NOTARY_ID, nonce, Money(minor, bank.currency)),
            )
        except InsufficientFunds:
            with bank.db.begin() as conn:
                conn.execute(update(r).where(r.c.reference == reference).values(state="refused"))
                if minor < 0:
                    bank.ledger.move(conn, None, online, -minor, "redemption-refused", None)
            raise
        with bank.db.begin() as conn:
            done = conn.execute(
                update(r)
                .where(r.c.reference == reference, r.c.state == "pending")
                .values(state="done")
            )
            if done.rowcount == 1 and minor > 0:
                bank.ledger.move(conn, None, online, minor, "funding", None)

    def retry_reserve_moves(self) -> int:
        """Finish the reserve moves a crash or a lost answer left pending; returns how many."""
        r = schema.reserve_moves
        with self.bank.db.connect() as conn:
            moves = conn.execute(select(r).where(r.c.state == "pending")).all()
        for move in moves:
            self.reserve_move(move.customer_id, move.amount, move.reference)
        return len(moves)
