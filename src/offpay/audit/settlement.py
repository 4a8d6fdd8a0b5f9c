"""Settled payments, re-verified and matched across parties: every credit has a notary record
and a debit of the same payment at the payer's intermediary, every notary record has both,
and each is booked once in its party's journal.

Each party's rows are streamed in chunks (never a whole table) into the auditor's index
(:mod:`offpay.audit.state`); the stored signed payment of each new row is verified with the
protocol's own :func:`~offpay.bank.evidence.verify_payment`, spread over the verification
pool for big chunks (:class:`~offpay.bank.verifier.Verifier`). Reading order makes a payment
in flight look in flight, never wrong: credits first, then the notary, then debits (a credit
follows its notary record, which follows its debit)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, or_, select

from offpay.audit import findings as codes
from offpay.audit.findings import Finding
from offpay.audit.state import AuditState
from offpay.bank.evidence import verify_payment
from offpay.bank.names import engine_id
from offpay.bank.refusal import refund_id
from offpay.bank.verifier import Verifier
from offpay.crypto.pki import TrustStore
from offpay.crypto.pseudonyms import commitment
from offpay.errors import OffpayError
from offpay.store import schema
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment

CHUNK = 2000  # rows read, verified and indexed at a time
# Rows are read again from this long before the newest time already read: a transaction that
# stamped its rows earlier but committed later is still read (re-reading a row is harmless).
OVERLAP = dt.timedelta(minutes=5)
SETTLEMENT_REASONS_OUT = ("offline-out", "refund-out")
SETTLEMENT_REASONS_IN = ("offline-in", "refund-in")

Progress = Callable[[int], None]  # told how many rows were just read


@dataclass(frozen=True)
class Side:
    """Debits or credits as the index keeps them."""

    table: Table
    prefix: str  # the index's column prefix: d | c

    @property
    def name(self) -> str:
        return "debits" if self.prefix == "d" else "credits"


DEBITS = Side(schema.debits, "d")
CREDITS = Side(schema.credits, "c")


def _time(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def chunks(conn: Connection, query: Any) -> Iterator[Sequence[Any]]:
    """The query's rows ``CHUNK`` at a time, streamed from the server."""
    result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(query)
    yield from result.partitions(CHUNK)


def new_rows(conn: Connection, table: Table, state: AuditState, source: str) -> Iterator[Any]:
    """Rows of a settlement table recorded since the cursor (all of them the first time)."""
    at = state.cursor(source)
    key = next(iter(table.primary_key.columns))  # tx_id, or the notary's pseudonym
    query = select(table).order_by(table.c.recorded_at, key)
    if at is not None:
        since = dt.datetime.fromisoformat(at) - OVERLAP
        query = query.where(or_(table.c.recorded_at >= since, table.c.recorded_at.is_(None)))
    newest: dt.datetime | None = None
    for chunk in chunks(conn, query):
        yield chunk
        times = [_time(r.recorded_at) for r in chunk if r.recorded_at is not None]
        if times:
            newest = max([*times, *([newest] if newest else [])])
    if newest is not None and (at is None or newest > dt.datetime.fromisoformat(at)):
        state.advance(source, newest.isoformat())


class Evidence:
    """Verifies stored signed payments against the network's root."""

    def __init__(self, root_der: bytes, currency: str) -> None:
        self.trust = TrustStore(root_der)
        self.verifier = Verifier(root_der)
        self.currency = currency

    def verify(
        self, blobs: Sequence[bytes], already: set[bytes] | frozenset[bytes] = frozenset()
    ) -> list[tuple[Signed[OfflinePayment], Any] | str]:
        """Per blob: (signed, payment) or why it is not valid evidence. A blob whose digest
        is in ``already`` (payload and signatures verified in this audit) is only decoded."""
        signed: list[Signed[OfflinePayment] | None] = []
        for blob in blobs:
            try:
                signed.append(Signed.from_bytes(blob))
            except OffpayError:
                signed.append(None)
        to_verify = [s for s in signed if s is not None and s.digest not in already]
        pooled = self.verifier.verify_all(to_verify)
        verdicts = iter(pooled) if pooled is not None else None
        out: list[tuple[Signed[OfflinePayment], Any] | str] = []
        for s in signed:
            if s is None:
                out.append("the stored payment cannot be decoded")
                continue
            payment: Any = None
            if s.digest in already:
                try:
                    payment = payload_of(s, OfflinePayment)
                except OffpayError as exc:
                    out.append(f"the stored payment cannot be decoded: {exc.message}")
                    continue
            elif verdicts is not None:
                payment = next(verdicts)
            if payment is None:  # not pooled, or the pool refused it: say why, here
                try:
                    payment = verify_payment(s, self.trust)
                except OffpayError as exc:
                    out.append(f"the stored payment does not verify: {exc.message}")
                    continue
            if payment.amount.currency != self.currency:
                out.append(f"the payment is in {payment.amount.currency}")
                continue
            out.append((s, payment))
        return out


