"""The ledger: an intermediary's storage, and the one place that writes its wallets.

Every desk of the intermediary (settlement, batches, refusals, liquidity, containment,
tokens) moves money, records anomalies, registers devices and remembers the answers it gave
through this class, inside the transaction the caller opened, so that a step and its bookings
commit or roll back together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, insert, select, update

from offpay.errors import InsufficientFunds, NotFound, Refused
from offpay.money import Money
from offpay.store import schema
from offpay.store.seen import answered, remember


class Ledger:
    """The intermediary ``name``'s tables in ``db``, in ``currency``."""

    def __init__(self, db: Engine, name: str, currency: str) -> None:
        self.db = db
        self.name = name
        self.currency = currency

    # -- wallets --------------------------------------------------------------------------------

    def move(
        self,
        conn: Connection,
        source: str | None,
        target: str | None,
        minor: int,
        reason: str,
        reference: bytes | None,
    ) -> None:
        """Move money between two wallets of this intermediary in the caller's transaction;
        ``None`` is the outside (the central bank or another intermediary)."""
        a = schema.accounts
        if source is not None:
            done = conn.execute(
                update(a)
                .where(a.c.id == source, a.c.balance >= minor)
                .values(balance=a.c.balance - minor)
            )
            if done.rowcount != 1:
                have = conn.execute(select(a.c.balance).where(a.c.id == source)).scalar()
                if have is None:
                    raise NotFound(f"no account {source}")
                raise InsufficientFunds(
                    f"{source} holds {Money(have, self.currency)}, "
                    f"not {Money(minor, self.currency)}"
                )
            conn.execute(
                insert(schema.journal).values(
                    account_id=source, delta=-minor, reason=reason, reference=reference
                )
            )
        if target is not None:
            done = conn.execute(
                update(a).where(a.c.id == target).values(balance=a.c.balance + minor)
            )
            if done.rowcount != 1:
                raise NotFound(f"no account {target}")
            conn.execute(
                insert(schema.journal).values(
                    account_id=target, delta=minor, reason=reason, reference=reference
                )
            )

    # -- devices --------------------------------------------------------------------------------

    def register_device(self, device_id: str, kind: str, customer_id: str, account: str) -> None:
        """Record a device before it is personalised; a retry after a cut issuance finds the
        same record and carries on."""
        d = schema.devices
        with self.db.begin() as conn:
            row = conn.execute(select(d).where(d.c.id == device_id)).first()
            if row is not None:
                if (row.kind, row.customer_id) != (kind, customer_id):
                    raise Refused(
                        f"{device_id} is issued to someone else", code="bank.device_taken"
                    )
                return
            conn.execute(
                insert(d).values(
                    id=device_id,
                    kind=kind,
                    customer_id=customer_id,
                    account_id=account,
                    status="active",
                    issued_no=0,
                    last_seq=0,
                    last_session_no=0,
                )
            )

    def device(self, device_id: str) -> Row[Any]:
        with self.db.connect() as conn:
            row = conn.execute(
                select(schema.devices).where(schema.devices.c.id == device_id)
            ).first()
        if row is None:
            raise NotFound(f"{device_id} is not a device of {self.name}")
        return row

    # -- answers given (at most once) -----------------------------------------------------------

    def seen(self, sender: str, nonce: bytes) -> bytes | None:
        """The answer given to ``sender``'s request ``nonce``, if it was answered."""
        with self.db.connect() as conn:
            return answered(conn, schema.bank_seen, sender, nonce)

    def remember(self, conn: Connection, sender: str, nonce: bytes, response: bytes) -> None:
        remember(conn, schema.bank_seen, sender, nonce, response)

    # -- anomalies ------------------------------------------------------------------------------

    def anomaly(self, kind: str, device: str | None, tx_id: bytes | None, detail: str) -> None:
        with self.db.begin() as conn:
            self.anomaly_in(conn, kind, device, tx_id, detail)

    def anomaly_in(
        self, conn: Connection, kind: str, device: str | None, tx_id: bytes | None, detail: str
    ) -> None:
        conn.execute(
            insert(schema.anomalies).values(kind=kind, device_id=device, tx_id=tx_id, detail=detail)
        )

    def anomalies(self) -> list[tuple[str, str | None, str]]:
        with self.db.connect() as conn:
            rows = conn.execute(select(schema.anomalies).order_by(schema.anomalies.c.id)).all()
        return [(r.kind, r.device_id, r.detail) for r in rows]
