"""Rows written through the driver's executemany (offpay.store.bulk) read back exactly as rows
written through SQLAlchemy would, on both backends, and a duplicate key refuses the batch."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from conftest import UrlFor
from offpay.store import schema
from offpay.store.bulk import insert_rows
from offpay.store.database import open_database

COLUMNS = ("tx_id", "device_id", "amount", "evidence", "payment")


def _row(i: int) -> tuple[bytes, str, int, bytes, bytes]:
    return (bytes([i]) * 16, f"card:{i}", 100 + i, bytes([i]) * 32, b"\x00signed" + bytes([i]))


def test_rows_and_constants_read_back_as_written(db_url: UrlFor) -> None:
    engine = open_database(db_url("bank"), schema.bank)
    when = dt.datetime(2026, 12, 5, 7, 30, 1, 250_000, tzinfo=dt.UTC)
    try:
        with engine.begin() as conn:
            insert_rows(
                conn,
                schema.debits,
                COLUMNS,
                [_row(1), _row(2)],
                {"notarised": False, "credited": True, "recorded_at": when},
            )
            conn.execute(  # the ORM's way, for comparison
                insert(schema.debits).values(
                    **dict(zip(COLUMNS, _row(3), strict=True)),
                    notarised=False,
                    credited=True,
                    recorded_at=when,
                )
            )
        d = schema.debits
        with engine.connect() as conn:
            rows = conn.execute(select(d).order_by(d.c.tx_id)).all()
        assert [tuple(r)[:5] for r in rows] == [_row(1), _row(2), _row(3)]
        assert {(r.notarised, r.credited) for r in rows} == {(False, True)}
        assert {r.recorded_at.replace(tzinfo=dt.UTC) for r in rows} == {when}
    finally:
        engine.dispose()


def test_a_duplicate_key_refuses_the_whole_batch(db_url: UrlFor) -> None:
    """Exactly once stays the primary key's job: no look-up first, and nothing of a batch
    that repeats a settled payment is written."""
    engine = open_database(db_url("bank"), schema.bank)
    try:
        with engine.begin() as conn:
            insert_rows(conn, schema.credits, COLUMNS, [_row(1)])
        with pytest.raises(IntegrityError), engine.begin() as conn:
            insert_rows(conn, schema.credits, COLUMNS, [_row(2), _row(1)])
        with engine.connect() as conn:
            ids = conn.execute(select(schema.credits.c.tx_id)).scalars().all()
        assert ids == [_row(1)[0]]
    finally:
        engine.dispose()


def test_no_rows_write_nothing(db_url: UrlFor) -> None:
    engine = open_database(db_url("bank"), schema.bank)
    try:
        with engine.begin() as conn:
            insert_rows(conn, schema.journal, ("account_id", "delta", "reason"), [])
        with engine.connect() as conn:
            assert conn.execute(select(schema.journal)).all() == []
    finally:
        engine.dispose()
