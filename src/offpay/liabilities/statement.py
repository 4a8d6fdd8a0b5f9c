"""The central bank's side: a signed statement of one intermediary's holdings, answered to that
intermediary's engine only (the holdings a published commitment's total must equal)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine, select

from offpay.crypto.pki import Credential, Role, TrustStore
from offpay.errors import NotFound
from offpay.liabilities.messages import HoldingsRequest, HoldingsStatement
from offpay.money import Money
from offpay.store import schema
from offpay.store.seen import answered, remember
from offpay.wire.envelope import open_signed, sign


class CentralBank(Protocol):
    """What a statement needs of the central bank (:class:`offpay.central.bank.CentralBank`),
    named here so that the central bank's module, which registers this handler, is not
    imported back (no import circle)."""

    trust: TrustStore
    db: Engine
    currency: str
    notary: Credential
    clock: Callable[[], dt.datetime]


def holdings_statement(central: CentralBank, data: bytes, notary_id: str) -> bytes:
    req, ident = open_signed(
        data, HoldingsRequest, central.trust, Role.ENGINE, receiver=notary_id, now=central.clock()
    )
    t = schema.institutions
    with central.db.begin() as conn:
        cached = answered(conn, schema.central_seen, ident.id, req.nonce)
        if cached is not None:
            return cached
        holdings = conn.execute(select(t.c.holdings).where(t.c.name == ident.institution)).scalar()
        if holdings is None:
            raise NotFound(f"no intermediary named {ident.institution}")
        statement = HoldingsStatement(
            notary_id,
            ident.id,
            ident.institution,
            req.nonce,
            Money(int(holdings), central.currency),
            int(central.clock().timestamp()),
        )
        response = sign(statement, central.notary).to_bytes()
        remember(conn, schema.central_seen, ident.id, req.nonce, response)
    return response
