"""The invariants the watchdog checks (:mod:`offpay.service.watchdog`), each party's own books
read two ways: a full check of everything, and a quick check of what was written since the
last look, against running sums. A difference the quick check finds is confirmed in one
statement (one snapshot) before it is reported, so a request committing while the check reads
is never taken for a fault.

An intermediary: every wallet holds exactly what its journal of moves says, and every
settlement line of the journal has its debit or credit record of the same amount. The central
bank: money issued = reserves + holdings + tokens outstanding + the pool not lent out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, or_, select

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.money import Money
from offpay.sim.network import Audit
from offpay.store import schema

# Journal reasons of settlement moves, and the record each line must match.
OUT_REASONS = ("offline-out", "refund-out")  # a debit of the payer's wallet: ``debits``
IN_REASONS = ("offline-in", "refund-in")  # a credit of the payee's wallet: ``credits``
TOKEN_KINDS = frozenset({"mint-token", "redeem-token"})  # the only ones that move tokens
CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class Finding:
    """One invariant that does not hold, and the records behind it."""

    invariant: str
    detail: str
    records: tuple[str, ...] = ()
    key: tuple[str, ...] = ()  # what the difference is of (a wallet, a record, issuance)
    difference: int = 0  # in minor units: what a forced clear accepts


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


# ---- an intermediary's books --------------------------------------------------------------


class BankBooksCheck:
    """An intermediary's wallets against its journal, and its journal's settlement lines
    against its debit and credit records. ``base[wallet]``: the journal's sum for that wallet
    up to line ``cursor``, filled on the wallet's first touch."""

    def __init__(self, bank: Intermediary) -> None:
        self.bank = bank
        self.cursor = 0
        self.base: dict[str, int] = {}

    def full(self) -> list[Finding]:
        """Every wallet and every settlement record: at start-up and before a clear."""
        a, j = schema.accounts, schema.journal
        per_wallet = (
            select(j.c.account_id, func.sum(j.c.delta).label("total"))
            .group_by(j.c.account_id)
            .subquery()
        )
        journal_total = func.coalesce(per_wallet.c.total, 0)
        with self.bank.db.connect() as conn:
            top = conn.execute(select(func.coalesce(func.max(j.c.id), 0))).scalar_one()
            wrong = conn.execute(
                select(a.c.id, a.c.balance, journal_total)
                .select_from(a.outerjoin(per_wallet, per_wallet.c.account_id == a.c.id))
                .where(a.c.balance != journal_total)
                .order_by(a.c.id)
            ).all()
            orphans = conn.execute(
                select(per_wallet.c.account_id)
                .select_from(per_wallet.outerjoin(a, a.c.id == per_wallet.c.account_id))
                .where(a.c.id.is_(None))
            ).scalars()
            findings = [_wallet_finding(w, int(b), int(t)) for w, b, t in wrong]
            findings += [
                Finding("wallets", f"the journal moves money of a wallet {w} that does not exist")
                for w in orphans
            ]
            for table, reasons, sign in (
                (schema.debits, OUT_REASONS, -1),
                (schema.credits, IN_REASONS, 1),
            ):
                findings += _records_against_journal(conn, table, reasons, sign)
        self.cursor, self.base = int(top), {}
        return findings

    def incremental(self, _kind: str) -> list[Finding]:
        """The journal lines written since the last look and the wallets they touched."""
        j, a = schema.journal, schema.accounts
        with self.bank.db.connect() as conn:
            lines = conn.execute(
                select(j.c.id, j.c.account_id, j.c.delta, j.c.reason, j.c.reference)
                .where(j.c.id > self.cursor)
                .order_by(j.c.id)
            ).all()
            if not lines:
                return []
            findings = _settlement_lines(conn, lines)
            moved: dict[str, int] = defaultdict(int)
            for line in lines:
                moved[line.account_id] += int(line.delta)
            touched = sorted(moved)
            self._fill_base(conn, [w for w in touched if w not in self.base])
            later = (
                select(func.coalesce(func.sum(j.c.delta), 0))
                .where(j.c.account_id == a.c.id, j.c.id > self.cursor)
                .scalar_subquery()
            )
            seen: dict[str, tuple[int, int]] = {}
            for part in _chunks(touched):
                for wallet, balance, since in conn.execute(
                    select(a.c.id, a.c.balance, later).where(a.c.id.in_(part))
                ):
                    seen[wallet] = (int(balance), int(since))
        top = int(lines[-1].id)
        suspects = []
        for wallet in touched:
            if wallet not in seen:
                findings.append(
                    Finding(
                        "wallets",
                        f"the journal moves money of a wallet {wallet} that does not exist",
                        (wallet,),
                    )
                )
                continue
            balance, since = seen[wallet]
            if balance != self.base[wallet] + since:
                suspects.append(wallet)
            self.base[wallet] += moved[wallet]
        self.cursor = top
        return findings + self._confirm(suspects)

    def _fill_base(self, conn: Any, wallets: list[str]) -> None:
        j = schema.journal
        for wallet in wallets:
            self.base[wallet] = 0
        for part in _chunks(wallets):
            for wallet, total in conn.execute(
                select(j.c.account_id, func.sum(j.c.delta))
                .where(j.c.account_id.in_(part), j.c.id <= self.cursor)
                .group_by(j.c.account_id)
            ):
                self.base[wallet] = int(total)

    def _confirm(self, wallets: list[str]) -> list[Finding]:
        """Recount the suspect wallets in one statement: a wallet that agrees with its whole
        journal was only read while a request committed; its running sum starts again."""
        if not wallets:
            return []
        a, j = schema.accounts, schema.journal
        whole = (
            select(func.coalesce(func.sum(j.c.delta), 0))
            .where(j.c.account_id == a.c.id)
            .scalar_subquery()
        )
        upto = (
            select(func.coalesce(func.sum(j.c.delta), 0))
            .where(j.c.account_id == a.c.id, j.c.id <= self.cursor)
            .scalar_subquery()
        )
        findings = []
        with self.bank.db.connect() as conn:
            for part in _chunks(wallets):
                for wallet, balance, total, base in conn.execute(
                    select(a.c.id, a.c.balance, whole, upto).where(a.c.id.in_(part))
                ):
                    if int(balance) != int(total):
                        findings.append(_wallet_finding(wallet, int(balance), int(total)))
                    self.base[wallet] = int(base)
        return findings


