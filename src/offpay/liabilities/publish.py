"""The intermediary's side: publish a period's signed commitment (its total must equal the
holdings the central bank states, signed, at that moment), keep each customer's leaf and salt,
and answer a customer's card-signed sync with the customer's inclusion proof."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from offpay.bank.desks import Bank
from offpay.crypto.pki import Role
from offpay.errors import OffpayError, Refused
from offpay.liabilities.messages import (
    HoldingsRequest,
    HoldingsStatement,
    InclusionProof,
    LiabilitiesAnswer,
    LiabilitiesCommitment,
    Sibling,
)
from offpay.liabilities.tree import Balances, Node, build, leaf
from offpay.money import Money
from offpay.store import schema
from offpay.wire.codec import encode
from offpay.wire.envelope import Signed, open_signed, payload_of, sign
from offpay.wire.messages import CardSession, Operation

CENTRAL = "central-bank"
NOTARY_ID = "central-bank/notary"
WALLETS = ("online", "shadow", "merchant")


class TotalMismatch(OffpayError):
    """The customers' wallets do not add up to the holdings the central bank states."""

    code = "liabilities.total_mismatch"


class NothingPublished(OffpayError):
    code = "liabilities.none_published"


class NotIncluded(OffpayError):
    """The customer has no leaf in the period's tree: the commitment leaves them out."""

    code = "liabilities.not_included"


def ask_holdings(bank: Bank) -> tuple[Signed[HoldingsStatement], HoldingsStatement]:
    """The central bank's signed statement of this intermediary's holdings, now."""
    nonce = bank.nonce()
    request = sign(HoldingsRequest(bank.id, NOTARY_ID, nonce), bank.credential).to_bytes()
    answer = bank.network.send(CENTRAL, "holdings-statement", request)
    statement, _ = open_signed(
        answer, HoldingsStatement, bank.trust, Role.NOTARY, receiver=bank.id, now=bank.clock()
    )
    if statement.nonce != nonce or statement.institution != bank.name:
        raise Refused("the central bank's statement answers another request", code="wire.replay")
    return Signed.from_bytes(answer), statement  # type: ignore[return-value]


def _balances(bank: Bank) -> dict[str, Balances]:
    """Every customer's three wallets, in one statement (one snapshot)."""
    a = schema.accounts
    wallets: dict[str, dict[str, int]] = {}
    with bank.db.connect() as conn:
        for customer, kind, balance in conn.execute(
            select(a.c.customer_id, a.c.kind, a.c.balance).order_by(a.c.customer_id)
        ):
            wallets.setdefault(customer, dict.fromkeys(WALLETS, 0))[kind] = int(balance)
    return {c: Balances(w["online"], w["shadow"], w["merchant"]) for c, w in wallets.items()}


def publish(bank: Bank) -> bytes:
    """Commit to every customer's wallets as of now, signed; :class:`TotalMismatch` (nothing
    published) if their total is not the holdings the central bank states. Salts are fresh
    per customer and period; leaves are ordered by their salt, so a position says nothing."""
    balances = _balances(bank)
    holdings, statement = ask_holdings(bank)
    total = sum(b.total for b in balances.values())
    if statement.holdings != Money(total, bank.currency):
        raise TotalMismatch(
            f"{bank.name}'s customers hold {Money(total, bank.currency)} but the central bank "
            f"states holdings of {statement.holdings} (payments or moves in flight settle "
            "first; retry); nothing was published"
        )
    rows = sorted(
        ((bank.random(32), customer, b) for customer, b in balances.items()),
        key=lambda row: hashlib.sha256(row[0]).digest(),
    )
    tree = build([leaf(customer, salt, b) for salt, customer, b in rows])
    c, lv = schema.liability_commitments, schema.liability_leaves
    now = bank.clock()
    try:
        with bank.db.begin() as conn:
            period = int(conn.execute(select(func.coalesce(func.max(c.c.period), 0))).scalar_one())
            period += 1
            commitment = LiabilitiesCommitment(
                bank.id,
                bank.name,
                period,
                int(now.timestamp()),
                bank.currency,
                total,
                tree.leaf_count,
                tree.root.hash,
                holdings,
            )
            signed = sign(commitment, bank.credential).to_bytes()
            conn.execute(
                insert(c).values(period=period, published_at=now, total=total, signed=signed)
            )
            if rows:
                conn.execute(
                    insert(lv),
                    [
                        {
                            "period": period,
                            "position": i,
                            "customer_id": customer,
                            "salt": salt,
                            "online": b.online,
                            "shadow": b.shadow,
                            "merchant": b.merchant,
                        }
                        for i, (salt, customer, b) in enumerate(rows)
                    ],
                )
    except IntegrityError:
        raise Refused(
            "another publication took this period; retry", code="service.conflict"
        ) from None
    return signed


