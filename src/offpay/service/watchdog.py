"""The watchdog of a party's service (issue 18, point 3): after every committed request that
moves money, the party checks its own books; if they disagree with themselves it stops moving
money (a retryable ``503`` with code ``watchdog.halted``) and keeps answering reads, until an
operator clears the alarm, which is refused while the books still disagree.

The check is incremental. An intermediary's wallets must each hold exactly what its journal of
moves says, and every settlement line of the journal must match its debit or credit record;
after a request the watchdog reads only the journal lines written since its last look and the
balances of the wallets they touched, against running sums it keeps per wallet. The central
bank's books must balance: money issued equals the reserves, the intermediaries' customers'
holdings, the tokens outstanding and the pool; after a request it reads only the issuance
written since its last look and the few rows of positions. A full check runs at start-up and
before an alarm is cleared. A difference found by the quick check is confirmed by a recount
in one statement (one snapshot) before the alarm is raised, so that a request committing
while the watchdog reads never looks like a fault.

What one party cannot see alone (an intermediary's wallets against the central bank's record
of its holdings) is the auditor's check (``offpay audit``) and the proof of liabilities's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Table, func, insert, or_, select, update

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.sim.network import Audit
from offpay.store import schema

log = logging.getLogger("offpay.service")
EVENTS = logging.getLogger("offpay.events")

# Journal reasons of settlement moves, and the record each line must match.
OUT_REASONS = ("offline-out", "refund-out")  # a debit of the payer's wallet: ``debits``
IN_REASONS = ("offline-in", "refund-in")  # a credit of the payee's wallet: ``credits``

# Requests that move money: refused while the watchdog is halted, and checked after.
BANK_MONEY_KINDS = frozenset(
    {
        "card-session",
        "liabilities-proof",  # a sync session, with a proof
        "terminal-upload",
        "debit-request",
        "credit-request",
        "refund-request",
        "debit-batch",
        "credit-batch",
        "token-withdraw",
        "token-deposit",
    }
)
CENTRAL_MONEY_KINDS = frozenset(
    {
        "reserve-transfer",
        "notarise",
        "notarise-batch",
        "pool-draw",
        "pool-repay",
        "mint-token",
        "redeem-token",
    }
)
TOKEN_KINDS = frozenset({"mint-token", "redeem-token"})
MONEY_ADMIN_ROUTES = frozenset({"fund", "issue", "retry-pending", "release-expired"})
# Publishing a liabilities commitment moves no money, but commits to books the watchdog
# found wrong: refused while halted too.
HALTED_ROUTES = MONEY_ADMIN_ROUTES | {"liabilities-publish"}

CHUNK = 500  # ids per IN (...) list
MAX_RECORDS = 50  # record ids an alarm keeps
RETRY_AFTER_S = 30


class WatchdogHalted(OffpayError):
    """The party's books disagree with themselves: no money moves until an operator clears
    the alarm. Retry later with the same bytes."""

    code = "watchdog.halted"


class BooksDisagree(OffpayError):
    """An alarm cannot be cleared while the books still disagree (unless forced)."""

    code = "watchdog.books_disagree"


class ClearRefused(OffpayError):
    code = "watchdog.bad_clear"


@dataclass(frozen=True)
class Finding:
    """One invariant that does not hold, and the records behind it."""

    invariant: str
    detail: str
    records: tuple[str, ...] = ()
    key: tuple[str, ...] = ()  # what the difference is of (a wallet, a record, issuance)
    difference: int = 0  # in minor units: what a forced clear accepts


@dataclass(frozen=True)
class Alarm:
    id: int
    raised_at: dt.datetime
    invariant: str
    detail: str
    records: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "raised_at": _aware(self.raised_at).isoformat(),
            "invariant": self.invariant,
            "detail": self.detail,
            "records": list(self.records),
        }


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


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
        m = lambda minor: Money(minor, self.central.currency)  # noqa: E731
        return Audit(m(issued), m(reserves), m(holdings), m(0), m(self.tokens), m(pool))

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


# ---- the watchdog -------------------------------------------------------------------------


class Watchdog:
    """One party's watchdog: its check, its alarm (kept in the party's database), its lock."""

    def __init__(self, name: str, party: CentralBank | Intermediary) -> None:
        self.name = name
        self.party = party
        self.check: BankBooksCheck | CentralBooksCheck
        if isinstance(party, CentralBank):
            self.check = CentralBooksCheck(party)
            self.table = schema.central_watchdog_alarms
            self.money_kinds = CENTRAL_MONEY_KINDS
        else:
            self.check = BankBooksCheck(party)
            self.table = schema.bank_watchdog_alarms
            self.money_kinds = BANK_MONEY_KINDS
        self.lock = threading.Lock()
        # Differences a forced clear accepted, by what they are of: not raised again by this
        # process while they stay the same (the next start-up's full check raises them).
        self.accepted: dict[tuple[str, ...], int] = {}
        self.checks = 0  # quick checks run by this process
        self.alarm = self._open_alarm()

    def start(self) -> None:
        """The full check at start-up; an alarm already open stays open."""
        with self.lock:
            findings = self.check.full()
            if findings and self.alarm is None:
                self._trip(findings)

    def _new(self, findings: list[Finding]) -> list[Finding]:
        return [f for f in findings if not f.key or self.accepted.get(f.key) != f.difference]

    def _quick(self, kind: str) -> list[Finding]:
        if isinstance(self.check, CentralBooksCheck):
            return self.check.incremental(kind, self.accepted.get(("issuance",), 0))
        return self.check.incremental(kind)

    # -- requests -------------------------------------------------------------------------------

    def moves_money(self, kind: str) -> bool:
        return kind in self.money_kinds or kind in MONEY_ADMIN_ROUTES

    def guard(self, kind: str) -> None:
        """Refuse a money-moving request while the alarm is open."""
        alarm = self.alarm
        if alarm is not None and (self.moves_money(kind) or kind in HALTED_ROUTES):
            raise WatchdogHalted(
                f"{self.name} moves no money until an operator clears its watchdog's alarm "
                f"{alarm.id} ({alarm.detail}); retry later"
            )

    def after(self, kind: str) -> None:
        """After a committed money-moving request: the quick check; an alarm if it fails."""
        if not self.moves_money(kind) or self.alarm is not None:
            return
        with self.lock:
            try:
                findings = self._new(self._quick(kind))
                self.checks += 1
            except Exception:  # a busy database: the next request's check reads the same lines
                log.warning("the watchdog could not read the books", exc_info=True)
                return
            if findings and self.alarm is None:
                self._trip(findings)

    # -- the alarm ------------------------------------------------------------------------------

    def _open_alarm(self) -> Alarm | None:
        w = self.table
        with self.party.db.connect() as conn:
            row = conn.execute(
                select(w).where(w.c.cleared_at.is_(None)).order_by(w.c.id).limit(1)
            ).first()
        if row is None:
            return None
        return Alarm(
            row.id, row.raised_at, row.invariant, row.detail, tuple(json.loads(row.records))
        )

    def _trip(self, findings: list[Finding]) -> None:
        detail = "; ".join(f.detail for f in findings[:5])
        if len(findings) > 5:
            detail += f"; and {len(findings) - 5} more"
        records = [r for f in findings for r in f.records][:MAX_RECORDS]
        with self.party.db.begin() as conn:
            conn.execute(
                insert(self.table).values(
                    raised_at=dt.datetime.now(dt.UTC),
                    invariant=findings[0].invariant,
                    detail=detail[:1000],
                    records=json.dumps(records),
                    forced=False,
                )
            )
        self.alarm = self._open_alarm()
        EVENTS.error(
            "watchdog alarm",
            extra={
                "event": "watchdog_alarm",
                "party": self.name,
                "invariant": findings[0].invariant,
                "detail": detail,
                "records": records,
            },
        )

    def clear(self, reason: str, *, force: bool = False) -> dict[str, Any]:
        """Run the full check, then close the open alarm; refused while the books disagree,
        unless ``force`` with a reason (logged)."""
        reason = reason.strip()
        if force and not reason:
            raise ClearRefused("a forced clear needs a reason, for the log")
        with self.lock:
            findings = self._new(self.check.full())
            if findings and not force:
                raise BooksDisagree(
                    f"{self.name}'s books still disagree: "
                    + "; ".join(f.detail for f in findings[:3])
                    + "; the alarm stays"
                )
            alarm = self.alarm
            if force:
                self.accepted.update({f.key: f.difference for f in findings if f.key})
            if alarm is None:
                return {"cleared": None, "halted": False, "disagreements": len(findings)}
            w = self.table
            with self.party.db.begin() as conn:
                conn.execute(
                    update(w)
                    .where(w.c.id == alarm.id)
                    .values(
                        cleared_at=dt.datetime.now(dt.UTC),
                        clear_reason=(reason or "the books agree again")[:500],
                        forced=bool(findings),
                    )
                )
            self.alarm = None
        (EVENTS.warning if findings else EVENTS.info)(
            "watchdog cleared",
            extra={
                "event": "watchdog_cleared",
                "party": self.name,
                "alarm": alarm.id,
                "reason": reason,
                "forced": bool(findings),
                "disagreements": [f.detail for f in findings[:5]],
            },
        )
        return {"cleared": alarm.id, "halted": False, "disagreements": len(findings)}

    def status(self) -> dict[str, Any]:
        """What the admin books show."""
        alarm = self.alarm
        return {
            "halted": alarm is not None,
            "alarm": None if alarm is None else alarm.as_json(),
            "checks": self.checks,
        }

    def history(self) -> list[dict[str, Any]]:
        """Every alarm, newest first, with how it was cleared."""
        w = self.table
        with self.party.db.connect() as conn:
            rows = conn.execute(select(w).order_by(w.c.id.desc()).limit(100)).all()
        return [
            {
                "id": r.id,
                "raised_at": _aware(r.raised_at).isoformat(),
                "invariant": r.invariant,
                "detail": r.detail,
                "records": json.loads(r.records),
                "cleared_at": None if r.cleared_at is None else _aware(r.cleared_at).isoformat(),
                "clear_reason": r.clear_reason,
                "forced": bool(r.forced),
            }
            for r in rows
        ]


class WatchdogCollector(Collector):
    """``offpay_watchdog_halted``: 1 while the alarm is open (money-moving requests refused)."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog

    def collect(self) -> Iterable[GaugeMetricFamily]:
        halted = GaugeMetricFamily(
            "offpay_watchdog_halted",
            "1 while the watchdog's alarm is open: the books disagree and no money moves.",
        )
        halted.add_metric([], 1 if self.watchdog.alarm is not None else 0)
        checks = GaugeMetricFamily(
            "offpay_watchdog_checks",
            "Quick checks of the books this process ran after money-moving requests.",
        )
        checks.add_metric([], self.watchdog.checks)
        return [halted, checks]