def _disagreement(side: Side, bank: str, row: Any, signed: Signed[Any], payment: Any) -> str:
    """Why a debit or credit row does not match the signed payment it stores ('' if it does)."""
    refund = bytes(row.tx_id) == refund_id(payment.tx_id)
    if bytes(row.tx_id) != payment.tx_id and not refund:
        return "its id is neither the payment's nor its refund's"
    payer_side = (side is DEBITS) != refund
    institution = payment.payer_institution if payer_side else payment.payee_institution
    device = payment.sender if payer_side else payment.receiver
    if bank != institution:
        return f"the payment is {institution}'s to book, not {bank}'s"
    if row.device_id != device:
        return f"booked to {row.device_id}, the payment names {device}"
    if row.amount != payment.amount.minor:
        return f"booked {row.amount}, the payment is of {payment.amount.minor}"
    if bytes(row.evidence) != signed.digest:
        return "its evidence digest is not the stored payment's"
    return ""


def notary_form(row: Any, refund: bool) -> tuple[bytes, bytes]:
    """What the notary should know a debit's or credit's payment by, and the commitment it
    should hold: the row's pseudonym and the commitment to its evidence, or, for a row booked
    before pseudonyms (issue 19), its id and evidence digest as they are."""
    if row.pseudonym is None:
        return bytes(row.tx_id), bytes(row.evidence)
    return bytes(row.pseudonym), commitment(bytes(row.evidence), refund=refund)


