"""An intermediary's own books: its journal against its wallets, the settlement rows the
journal books, and the balance instructions it signed to its cards against the shadow
wallet each was drawn from."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, func, select

from offpay.audit import findings as codes
from offpay.audit.findings import Finding
from offpay.audit.settlement import (
    SETTLEMENT_REASONS_IN,
    SETTLEMENT_REASONS_OUT,
    Progress,
    chunks,
)
from offpay.audit.state import AuditState
from offpay.bank.names import engine_id
from offpay.crypto.pki import Role, TrustStore
from offpay.errors import OffpayError
from offpay.store import schema
from offpay.wire.envelope import open_signed
from offpay.wire.messages import CardConfirmation, CardInstruction


def _digest(row: Any) -> bytes:
    reference = bytes(row.reference) if row.reference is not None else b""
    text = f"{row.account_id}\x00{row.delta}\x00{row.reason}\x00".encode()
    return hashlib.blake2b(text + reference, digest_size=16).digest()


def read_journal(
    conn: Connection, bank: str, state: AuditState, progress: Progress
) -> list[Finding]:
    """New journal rows: indexed, summed per account, and their settlement rows tied to the
    payment they book. Rows audited before are checked unchanged (per-account sums, then row
    by row where a sum moved)."""
    j = schema.journal
    source = f"{bank}/journal"
    start = int(state.cursor(source) or 0)
    last = start
    for chunk in chunks(conn, select(j).where(j.c.id > start).order_by(j.c.id)):
        state.db.executemany(
            "INSERT INTO journal_rows VALUES (?, ?, ?, ?, ?)",
            [(bank, r.id, r.account_id, r.delta, _digest(r)) for r in chunk],
        )
        sums: dict[str, tuple[int, int]] = {}
        for r in chunk:
            total, rows = sums.get(r.account_id, (0, 0))
            sums[r.account_id] = (total + r.delta, rows + 1)
        state.db.executemany(
            "INSERT INTO account_sums VALUES (?, ?, ?, ?) ON CONFLICT (party, account) DO "
            "UPDATE SET total = total + excluded.total, rows = rows + excluded.rows",
            [(bank, account, total, rows) for account, (total, rows) in sums.items()],
        )
        for reasons, side in ((SETTLEMENT_REASONS_OUT, "out"), (SETTLEMENT_REASONS_IN, "in")):
            booked = [
                (bytes(r.reference), r.delta, bank)
                for r in chunk
                if r.reason in reasons and r.reference is not None
            ]
            state.db.executemany(
                f"INSERT INTO payments (tx_id, j_{side}, j_{side}_rows, j_{side}_bank) "
                "VALUES (?, ?, 1, ?) ON CONFLICT (tx_id) DO UPDATE SET "
                f"j_{side} = j_{side} + excluded.j_{side}, j_{side}_rows = j_{side}_rows + 1, "
                f"j_{side}_bank = excluded.j_{side}_bank, open = 1",
                booked,
            )
        last = chunk[-1].id
        progress(len(chunk))
    state.advance(source, str(last))
    return _altered(conn, bank, state, last) + _balances(conn, bank, state)


def _altered(conn: Connection, bank: str, state: AuditState, through: int) -> list[Finding]:
    j = schema.journal
    now = {
        account: (int(total), int(rows))
        for account, total, rows in conn.execute(
            select(j.c.account_id, func.sum(j.c.delta), func.count())
            .where(j.c.id <= through)
            .group_by(j.c.account_id)
        )
    }
    kept = {
        str(account): (int(total), int(rows))  # type: ignore[call-overload]
        for account, total, rows in state.rows(
            "SELECT account, total, rows FROM account_sums WHERE party = ?", (bank,)
        )
    }
    moved = sorted(a for a in now.keys() | kept.keys() if now.get(a) != kept.get(a))
    found: list[Finding] = []
    for account in moved:
        indexed = {
            int(i): bytes(d)  # type: ignore[call-overload, arg-type]
            for i, d in state.rows(
                "SELECT id, digest FROM journal_rows WHERE party = ? AND account = ?",
                (bank, account),
            )
        }
        rows = select(j).where(j.c.account_id == account, j.c.id <= through)
        for chunk in chunks(conn, rows):
            for r in chunk:
                if indexed.pop(r.id, None) != _digest(r):
                    found.append(
                        Finding(
                            bank,
                            codes.ROW_ALTERED,
                            (f"journal:{r.id}",),
                            f"a journal row of {account} changed since it was audited",
                        )
                    )
        for i in sorted(indexed):
            found.append(
                Finding(bank, codes.ROW_MISSING, (f"journal:{i}",), f"a row of {account} is gone")
            )
    return found


def _balances(conn: Connection, bank: str, state: AuditState) -> list[Finding]:
    """Each wallet holds what its journal says (streamed, one account at a time)."""
    a = schema.accounts
    found = []
    for chunk in chunks(conn, select(a.c.id, a.c.balance).order_by(a.c.id)):
        marks = ",".join("?" * len(chunk))
        journal = {
            str(account): int(total)  # type: ignore[call-overload]
            for account, total in state.rows(
                f"SELECT account, total FROM account_sums WHERE party = ? AND account IN ({marks})",
                (bank, *[r.id for r in chunk]),
            )
        }
        for r in chunk:
            if journal.get(r.id, 0) != r.balance:
                found.append(
                    Finding(
                        bank,
                        codes.BALANCE_MISMATCH,
                        (f"account:{r.id}",),
                        f"holds {r.balance}, its journal as audited sums to {journal.get(r.id, 0)}",
                    )
                )
    return found


def read_instructions(
    conn: Connection, bank: str, state: AuditState, trust: TrustStore, progress: Progress
) -> list[Finding]:
    """Each balance instruction this intermediary signed to a card: signed by its engine,
    recorded as signed, never more than the card's shadow wallet held when it was signed; and
    the card's signed confirmation, where kept, names that very instruction. An instruction
    not yet confirmed is read again next time."""
    i, d = schema.instructions, schema.devices
    source = f"{bank}/instructions"
    start = int(state.cursor(source) or 0)
    resume: int | None = None
    last = start
    found: list[Finding] = []
    query = (
        select(i, d.c.customer_id)
        .join(d, d.c.id == i.c.device_id, isouter=True)
        .where(i.c.id > start)
        .order_by(i.c.id)
    )
    for chunk in chunks(conn, query):
        for row in chunk:
            found += _instruction(conn, bank, row, trust)
            if row.state == "issued" and resume is None:
                resume = row.id - 1
            last = row.id
        progress(len(chunk))
    state.advance(source, str(resume if resume is not None else last))
    return found + _unrecorded(conn, bank)


def _unrecorded(conn: Connection, bank: str) -> list[Finding]:
    """Every balance instruction a card's record says was issued is recorded: numbers 1 to the
    device's last issued number, none missing (counted by the database, per device)."""
    i, d = schema.instructions, schema.devices
    numbers = (
        select(
            i.c.device_id,
            func.count(func.distinct(i.c.instruction_no)).label("recorded"),
            func.max(i.c.instruction_no).label("highest"),
        )
        .group_by(i.c.device_id)
        .subquery()
    )
    query = (
        select(d.c.id, d.c.issued_no, numbers.c.recorded, numbers.c.highest)
        .join(numbers, numbers.c.device_id == d.c.id, isouter=True)
        .where(d.c.kind == "card", d.c.issued_no > 0)  # a terminal's are kept elsewhere
    )
    found = []
    for chunk in chunks(conn, query):
        for row in chunk:
            recorded, highest = int(row.recorded or 0), int(row.highest or 0)
            if recorded < row.issued_no or highest != row.issued_no:
                found.append(
                    Finding(
                        bank,
                        codes.INSTRUCTION_UNRECORDED,
                        (f"device:{row.id}",),
                        f"issued {row.issued_no} instructions, {recorded} recorded "
                        f"(highest {highest})",
                    )
                )
    return found


