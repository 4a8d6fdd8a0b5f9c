"""``offpay audit``'s run: open every party read-only, run each registered check, keep what
was read and found in the auditor's state, and report.

The checks are the tuple :data:`CHECKS`; a check takes the run's :class:`AuditRun` and
returns its findings. Further checks (the published liability commitments, issue 18 point 4)
are registered by adding them to that tuple."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select

from offpay.audit import books, ledger, settlement
from offpay.audit.findings import Finding
from offpay.audit.liabilities import check_published_totals
from offpay.audit.settlement import CREDITS, DEBITS, Evidence, Progress
from offpay.audit.sources import Sources, read_only_engine, snapshot
from offpay.audit.state import AuditState
from offpay.bank.names import engine_id
from offpay.errors import OffpayError
from offpay.liabilities.messages import HoldingsStatement, LiabilitiesCommitment
from offpay.store import schema
from offpay.wire.envelope import Signed, payload_of

CENTRAL = "central-bank"


@dataclass
class AuditRun:
    """What a check may read: the parties' read-only engines, the network's evidence checker
    and the auditor's state."""

    sources: Sources
    central: Engine
    banks: Mapping[str, Engine]
    state: AuditState
    evidence: Evidence
    progress: Progress
    in_flight: int = 0  # payments not complete yet, neither wrong (set by the settlement check)


Check = Callable[[AuditRun], list[Finding]]


def settlement_check(run: AuditRun) -> list[Finding]:
    """Credits (every intermediary), then the notary, then debits with their journal (each
    intermediary in one snapshot), then every open payment matched across them."""
    found: list[Finding] = []
    for name, engine in run.banks.items():
        with snapshot(engine, name) as conn:
            found += settlement.read_side(
                conn, name, CREDITS, run.state, run.evidence, run.progress
            )
    with snapshot(run.central, CENTRAL) as conn:
        found += settlement.read_notary(conn, run.state, run.progress, CENTRAL)
    for name, engine in run.banks.items():
        with snapshot(engine, name) as conn:
            found += settlement.read_side(conn, name, DEBITS, run.state, run.evidence, run.progress)
            found += ledger.read_journal(conn, name, run.state, run.progress)
    matched, run.in_flight = settlement.match(run.state, CENTRAL)
    return found + matched


def instructions_check(run: AuditRun) -> list[Finding]:
    found: list[Finding] = []
    for name, engine in run.banks.items():
        with snapshot(engine, name) as conn:
            found += ledger.read_instructions(
                conn, name, run.state, run.evidence.trust, run.progress
            )
    return found


def holdings_check(run: AuditRun) -> list[Finding]:
    return books.holdings(run.central, run.banks, run.sources.currency)


def pool_check(run: AuditRun) -> list[Finding]:
    return books.pool(run.central, run.banks)


def tokens_check(run: AuditRun) -> list[Finding]:
    return books.tokens(run.central)


def liabilities_check(run: AuditRun) -> list[Finding]:
    """Every liabilities commitment an intermediary published (issue 18, point 4) against the
    central bank's own record of the holdings statement it encloses: the signed answer the
    central bank kept for that request (its ``seen_requests``), not the copy the intermediary
    enclosed."""
    published: list[bytes] = []
    holdings: dict[tuple[str, int], int] = {}
    asked: dict[tuple[str, bytes], tuple[str, int]] = {}  # (engine, nonce) -> (bank, period)
    lc = schema.liability_commitments
    for name, engine in run.banks.items():
        with snapshot(engine, name) as conn:
            for (signed,) in conn.execute(select(lc.c.signed).order_by(lc.c.period)):
                published.append(bytes(signed))
                try:
                    body = payload_of(Signed.from_bytes(bytes(signed)), LiabilitiesCommitment)
                    enclosed = payload_of(body.holdings, HoldingsStatement)
                except OffpayError:
                    continue  # check_published_totals names it
                asked[(engine_id(body.institution), enclosed.nonce)] = (
                    body.institution,
                    body.period,
                )
    seen = schema.central_seen
    with snapshot(run.central, CENTRAL) as conn:
        for (sender, nonce), named in asked.items():
            kept = conn.execute(
                select(seen.c.response).where(seen.c.sender == sender, seen.c.nonce == nonce)
            ).scalar()
            if kept is None:
                continue  # no record: check_published_totals names it
            try:
                record = payload_of(Signed.from_bytes(bytes(kept)), HoldingsStatement)
            except OffpayError:
                continue
            holdings[named] = record.holdings.minor
    return [
        Finding(f.party, f.code, f.records, f.detail)
        for f in check_published_totals(published, holdings, run.evidence.trust)
    ]


# Every check a run makes, in order.
CHECKS: tuple[Check, ...] = (
    settlement_check,
    instructions_check,
    holdings_check,
    pool_check,
    tokens_check,
    liabilities_check,
)


@dataclass(frozen=True)
class AuditReport:
    new: list[Finding]  # found by this run
    findings: list[Finding]  # every finding so far, this run's included
    rows: int  # rows read by this run
    payments: int  # payments in the auditor's index
    in_flight: int  # payments seen but not complete, not wrong either

    @property
    def clean(self) -> bool:
        return not self.findings


@dataclass
class _Counter:
    rows: int = 0
    tell: Progress = field(default=lambda _n: None)

    def __call__(self, n: int) -> None:
        self.rows += n
        self.tell(n)


def rows_to_read(sources: Sources) -> int:
    """About how many rows a first run reads (for a progress bar's length)."""
    total = 0
    parties = {CENTRAL: sources.central, **sources.banks}
    for name, url in parties.items():
        engine = read_only_engine(url)
        tables = (
            [schema.notary]
            if name == CENTRAL
            else [schema.credits, schema.debits, schema.journal, schema.instructions]
        )
        try:
            with snapshot(engine, name) as conn:
                for table in tables:
                    count = conn.execute(select(func.count()).select_from(table)).scalar_one()
                    total += int(count)
        finally:
            engine.dispose()
    return total


def audit(
    sources: Sources,
    state_path: Path,
    *,
    progress: Progress | None = None,
    checks: tuple[Check, ...] = CHECKS,
) -> AuditReport:
    """One audit run over ``sources``, resuming from the state at ``state_path``."""
    counter = _Counter(tell=progress or (lambda _n: None))
    central = read_only_engine(sources.central)
    banks = {name: read_only_engine(url) for name, url in sources.banks.items()}
    state = AuditState(state_path)
    try:
        run = AuditRun(
            sources, central, banks, state, Evidence(sources.root_der, sources.currency), counter
        )
        for check in checks:
            # What a check read and what it found are kept together: a run stopped halfway
            # resumes after the last check it finished, its findings kept.
            state.record(check(run))
            state.commit()
        state.db.execute("UPDATE runs SET rows = ? WHERE id = ?", (counter.rows, state.run))
        state.commit()
        payments = int(next(state.rows("SELECT count(*) FROM payments"))[0])  # type: ignore[call-overload]
        return AuditReport(
            new=state.findings(this_run=True),
            findings=state.findings(),
            rows=counter.rows,
            payments=payments,
            in_flight=run.in_flight,
        )
    finally:
        state.close()
        central.dispose()
        for engine in banks.values():
            engine.dispose()