def _wallet_finding(wallet: str, balance: int, journal: int) -> Finding:
    return Finding(
        "wallets",
        f"wallet {wallet} holds {balance} but its journal of moves says {journal}",
        (wallet,),
        ("wallet", wallet),
        balance - journal,
    )


def _records_against_journal(
    conn: Any, table: Table, reasons: tuple[str, ...], sign: int
) -> list[Finding]:
    """Every debit (credit) record has its journal line of the same amount, and every such
    journal line its record."""
    j = schema.journal
    lines = (
        select(j.c.reference, (func.sum(j.c.delta) * sign).label("amount"))
        .where(j.c.reason.in_(reasons))
        .group_by(j.c.reference)
        .subquery()
    )
    what = table.name[:-1]  # debit | credit
    findings = [
        Finding(
            "settlement",
            f"{what} {bytes(tx).hex()} of {amount} has "
            + ("no journal line" if moved is None else f"journal lines of {moved}"),
            (bytes(tx).hex(),),
            ("record", bytes(tx).hex()),
            int(amount) - (0 if moved is None else int(moved)),
        )
        for tx, amount, moved in conn.execute(
            select(table.c.tx_id, table.c.amount, lines.c.amount)
            .select_from(table.outerjoin(lines, lines.c.reference == table.c.tx_id))
            .where(or_(lines.c.amount.is_(None), lines.c.amount != table.c.amount))
        )
    ]
    findings += [
        Finding(
            "settlement",
            f"the journal moves {moved} for a {what} "
            f"{'?' if ref is None else bytes(ref).hex()} with no record",
            () if ref is None else (bytes(ref).hex(),),
            ("record", "?" if ref is None else bytes(ref).hex()),
            -int(moved),
        )
        for ref, moved in conn.execute(
            select(lines.c.reference, lines.c.amount)
            .select_from(lines.outerjoin(table, table.c.tx_id == lines.c.reference))
            .where(table.c.tx_id.is_(None))
        )
    ]
    return findings


