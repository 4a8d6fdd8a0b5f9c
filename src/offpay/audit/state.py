"""The auditor's own memory, in its own SQLite file outside every party's database: where
each table was read up to, an index of every payment seen (from its debit, notary record and
credit), running sums of the journals, and the findings so far. A second run reads only new
rows and checks them against this index; a payment still in flight stays open until it
completes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from offpay.audit.findings import Finding

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (source TEXT PRIMARY KEY, position TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payments (
    tx_id BLOB PRIMARY KEY,
    n_key BLOB,
    d_bank TEXT, d_amount INTEGER, d_evidence BLOB, d_commit BLOB, d_credited INTEGER,
    c_bank TEXT, c_amount INTEGER, c_evidence BLOB, c_commit BLOB,
    c_verified INTEGER NOT NULL DEFAULT 0,
    j_out INTEGER NOT NULL DEFAULT 0, j_out_rows INTEGER NOT NULL DEFAULT 0,
    j_in INTEGER NOT NULL DEFAULT 0, j_in_rows INTEGER NOT NULL DEFAULT 0,
    j_out_bank TEXT, j_in_bank TEXT,
    open INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS payments_open ON payments (open) WHERE open = 1;
CREATE INDEX IF NOT EXISTS payments_debits ON payments (d_bank);
CREATE INDEX IF NOT EXISTS payments_credits ON payments (c_bank);
CREATE INDEX IF NOT EXISTS payments_names ON payments (n_key);
CREATE TABLE IF NOT EXISTS notary_records (
    key BLOB PRIMARY KEY, payer TEXT NOT NULL, payee TEXT NOT NULL, amount INTEGER NOT NULL,
    commit_ BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_rows (
    party TEXT NOT NULL, id INTEGER NOT NULL, account TEXT NOT NULL, delta INTEGER NOT NULL,
    digest BLOB NOT NULL, PRIMARY KEY (party, id)
);
CREATE TABLE IF NOT EXISTS account_sums (
    party TEXT NOT NULL, account TEXT NOT NULL, total INTEGER NOT NULL, rows INTEGER NOT NULL,
    PRIMARY KEY (party, account)
);
CREATE TABLE IF NOT EXISTS findings (
    party TEXT NOT NULL, code TEXT NOT NULL, records TEXT NOT NULL, detail TEXT NOT NULL,
    run INTEGER NOT NULL, PRIMARY KEY (party, code, records)
);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, rows INTEGER NOT NULL);
"""


class AuditState:
    """The state file at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.run = int(self.db.execute("INSERT INTO runs (rows) VALUES (0)").lastrowid or 0)

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def commit(self) -> None:
        self.db.commit()

    # -- cursors --------------------------------------------------------------------------------

    def cursor(self, source: str) -> str | None:
        row = self.db.execute("SELECT position FROM cursors WHERE source = ?", (source,)).fetchone()
        return None if row is None else str(row[0])

    def advance(self, source: str, position: str) -> None:
        self.db.execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT (source) DO UPDATE "
            "SET position = excluded.position",
            (source, position),
        )

    # -- findings -------------------------------------------------------------------------------

    def record(self, findings: Iterable[Finding]) -> int:
        """Keep ``findings``; returns how many were new (one seen before is kept once)."""
        before = self.db.total_changes
        self.db.executemany(
            "INSERT OR IGNORE INTO findings VALUES (?, ?, ?, ?, ?)",
            [(f.party, f.code, "\x1f".join(f.records), f.detail, self.run) for f in findings],
        )
        return self.db.total_changes - before

    def findings(self, *, this_run: bool = False) -> list[Finding]:
        where = " WHERE run = ?" if this_run else ""
        args = (self.run,) if this_run else ()
        rows = self.db.execute(f"SELECT party, code, records, detail FROM findings{where}", args)
        return sorted(Finding(p, c, tuple(r.split("\x1f")) if r else (), d) for p, c, r, d in rows)

    def rows(self, query: str, args: Iterable[object] = ()) -> Iterator[tuple[object, ...]]:
        return iter(self.db.execute(query, tuple(args)))