def commitment(bank: Bank, period: int | None = None) -> tuple[int, bytes]:
    """The newest (or ``period``'s) signed commitment."""
    c = schema.liability_commitments
    query = select(c.c.period, c.c.signed)
    query = query.where(c.c.period == period) if period is not None else query
    with bank.db.connect() as conn:
        row = conn.execute(query.order_by(c.c.period.desc()).limit(1)).first()
    if row is None:
        raise NothingPublished(
            f"{bank.name} has published no liabilities commitment"
            + ("" if period is None else f" for period {period}")
        )
    return int(row.period), bytes(row.signed)


def proof_for(bank: Bank, customer_id: str, period: int) -> InclusionProof:
    """The customer's leaf and its siblings in ``period``'s tree (rebuilt from the leaves)."""
    lv = schema.liability_leaves
    with bank.db.connect() as conn:
        rows = conn.execute(select(lv).where(lv.c.period == period).order_by(lv.c.position)).all()
    mine = next((r for r in rows if r.customer_id == customer_id), None)
    if mine is None:
        raise NotIncluded(
            f"{customer_id} is not in {bank.name}'s liabilities commitment for period {period}"
        )
    nodes: list[Node] = [
        leaf(r.customer_id, bytes(r.salt), Balances(r.online, r.shadow, r.merchant)) for r in rows
    ]
    path = build(nodes).path(mine.position)
    return InclusionProof(
        bank.name,
        period,
        mine.position,
        customer_id,
        bytes(mine.salt),
        mine.online,
        mine.shadow,
        mine.merchant,
        tuple(Sibling(n.hash, n.sum) for n in path),
    )


def liabilities_proof(bank: Bank, data: bytes) -> bytes:
    """A card's signed sync session, handled as any sync, answered with the instruction and
    the customer's proof in the newest commitment: the card's signature (after its PIN) is
    what authenticates the customer, as on the phone's other routes. Everything that can
    refuse (the card, the commitment, the customer's leaf) is checked before the sync runs, so
    a refusal changes nothing."""
    request = bank.from_device(data, CardSession, Role.CARD)
    if request.message.operation is not Operation.SYNC:
        raise Refused("a proof comes with a sync session only", code="liabilities.not_a_sync")
    period, signed = commitment(bank)
    proof = proof_for(bank, request.device.customer_id, period)
    instruction = bank.card_session(data)  # the sync, at most once per nonce
    return encode(
        LiabilitiesAnswer(
            Signed.from_bytes(instruction),  # type: ignore[arg-type]
            Signed.from_bytes(signed),  # type: ignore[arg-type]
            proof,
        )
    )


def summary(signed: bytes) -> dict[str, Any]:
    """A signed commitment as JSON, for the operator and the event log (not verified)."""
    body = payload_of(Signed.from_bytes(signed), LiabilitiesCommitment)
    return {
        "institution": body.institution,
        "period": body.period,
        "published_at": body.published_at,
        "currency": body.currency,
        "total": body.total,
        "leaf_count": body.leaf_count,
        "root": body.root.hex(),
    }


def published_at(signed: bytes) -> dt.datetime:
    """When a signed commitment says it was published (not verified: for display)."""
    body = payload_of(Signed.from_bytes(signed), LiabilitiesCommitment)
    return dt.datetime.fromtimestamp(body.published_at, dt.UTC)