def _settlement_lines(conn: Any, lines: Sequence[Any]) -> list[Finding]:
    """Each new settlement line of the journal against its debit or credit record."""
    findings = []
    for table, reasons, sign in (
        (schema.debits, OUT_REASONS, -1),
        (schema.credits, IN_REASONS, 1),
    ):
        mine = [line for line in lines if line.reason in reasons]
        if not mine:
            continue
        refs = sorted({bytes(line.reference) for line in mine if line.reference is not None})
        amounts: dict[bytes, int] = {}
        for part in _chunks(refs):
            for tx, amount in conn.execute(
                select(table.c.tx_id, table.c.amount).where(table.c.tx_id.in_(part))
            ):
                amounts[bytes(tx)] = int(amount)
        for line in mine:
            ref = None if line.reference is None else bytes(line.reference)
            record = None if ref is None else amounts.get(ref)
            if record != sign * int(line.delta):
                findings.append(
                    Finding(
                        "settlement",
                        f"journal line {line.id} moves {sign * int(line.delta)} for "
                        f"{table.name[:-1]} {ref.hex() if ref else '?'}, whose record says "
                        f"{'nothing' if record is None else record}",
                        (f"journal:{line.id}",) + ((ref.hex(),) if ref else ()),
                        ("record", ref.hex() if ref else "?"),
                        (0 if record is None else record) - sign * int(line.delta),
                    )
                )
    return findings


# ---- the central bank's books -------------------------------------------------------------


def _total(column: Any, *where: Any) -> Any:
    return select(func.coalesce(func.sum(column), 0)).where(*where).scalar_subquery()


class CentralBooksCheck:
    """Issued = reserves + holdings + tokens outstanding + pool available. ``issued`` is the
    running sum of the issuance up to row ``cursor``; ``tokens`` is recounted only after a
    token request (the token tables are the large ones)."""

    def __init__(self, central: CentralBank) -> None:
        self.central = central
        self.cursor = 0
        self.issued = 0
        self.tokens = 0

    def _snapshot(self, *, all_issued: bool, tokens: bool) -> tuple[int, int, int, int, int]:
        i, t = schema.issuance, schema.institutions
        columns = [
            select(func.coalesce(func.max(i.c.id), 0)).scalar_subquery(),
            _total(i.c.amount) if all_issued else _total(i.c.amount, i.c.id > self.cursor),
            _total(t.c.reserve),
            _total(t.c.holdings),
            _total(schema.pool.c.available),
        ]
        if tokens:
            columns += [_total(schema.minted.c.value), _total(schema.redeemed.c.value)]
        with self.central.db.connect() as conn:
            row = [int(v) for v in conn.execute(select(*columns)).one()]
        if tokens:
            self.tokens = row[5] - row[6]
        return row[0], row[1], row[2], row[3], row[4]

    def _audit(self, issued: int, reserves: int, holdings: int, pool: int) -> Audit:
        c = self.central.currency
        return Audit(
            Money(issued, c),
            Money(reserves, c),
            Money(holdings, c),
            Money(0, c),
            Money(self.tokens, c),
            Money(pool, c),
        )

    def full(self) -> list[Finding]:
        top, issued, reserves, holdings, pool = self._snapshot(all_issued=True, tokens=True)
        self.cursor, self.issued = top, issued
        audit = self._audit(issued, reserves, holdings, pool)
        if audit.balanced:
            return []
        return [
            Finding(
                "issuance",
                f"issued {audit.issued} but held {audit.held} (reserves {audit.reserves}, "
                f"holdings {audit.wallets}, tokens {audit.tokens}, pool {audit.pool})",
                tuple(p.institution for p in self.central.positions()),
                ("issuance",),
                audit.held.minor - audit.issued.minor,
            )
        ]

    def incremental(self, kind: str, accepted: int = 0) -> list[Finding]:
        """``accepted``: a difference a forced clear accepted (held minus issued)."""
        top, new, reserves, holdings, pool = self._snapshot(
            all_issued=False, tokens=kind in TOKEN_KINDS
        )
        self.issued += new
        self.cursor = max(self.cursor, top)
        audit = self._audit(self.issued, reserves, holdings, pool)
        if audit.held.minor - audit.issued.minor == accepted:
            return []
        return self.full()  # confirmed in one snapshot before any alarm
