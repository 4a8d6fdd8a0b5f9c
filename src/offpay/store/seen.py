"""At-most-once acceptance of requests: every (sender, nonce) a service answered, with the
answer, so that a retried or replayed request gets the same answer and moves nothing again."""

from __future__ import annotations

from sqlalchemy import Connection, Table, insert, select


def answered(conn: Connection, table: Table, sender: str, nonce: bytes) -> bytes | None:
    row = conn.execute(
        select(table.c.response).where(table.c.sender == sender, table.c.nonce == nonce)
    ).first()
    return None if row is None else bytes(row.response)


def remember(conn: Connection, table: Table, sender: str, nonce: bytes, response: bytes) -> None:
    conn.execute(insert(table).values(sender=sender, nonce=nonce, response=response))
