"""Checks over the whole network's books: the central bank's record of each intermediary's
holdings against its wallets (the conservation audit's own rule,
:func:`offpay.sim.network.audit_books`), the liquidity pool against its loans at both ends,
and tokens minted, consumed and redeemed. Sums are computed by the databases; only
discrepancies come back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from offpay.audit import findings as codes
from offpay.audit.findings import Finding
from offpay.audit.sources import snapshot
from offpay.bank.names import engine_id
from offpay.bank.records import LedgerTotals
from offpay.central.bank import Position
from offpay.money import Money
from offpay.sim.network import Books, audit_books, open_central_moves
from offpay.store import schema
from offpay.store.moves import in_transit
from offpay.tokens.mint import REDEEMED

CENTRAL = "central-bank"
NETWORK = "network"  # the party named by a finding over every party's books


def _total(column: Any, *where: Any) -> Any:
    return select(func.coalesce(func.sum(column), 0)).where(*where).scalar_subquery()


def _ledger_totals(conn: Connection, currency: str) -> LedgerTotals:
    d = schema.debits
    held, debited, credited, transit = conn.execute(
        select(
            _total(schema.accounts.c.balance),
            _total(d.c.amount),
            _total(schema.credits.c.amount),
            _total(d.c.amount, d.c.credited.is_(False)),
        )
    ).one()
    return LedgerTotals(*(Money(int(v), currency) for v in (held, debited, credited, transit)))


def holdings(central: Engine, banks: Mapping[str, Engine], currency: str) -> list[Finding]:
    """Issued against held, and per intermediary the central bank's holdings against its
    wallets up to payments and central-bank moves in flight."""
    m = lambda minor: Money(int(minor), currency)  # noqa: E731
    totals: dict[str, LedgerTotals] = {}
    moves: dict[str, Money] = {}
    pending: dict[bytes, int] = {}
    with snapshot(central, CENTRAL) as cb:
        issued, minted, redeemed, pool = cb.execute(
            select(
                _total(schema.issuance.c.amount),
                _total(schema.minted.c.value),
                _total(schema.redeemed.c.value),
                _total(schema.pool.c.available),
            )
        ).one()
        t, n = schema.institutions, schema.notary
        positions = [
            Position(r.name, m(r.reserve), m(r.holdings))
            for r in cb.execute(select(t).order_by(t.c.name))
        ]
        flows = {p.institution: [0, 0] for p in positions}
        for payer, payee, total in cb.execute(
            select(n.c.payer_institution, n.c.payee_institution, func.sum(n.c.amount))
            .where(n.c.payer_institution != n.c.payee_institution)
            .group_by(n.c.payer_institution, n.c.payee_institution)
        ):
            flows.setdefault(payee, [0, 0])[0] += int(total)
            flows.setdefault(payer, [0, 0])[1] += int(total)
        seen = schema.central_seen
        for name, engine in banks.items():
            with snapshot(engine, name) as conn:
                totals[name] = _ledger_totals(conn, currency)
                carried = [
                    (
                        kind,
                        amount,
                        cb.execute(
                            select(seen.c.nonce).where(
                                seen.c.sender == engine_id(name), seen.c.nonce == nonce
                            )
                        ).first()
                        is not None,
                    )
                    for kind, amount, nonce in open_central_moves(conn)
                ]
                moves[name] = m(in_transit(carried))
                d = schema.debits
                for tx_id, amount in conn.execute(
                    select(d.c.tx_id, d.c.amount).where(d.c.credited.is_(False))
                ):
                    pending[bytes(tx_id)] = int(amount)

    def payments_in_transit() -> Money:
        # Debited and not credited anywhere yet (a payee may credit before the payer's
        # intermediary learns it did); asked only when some debit is not credited.
        left = dict(pending)
        for name, engine in banks.items():
            ids = list(left)
            for start in range(0, len(ids), 500):
                with snapshot(engine, name) as conn:
                    c = schema.credits
                    for tx in conn.execute(
                        select(c.c.tx_id).where(c.c.tx_id.in_(ids[start : start + 500]))
                    ).scalars():
                        left.pop(bytes(tx), None)
        return m(sum(left.values()))

    books = Books(
        issued=m(issued),
        tokens=m(int(minted) - int(redeemed)),
        pool=m(pool),
        positions=positions,
        flows={k: (m(i), m(o)) for k, (i, o) in flows.items()},
        totals=totals,
        moves=moves,
        payments_in_transit=payments_in_transit,
    )
    audit, problems = audit_books(books, Money.zero(currency))
    found = [
        Finding(p.split(":", 1)[0], codes.HOLDINGS_MISMATCH, (f"holdings:{p.split(':', 1)[0]}",), p)
        for p in problems
    ]
    if not audit.balanced:
        found.append(  # no single party's books show it: the whole network's do
            Finding(
                NETWORK,
                codes.NOT_CONSERVED,
                ("issuance",),
                f"issued {audit.issued}, held {audit.held} (reserves {audit.reserves}, wallets "
                f"{audit.wallets}, in transit {audit.in_transit}, tokens {audit.tokens}, "
                f"pool {audit.pool})",
            )
        )
    return found


def pool(central: Engine, banks: Mapping[str, Engine]) -> list[Finding]:
    """The pool's size is what is available plus what is lent out, what is lent out is what
    its loans owe, and each loan is held by the intermediary it was lent to, for the same
    amount, owing the same (up to a repayment on its way)."""
    p, loans = schema.pool, schema.pool_loans
    found = []
    with snapshot(central, CENTRAL) as cb:
        row = cb.execute(select(p)).first()
        owed, drawn = cb.execute(
            select(_total(loans.c.drawn - loans.c.repaid), _total(loans.c.drawn))
        ).one()
        if row is not None and (
            row.available + row.outstanding != row.size
            or row.outstanding != int(owed)
            or row.drawn_total != int(drawn)
        ):
            found.append(
                Finding(
                    CENTRAL,
                    codes.POOL_MISMATCH,
                    ("pool",),
                    f"size {row.size}, available {row.available}, outstanding {row.outstanding}"
                    f" against loans owing {int(owed)} of {int(drawn)} drawn",
                )
            )
        for name, engine in banks.items():
            with snapshot(engine, name) as conn:
                found += _loans_of(cb, conn, name)
    return found


def _loans_of(cb: Connection, conn: Connection, bank: str) -> list[Finding]:
    central_loans, held, repays = schema.pool_loans, schema.pool_loans_held, schema.pool_repays
    found = []
    open_repays = (
        select(repays.c.loan_id, func.sum(repays.c.amount).label("amount"))
        .where(repays.c.done.is_(False))
        .group_by(repays.c.loan_id)
        .subquery()
    )
    theirs = {
        bytes(r.loan_id): r
        for r in cb.execute(select(central_loans).where(central_loans.c.institution == bank))
    }
    ours = conn.execute(
        select(held, func.coalesce(open_repays.c.amount, 0).label("repaying")).join(
            open_repays, open_repays.c.loan_id == held.c.loan_id, isouter=True
        )
    )
    for loan in ours:
        # the pool knows a loan by its pseudonym (issue 19), or by its id if lent before; a
        # finding names it so (the intermediary's pool_loans_held has it as its pseudonym)
        known_as = loan.pseudonym if loan.pseudonym is not None else loan.loan_id
        record = (f"loan:{bytes(known_as).hex()}",)
        central = theirs.pop(bytes(known_as), None)
        if central is None:
            if loan.state == "drawn":
                found.append(
                    Finding(bank, codes.POOL_MISMATCH, record, "a loan the pool never lent")
                )
            continue
        owes = central.drawn - central.repaid
        if loan.state == "refused" or (
            loan.state == "drawn"
            and (
                central.drawn != loan.amount
                or not loan.outstanding <= owes <= loan.outstanding + int(loan.repaying)
            )
        ):
            found.append(
                Finding(
                    bank,
                    codes.POOL_MISMATCH,
                    record,
                    f"{loan.state}, owing {loan.outstanding} of {loan.amount}; the pool lent "
                    f"{central.drawn} and is owed {owes}",
                )
            )
    for loan_id in theirs:
        found.append(
            Finding(bank, codes.POOL_MISMATCH, (f"loan:{loan_id.hex()}",), "lent; never booked")
        )
    return found


def tokens(central: Engine) -> list[Finding]:
    """Every redeemed token was consumed by its redemption and only by it, and no more value
    was redeemed than minted (so minted − redeemed, the value outstanding, is never negative)."""
    r, c = schema.redeemed, schema.consumed
    found = []
    with snapshot(central, CENTRAL) as cb:
        unconsumed = cb.execute(
            select(r.c.id)
            .join(c, c.c.id == r.c.id, isouter=True)
            .where((c.c.id.is_(None)) | (c.c.transition != REDEEMED))
        )
        for (token,) in unconsumed:
            found.append(
                Finding(
                    CENTRAL,
                    codes.TOKEN_MISMATCH,
                    (f"token:{bytes(token).hex()}",),
                    "redeemed, but its redemption is not what consumed it",
                )
            )
        unpaid = cb.execute(
            select(c.c.id)
            .join(r, r.c.id == c.c.id, isouter=True)
            .where(and_(c.c.transition == REDEEMED, r.c.id.is_(None)))
        )
        for (token,) in unpaid:
            found.append(
                Finding(
                    CENTRAL,
                    codes.TOKEN_MISMATCH,
                    (f"token:{bytes(token).hex()}",),
                    "consumed by a redemption that paid nothing",
                )
            )
        minted, redeemed = cb.execute(
            select(_total(schema.minted.c.value), _total(r.c.value))
        ).one()
        if int(redeemed) > int(minted):
            found.append(
                Finding(
                    CENTRAL,
                    codes.TOKEN_MISMATCH,
                    ("redeemed_tokens",),
                    f"{int(redeemed)} redeemed of {int(minted)} minted",
                )
            )
    return found