def ingest_side(
    bank: str,
    side: Side,
    rows: Sequence[Any],
    state: AuditState,
    evidence: Evidence,
) -> list[Finding]:
    """Index a chunk of debits or credits; verify those not seen before."""
    p = side.prefix
    ids = [bytes(r.tx_id) for r in rows]
    marks = ",".join("?" * len(ids))
    known: dict[bytes, tuple[Any, Any, bytes | None]] = {}
    credited: dict[bytes, bytes] = {}  # payments whose credit's evidence verified already
    for tx, b, amount, ev, c_ev, c_verified in state.rows(
        f"SELECT tx_id, {p}_bank, {p}_amount, {p}_evidence, c_evidence, c_verified "
        f"FROM payments WHERE tx_id IN ({marks})",
        ids,
    ):
        key = bytes(tx)  # type: ignore[arg-type]
        known[key] = (b, amount, bytes(ev) if ev is not None else None)  # type: ignore[arg-type]
        if c_verified:
            credited[key] = bytes(c_ev)  # type: ignore[arg-type]
    found: list[Finding] = []
    fresh = []
    for row in rows:
        tx = bytes(row.tx_id)
        seen = known.get(tx)
        mine = (bank, row.amount, bytes(row.evidence))
        if seen is None or seen[0] is None:
            fresh.append(row)
        elif seen[0] == bank and seen != mine:
            found.append(
                Finding(bank, codes.ROW_ALTERED, (tx.hex(),), f"a {side.name} row changed")
            )
        elif seen[0] != bank:
            found.append(
                Finding(
                    bank,
                    codes.SETTLEMENT_MISMATCH,
                    (tx.hex(),),
                    f"{seen[0]} and {bank} both hold {side.name} of this payment",
                )
            )
    with_payment = [r for r in fresh if r.payment is not None]
    # A debit storing the very payment (payload and signatures) its credit stored and that
    # verified is not verified twice: its digest binds it to those verified bytes.
    already = {
        bytes(r.evidence) for r in with_payment if credited.get(bytes(r.tx_id)) == bytes(r.evidence)
    }
    verdicts = evidence.verify([bytes(r.payment) for r in with_payment], already)
    verified: list[bytes] = []
    refunds: set[bytes] = set()
    for row, verdict in zip(with_payment, verdicts, strict=True):
        tx = bytes(row.tx_id).hex()
        if isinstance(verdict, str):
            found.append(Finding(bank, codes.EVIDENCE_INVALID, (tx,), verdict))
            continue
        if bytes(row.tx_id) == refund_id(verdict[1].tx_id):
            refunds.add(bytes(row.tx_id))
        why = _disagreement(side, bank, row, *verdict)
        if why:
            found.append(Finding(bank, codes.EVIDENCE_MISMATCH, (tx,), why))
        elif side is CREDITS:
            verified.append(bytes(row.tx_id))
    flag = ", d_credited = excluded.d_credited" if side is DEBITS else ""
    state.db.executemany(
        f"INSERT INTO payments (tx_id, n_key, {p}_bank, {p}_amount, {p}_evidence, {p}_commit"
        f"{', d_credited' if side is DEBITS else ''}) VALUES (?, ?, ?, ?, ?, ?"
        f"{', ?' if side is DEBITS else ''}) ON CONFLICT (tx_id) DO UPDATE SET "
        "n_key = coalesce(n_key, excluded.n_key), "
        f"{p}_bank = excluded.{p}_bank, {p}_amount = excluded.{p}_amount, "
        f"{p}_evidence = excluded.{p}_evidence, {p}_commit = excluded.{p}_commit{flag}, "
        "open = 1",
        [
            (
                bytes(r.tx_id),
                notary_form(r, bytes(r.tx_id) in refunds)[0],
                bank,
                r.amount,
                bytes(r.evidence),
                notary_form(r, bytes(r.tx_id) in refunds)[1],
                *((bool(r.credited),) if side is DEBITS else ()),
            )
            for r in fresh
        ],
    )
    state.db.executemany(
        "UPDATE payments SET c_verified = 1 WHERE tx_id = ?", [(tx,) for tx in verified]
    )
    if side is DEBITS:  # the flag moves on after the row was first read
        state.db.executemany(
            "UPDATE payments SET d_credited = ?, open = 1 WHERE tx_id = ? AND d_credited = 0 "
            "AND ? = 1",
            [(bool(r.credited), bytes(r.tx_id), bool(r.credited)) for r in rows],
        )
    return found


def read_side(
    conn: Connection,
    bank: str,
    side: Side,
    state: AuditState,
    evidence: Evidence,
    progress: Progress,
) -> list[Finding]:
    """New debits or credits of ``bank``; the whole table again when its count or total no
    longer matches what was audited (a row changed, vanished or arrived late)."""
    found: list[Finding] = []
    for chunk in new_rows(conn, side.table, state, f"{bank}/{side.name}"):
        found += ingest_side(bank, side, chunk, state, evidence)
        progress(len(chunk))
    if _totals(conn, side.table) != _indexed(state, side, bank):
        for chunk in chunks(conn, select(side.table)):
            found += ingest_side(bank, side, chunk, state, evidence)
        found += _missing(conn, bank, side, state)
    return found


def _totals(conn: Connection, table: Table) -> tuple[int, int]:
    count, total = conn.execute(
        select(func.count(), func.coalesce(func.sum(table.c.amount), 0))
    ).one()
    return int(count), int(total)


def _indexed(state: AuditState, side: Side, bank: str) -> tuple[int, int]:
    p = side.prefix
    count, total = next(
        state.rows(
            f"SELECT count(*), coalesce(sum({p}_amount), 0) FROM payments WHERE {p}_bank = ?",
            (bank,),
        )
    )
    return int(count), int(total)  # type: ignore[call-overload]


