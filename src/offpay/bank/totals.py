"""What the audit, the admin pages and the books read of an intermediary's ledger: sums and
open items, computed by the database. Read only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from offpay.bank.records import LedgerTotals
from offpay.money import Money
from offpay.store import schema


def _sum(column: Any, *where: Any) -> Any:
    return select(func.coalesce(func.sum(column), 0)).where(*where).scalar_subquery()


# Built once: the audit runs after every step of every flow test.
LEDGER_TOTALS = select(
    _sum(schema.accounts.c.balance),
    _sum(schema.debits.c.amount),
    _sum(schema.credits.c.amount),
    _sum(schema.debits.c.amount, schema.debits.c.credited.is_(False)),
)


def ledger_totals(db: Engine, currency: str) -> LedgerTotals:
    """Everything the audit needs from this intermediary, in one query."""
    with db.connect() as conn:
        held, debited, credited, transit = conn.execute(LEDGER_TOTALS).one()
    return LedgerTotals(
        Money(int(held), currency),
        Money(int(debited), currency),
        Money(int(credited), currency),
        Money(int(transit), currency),
    )


def wallets(db: Engine, currency: str) -> dict[str, Money]:
    """Every wallet's balance, by account id."""
    with db.connect() as conn:
        rows = conn.execute(select(schema.accounts).order_by(schema.accounts.c.id)).all()
    return {r.id: Money(r.balance, currency) for r in rows}


def total_held(db: Engine, currency: str) -> Money:
    """What all wallets hold together."""
    with db.connect() as conn:
        total = conn.execute(select(func.coalesce(func.sum(schema.accounts.c.balance), 0)))
        return Money(int(total.scalar_one()), currency)


def open_shortfalls(db: Engine, currency: str) -> list[tuple[bytes, str, Money]]:
    """Payments that wait for their payer's shadow wallet: id, paying device, amount."""
    s = schema.shortfalls
    with db.connect() as conn:
        rows = conn.execute(select(s).where(s.c.open.is_(True))).all()
    return [(bytes(r.tx_id), r.device_id, Money(r.amount, currency)) for r in rows]


def settled_totals(db: Engine, currency: str) -> tuple[Money, Money]:
    """Everything ever debited here as payer's bank, and credited here as payee's bank."""
    with db.connect() as conn:
        debited = conn.execute(
            select(func.coalesce(func.sum(schema.debits.c.amount), 0))
        ).scalar_one()
        credited = conn.execute(
            select(func.coalesce(func.sum(schema.credits.c.amount), 0))
        ).scalar_one()
    return Money(int(debited), currency), Money(int(credited), currency)


def in_transit(db: Engine, currency: str) -> Money:
    """Debited here but not yet credited at the payee's intermediary."""
    d = schema.debits
    with db.connect() as conn:
        total = conn.execute(
            select(func.coalesce(func.sum(d.c.amount), 0)).where(d.c.credited.is_(False))
        ).scalar_one()
    return Money(int(total), currency)