def _instruction(conn: Connection, bank: str, row: Any, trust: TrustStore) -> list[Finding]:
    record = (f"instruction:{row.id}", row.device_id)
    try:
        instr, _ = open_signed(
            bytes(row.payload),
            CardInstruction,
            trust,
            Role.ENGINE,
            receiver=row.device_id,
            institution=bank,
            check_revoked=False,
        )
    except OffpayError as exc:
        return [Finding(bank, codes.INSTRUCTION_INVALID, record, exc.message)]
    if (instr.instruction_no, instr.operation.value) != (row.instruction_no, row.operation):
        return [Finding(bank, codes.INSTRUCTION_INVALID, record, "recorded unlike it was signed")]
    found = []
    if row.journal_through is not None and row.customer_id is not None:
        j = schema.journal
        shadow = f"{row.customer_id}/shadow"
        held = conn.execute(
            select(func.coalesce(func.sum(j.c.delta), 0)).where(
                j.c.account_id == shadow, j.c.id <= row.journal_through
            )
        ).scalar_one()
        if instr.balance.minor > int(held):
            found.append(
                Finding(
                    bank,
                    codes.INSTRUCTION_BEYOND_SHADOW,
                    record,
                    f"gave the card {instr.balance.minor}, its shadow wallet held {int(held)}",
                )
            )
    if row.confirmation is not None:
        why = _confirmation_problem(bytes(row.confirmation), row, instr, bank, trust)
        if why:
            found.append(Finding(bank, codes.CONFIRMATION_INVALID, record, why))
    return found


def _confirmation_problem(
    data: bytes, row: Any, instr: CardInstruction, bank: str, trust: TrustStore
) -> str:
    try:
        conf, ident = open_signed(
            data,
            CardConfirmation,
            trust,
            Role.CARD,
            receiver=engine_id(bank),
            institution=bank,
            check_revoked=False,
        )
    except OffpayError as exc:
        return exc.message
    if ident.id != row.device_id or (conf.instruction_no, conf.nonce) != (
        instr.instruction_no,
        instr.nonce,
    ):
        return "the confirmation is of another instruction"
    if conf.balance != instr.balance:
        return f"the card applied {conf.balance}, the instruction said {instr.balance}"
    return ""