def _missing(conn: Connection, bank: str, side: Side, state: AuditState) -> list[Finding]:
    """Rows audited before that the party's table no longer holds."""
    found = []
    p = side.prefix
    query = f"SELECT tx_id FROM payments WHERE {p}_bank = ? ORDER BY tx_id"
    batch: list[bytes] = []

    def check(ids: list[bytes]) -> None:
        have = {
            bytes(t)
            for t in conn.execute(select(side.table.c.tx_id).where(side.table.c.tx_id.in_(ids)))
            .scalars()
            .all()
        }
        for tx in ids:
            if tx not in have:
                found.append(
                    Finding(bank, codes.ROW_MISSING, (tx.hex(),), f"a {side.name} row is gone")
                )

    for (tx,) in state.rows(query, (bank,)):
        batch.append(bytes(tx))  # type: ignore[arg-type]
        if len(batch) >= 500:
            check(batch)
            batch = []
    if batch:
        check(batch)
    return found


def read_notary(
    conn: Connection, state: AuditState, progress: Progress, central: str
) -> list[Finding]:
    """New notary records into the index; each must be asked for by the payer's engine. The
    notary knows a payment by its pseudonym only (issue 19): records are matched to debits
    and credits through the pseudonym those rows carry."""
    found: list[Finding] = []
    n = schema.notary
    for chunk in new_rows(conn, n, state, f"{central}/notary"):
        found += _ingest_notary(chunk, state, central)
        progress(len(chunk))
    count, total = conn.execute(select(func.count(), func.coalesce(func.sum(n.c.amount), 0))).one()
    indexed = next(state.rows("SELECT count(*), coalesce(sum(amount), 0) FROM notary_records"))
    if (int(count), int(total)) != tuple(indexed):
        for chunk in chunks(conn, select(n)):
            found += _ingest_notary(chunk, state, central)
    return found


def _ingest_notary(rows: Sequence[Any], state: AuditState, central: str) -> list[Finding]:
    found = []
    keys = [bytes(r.pseudonym) for r in rows]
    marks = ",".join("?" * len(keys))
    known = {
        bytes(key): (payer, payee, amount, bytes(commit))
        for key, payer, payee, amount, commit in state.rows(
            f"SELECT key, payer, payee, amount, commit_ FROM notary_records WHERE key IN ({marks})",
            keys,
        )
    }
    fresh = []
    for r in rows:
        key = bytes(r.pseudonym)
        mine = (r.payer_institution, r.payee_institution, r.amount, bytes(r.commitment))
        seen = known.get(key)
        if seen is None:
            fresh.append((key, *mine))
            if r.recorded_by != engine_id(r.payer_institution):
                found.append(
                    Finding(
                        central,
                        codes.SETTLEMENT_MISMATCH,
                        (key.hex(),),
                        f"recorded for {r.recorded_by}, not the payer's intermediary",
                    )
                )
        elif seen != mine:
            found.append(Finding(central, codes.ROW_ALTERED, (key.hex(),), "a notary row changed"))
    state.db.executemany(
        "INSERT INTO notary_records (key, payer, payee, amount, commit_) VALUES "
        "(?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET payer = excluded.payer, "
        "payee = excluded.payee, amount = excluded.amount, commit_ = excluded.commit_",
        fresh,
    )
    # the payments it names are looked at again
    state.db.executemany("UPDATE payments SET open = 1 WHERE n_key = ?", [(f[0],) for f in fresh])
    return found


