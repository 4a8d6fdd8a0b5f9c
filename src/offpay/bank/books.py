"""The books of a party, as plain JSON-ready records (amounts in minor units): what
``offpay books`` shows and what the back-office routes ``/v1/admin/books`` and
``/v1/admin/payments/{id}`` answer. Read-only; one reading for the process and the service."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.policy import LIMITS, limit_value
from offpay.store import schema


def _time(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return (t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)).isoformat()


def _hex(data: bytes | None) -> str | None:
    """A pseudonym as JSON carries it; None for rows written before pseudonyms."""
    return None if data is None else bytes(data).hex()


def _base64(data: bytes | None) -> str | None:
    """Signed evidence as JSON carries it; None for rows written before it was kept."""
    return None if data is None else base64.b64encode(bytes(data)).decode("ascii")


def bank_books(bank: Intermediary) -> dict[str, Any]:
    """Each customer's wallets and devices, the pending-settlement queue, anomalies, losses
    with their bounds, open shortfalls, refunds and the limits policy in force."""
    cu, ac, dv, rf = schema.customers, schema.accounts, schema.devices, schema.refunds
    with bank.db.connect() as conn:
        customers = conn.execute(select(cu).order_by(cu.c.id)).all()
        accounts = conn.execute(select(ac).order_by(ac.c.id)).all()
        devices = conn.execute(select(dv).order_by(dv.c.id)).all()
        refunds = conn.execute(select(rf).order_by(rf.c.queued_at)).all()
    by_customer: dict[str, dict[str, Any]] = {
        c.id: {"id": c.id, "name": c.name, "kind": c.kind, "wallets": {}, "devices": []}
        for c in customers
    }
    for a in accounts:
        by_customer[a.customer_id]["wallets"][a.kind] = a.balance
    for d in devices:
        by_customer[d.customer_id]["devices"].append(
            {
                "id": d.id,
                "kind": d.kind,
                "status": d.status,
                "blocked_at": _time(d.blocked_at),
                "released": bool(d.released),
                "sessions": d.last_session_no,  # syncs, top-ups and defunds so far
                "last_seq": d.last_seq,  # the device's counter as its last sync showed it
                "last_sync": _time(d.last_sync_at),  # this intermediary's clock; None: never
            }
        )
    policy = bank.current_policy()
    return {
        "bank": bank.name,
        "currency": bank.currency,
        "customers": list(by_customer.values()),
        "pending": [
            {
                "tx_id": p.tx_id.hex(),
                "direction": p.direction,
                "device": p.device,
                "counterparty": p.counterparty,
                "amount": p.amount.minor,
                "since": _time(p.since),
            }
            for p in bank.pending()
        ],
        "anomalies": [
            {"kind": kind, "device": device, "detail": detail}
            for kind, device, detail in bank.anomalies()
        ],
        "losses": [
            {
                "device": loss.device,
                "tx_id": loss.tx_id.hex() if loss.tx_id is not None else None,
                "amount": loss.amount.minor,
                "bound": loss.bound.minor,
                "detail": loss.detail,
            }
            for loss in bank.losses()
        ],
        "shortfalls": [
            {"tx_id": tx.hex(), "device": device, "amount": amount.minor}
            for tx, device, amount in bank.open_shortfalls()
        ],
        "refunds": [
            {
                "tx_id": bytes(r.tx_id).hex(),
                "device": r.device_id,
                "amount": r.amount,
                "open": bool(r.open),
                "queued_at": _time(r.queued_at),
                "done_at": _time(r.done_at),
            }
            for r in refunds
        ],
        "policy": None if policy is None else policy_record(policy[1]),
        "disclosures": _disclosures(bank),
    }


def _disclosures(bank: Intermediary) -> list[dict[str, Any]]:
    """The central bank's requests for a payment's evidence, oldest first: who asked, when,
    why, about which pseudonym, and whether the evidence was handed over."""
    t = schema.disclosures
    with bank.db.connect() as conn:
        rows = conn.execute(select(t).order_by(t.c.asked_at)).all()
    return [
        {
            "asked_by": r.asked_by,
            "asked_at": _time(r.asked_at),
            "pseudonym": bytes(r.pseudonym).hex(),
            "reason": r.reason,
            "disclosed": bool(r.disclosed),
        }
        for r in rows
    ]


def policy_record(policy: Any) -> dict[str, Any]:
    """A :class:`~offpay.wire.messages.LimitsPolicy` as JSON (amounts in minor units)."""
    return {
        "issuer": policy.issuer,
        "version": policy.version,
        "currency": policy.currency,
        "liquidity": policy.liquidity.value,
        # every limit, None where the policy sets none (offpay.policy.LIMITS)
        **{f.name: limit_value(policy, f.name) for f in LIMITS},
    }


def central_books(central: CentralBank) -> dict[str, Any]:
    """Issuance, each intermediary's reserve and holdings, the liquidity pool, the notary's
    count and newest records, and the revocation list."""
    issued, tokens, _ = central.audit_totals()
    pool = central.pool_status()
    return {
        "currency": central.currency,
        "issued": issued.minor,
        "tokens": tokens.minor,
        "positions": {
            p.institution: {"reserve": p.reserve.minor, "holdings": p.holdings.minor}
            for p in central.positions()
        },
        "pool": {
            "size": pool.size.minor,
            "available": pool.available.minor,
            "outstanding": pool.outstanding.minor,
            "peak_outstanding": pool.peak_outstanding.minor,
            "drawn_total": pool.drawn_total.minor,
            "loans": pool.loans,
        },
        "notarised": central.notarised_count(),
        "recent_notary": _recent_notary(central),
        "revoked": central.revoked_devices(),
    }


RECENT_NOTARY = 20  # the newest notary records the books show; one payment's by its id


def _recent_notary(central: CentralBank) -> list[dict[str, Any]]:
    n = schema.notary
    query = select(n).order_by(n.c.recorded_at.desc()).limit(RECENT_NOTARY)
    with central.db.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "pseudonym": bytes(row.pseudonym).hex(),
            "payer_institution": row.payer_institution,
            "payee_institution": row.payee_institution,
            "amount": row.amount,
            "recorded_at": _time(row.recorded_at),
        }
        for row in rows
    ]


def _payment_id(conn: Connection, named: bytes) -> bytes:
    """The id of the payment ``named`` by its id or by the notary's pseudonym of it (what the
    central bank's books show): the operator follows a notary record to the payment."""
    d, c = schema.debits, schema.credits
    for table in (d, c):
        if conn.execute(select(table.c.tx_id).where(table.c.tx_id == named)).first():
            return named
    for table in (d, c):
        row = conn.execute(select(table.c.tx_id).where(table.c.pseudonym == named)).first()
        if row is not None:
            return bytes(row.tx_id)
    return named


