"""The watchdog of a party's service (issue 18, point 3): after every committed request that
moves money, the party checks its own books; if they disagree with themselves it stops moving
money (a retryable ``503`` with code ``watchdog.halted``) and keeps answering reads, until an
operator clears the alarm, which is refused while the books still disagree.

The invariants and their incremental checks are in :mod:`offpay.service.watchdog_checks`; a
full check runs at start-up and before an alarm is cleared. This module decides which
requests move money, keeps the alarm in the party's database (a restart does not clear it),
logs it and shows it in ``/metrics``.

What one party cannot see alone (an intermediary's wallets against the central bank's record
of its holdings) is the auditor's check (``offpay audit``) and the proof of liabilities's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import insert, select, update

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.errors import OffpayError
from offpay.service.watchdog_checks import BankBooksCheck, CentralBooksCheck, Finding
from offpay.store import schema

log = logging.getLogger("offpay.service")
EVENTS = logging.getLogger("offpay.events")

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
MONEY_ADMIN_ROUTES = frozenset({"fund", "issue", "retry-pending", "release-expired"})
# Publishing a liabilities commitment moves no money, but commits to books the watchdog
# found wrong: refused while halted too.
HALTED_ROUTES = MONEY_ADMIN_ROUTES | {"liabilities-publish"}

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
    """A clear asked for in a way that cannot be done (forced without a reason)."""

    code = "watchdog.bad_clear"


@dataclass(frozen=True)
class Alarm:
    """The open alarm, as the party's database keeps it."""

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


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


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