def match(state: AuditState, central: str) -> tuple[list[Finding], int]:
    """Every open payment checked across its debit, notary record, credit and journal rows;
    complete ones are closed. Then every notary record no debit or credit names. Returns the
    findings and how many stay in flight."""
    found: list[Finding] = []
    done: list[tuple[bytes]] = []
    in_flight = 0
    for row in _open_payments(state):
        (tx, n_payer, n_payee, n_amount, n_ev, d_bank, d_amount, d_ev, d_credited) = row[:9]
        (c_bank, c_amount, c_ev, j_out, j_out_rows, j_in, j_in_rows, j_out_bank, j_in_bank) = row[
            9:
        ]
        key = (bytes(tx).hex(),)  # type: ignore[arg-type]
        problems: list[Finding] = []
        if n_payer is not None and d_bank is None:
            problems.append(
                Finding(str(n_payer), codes.NOTARY_WITHOUT_DEBIT, key, "notarised, never debited")
            )
        if c_bank is not None and n_payer is None:
            problems.append(
                Finding(str(c_bank), codes.CREDIT_WITHOUT_NOTARY, key, "credited, never notarised")
            )
        if (
            d_bank is not None
            and n_payer is not None
            and (d_bank, d_amount, d_ev) != (n_payer, n_amount, n_ev)
        ):
            problems.append(
                Finding(str(d_bank), codes.SETTLEMENT_MISMATCH, key, "debit and notary disagree")
            )
        if (
            c_bank is not None
            and n_payer is not None
            and (c_bank, c_amount, c_ev) != (n_payee, n_amount, n_ev)
        ):
            problems.append(
                Finding(str(c_bank), codes.SETTLEMENT_MISMATCH, key, "credit and notary disagree")
            )
        if d_credited and n_payer is not None and c_bank is None:
            problems.append(
                Finding(
                    str(n_payee),
                    codes.CREDIT_MISSING,
                    key,
                    f"{d_bank} was told it was credited; {n_payee} holds no credit",
                )
            )
        problems += _journal(key, d_bank, d_amount, j_out, j_out_rows, j_out_bank, "debit")
        problems += _journal(key, c_bank, c_amount, -int(j_in), j_in_rows, j_in_bank, "credit")  # type: ignore[call-overload]
        found += problems
        if problems or (d_bank is not None and n_payer is not None and c_bank is not None):
            done.append((tx,))  # type: ignore[arg-type]
            if len(done) >= CHUNK:
                state.db.executemany("UPDATE payments SET open = 0 WHERE tx_id = ?", done)
                done = []
        else:
            in_flight += 1
    state.db.executemany("UPDATE payments SET open = 0 WHERE tx_id = ?", done)
    return found + _unnamed_records(state), in_flight


def _unnamed_records(state: AuditState) -> list[Finding]:
    """Notary records that no debit or credit names: notarised by the payer's intermediary
    without a debit, and never credited. Debits are read after the notary, so a record read
    has its debit read too, if there is one."""
    return [
        Finding(
            str(payer), codes.NOTARY_WITHOUT_DEBIT, (bytes(key).hex(),), "notarised, never debited"
        )  # type: ignore[arg-type]
        for key, payer in state.rows(
            "SELECT key, payer FROM notary_records AS n WHERE NOT EXISTS "
            "(SELECT 1 FROM payments AS p WHERE p.n_key = n.key)"
        )
    ]


def _open_payments(state: AuditState) -> Iterator[tuple[Any, ...]]:
    """Every open payment, ``CHUNK`` at a time in id order (never the whole index at once),
    with the notary record its debit or credit names."""
    query = (
        "SELECT p.tx_id, n.payer, n.payee, n.amount, n.commit_, p.d_bank, p.d_amount, "
        "p.d_commit, p.d_credited, p.c_bank, p.c_amount, p.c_commit, p.j_out, p.j_out_rows, "
        "p.j_in, p.j_in_rows, p.j_out_bank, p.j_in_bank FROM payments AS p "
        "LEFT JOIN notary_records AS n ON n.key = p.n_key "
        f"WHERE p.open = 1 AND p.tx_id > ? ORDER BY p.tx_id LIMIT {CHUNK}"
    )
    after = b""
    while True:
        chunk = list(state.rows(query, (after,)))
        if not chunk:
            return
        yield from chunk
        after = bytes(chunk[-1][0])  # type: ignore[arg-type]


def _journal(
    key: tuple[str], bank: Any, amount: Any, moved: Any, rows: Any, journal_bank: Any, what: str
) -> list[Finding]:
    """A debit is one journal row of minus its amount, a credit one of plus its amount, in
    the same party's journal; journal rows for a payment that party never booked are not."""
    if bank is None:
        if rows:
            return [
                Finding(
                    str(journal_bank), codes.UNBACKED_MOVE, key, f"a {what} in the journal only"
                )
            ]
        return []
    if rows > 1:
        return [Finding(str(bank), codes.MOVED_TWICE, key, f"the {what} is booked {rows} times")]
    if rows != 1 or journal_bank != bank or -int(moved) != int(amount):
        return [
            Finding(str(bank), codes.SETTLEMENT_MISMATCH, key, f"the {what} is not in the journal")
        ]
    return []