def bank_payment(bank: Intermediary, tx_id: bytes) -> dict[str, Any]:
    """What this intermediary records of one payment (by its id, or by the pseudonym the
    notary knows it by): its debit (as the payer's bank), its
    credit (as the payee's), and the queues it went through, each with its time. The debit
    and the credit carry the signed payment as it was settled (base64), the evidence a
    dispute needs: both signatures and certificate chains, not only its digest."""
    d, c = schema.debits, schema.credits
    s, r, w = schema.shortfalls, schema.refunds, schema.awaited
    with bank.db.connect() as conn:
        tx_id = _payment_id(conn, tx_id)
        debit = conn.execute(select(d).where(d.c.tx_id == tx_id)).first()
        credit = conn.execute(select(c).where(c.c.tx_id == tx_id)).first()
        shortfall = conn.execute(select(s).where(s.c.tx_id == tx_id)).first()
        refund = conn.execute(select(r).where(r.c.tx_id == tx_id)).first()
        awaited = conn.execute(select(w).where(w.c.tx_id == tx_id)).first()
    return {
        "bank": bank.name,
        "tx_id": tx_id.hex(),
        "debit": None
        if debit is None
        else {
            "device": debit.device_id,
            "amount": debit.amount,
            "evidence": bytes(debit.evidence).hex(),
            "pseudonym": _hex(debit.pseudonym),
            "signed_payment": _base64(debit.payment),
            "notarised": bool(debit.notarised),
            "credited": bool(debit.credited),
            "recorded_at": _time(debit.recorded_at),
        },
        "credit": None
        if credit is None
        else {
            "device": credit.device_id,
            "amount": credit.amount,
            "evidence": bytes(credit.evidence).hex(),
            "pseudonym": _hex(credit.pseudonym),
            "signed_payment": _base64(credit.payment),
            "recorded_at": _time(credit.recorded_at),
        },
        "shortfall": None
        if shortfall is None
        else {
            "device": shortfall.device_id,
            "amount": shortfall.amount,
            "open": bool(shortfall.open),
            "queued_at": _time(shortfall.queued_at),
            "settled_at": _time(shortfall.settled_at),
        },
        "awaited": None
        if awaited is None
        else {
            "device": awaited.device_id,
            "payer": awaited.payer,
            "amount": awaited.amount,
            "open": bool(awaited.open),
            "since": _time(awaited.since),
        },
        "refund": None
        if refund is None
        else {
            "device": refund.device_id,
            "amount": refund.amount,
            "open": bool(refund.open),
            "queued_at": _time(refund.queued_at),
            "done_at": _time(refund.done_at),
        },
    }


def notary_record(central: CentralBank, pseudonym: bytes) -> dict[str, Any]:
    """The notary's record of one payment, by the pseudonym it knows it by (None if it never
    notarised it): the notary knows no payment id. The intermediaries' books
    (:func:`bank_payment`) say which pseudonym a payment of theirs has."""
    n = schema.notary
    with central.db.connect() as conn:
        row = conn.execute(select(n).where(n.c.pseudonym == pseudonym)).first()
    return {
        "pseudonym": pseudonym.hex(),
        "notary": None
        if row is None
        else {
            "payer_institution": row.payer_institution,
            "payee_institution": row.payee_institution,
            "amount": row.amount,
            "commitment": bytes(row.commitment).hex(),
            "recorded_by": row.recorded_by,
            "recorded_at": _time(row.recorded_at),
        },
    }


def recorded_as(tx_id: bytes, payments: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The pseudonym the notary knows payment ``tx_id`` by, from what the intermediaries'
    books say of it (:func:`bank_payment`, per intermediary): its debit's, else its credit's.
    A payment settled before pseudonyms, or not yet, is looked up by its id."""
    for side in ("debit", "credit"):
        for record in payments.values():
            row = record.get(side)
            if row is not None and row.get("pseudonym"):
                return bytes.fromhex(row["pseudonym"])
    return tx_id
