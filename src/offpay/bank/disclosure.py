"""A payment's evidence handed to the central bank in a dispute (issue 19, point 2).

The notary knows a payment only by a pseudonym and a commitment (offpay.crypto.pseudonyms);
the signed payment stays with the intermediaries. When the central bank needs it, it sends
the intermediary that notarised the payment a :class:`DisclosureRequest` signed by its notary
and addressed to that intermediary. Each request is logged (``disclosures``: who asked, when,
why, about what, and whether the evidence was handed over) before it is answered, and its
nonce is the log's key: a replayed request is refused, never answered twice. The answer, a
signed :class:`Disclosure`, carries the signed payment; the central bank checks it against
the notary's commitment and the devices' signatures (offpay.central.disclosure).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from offpay.bank.refusal import refund_id
from offpay.crypto.pki import Role
from offpay.errors import NotFound, Refused
from offpay.store import schema
from offpay.wire.envelope import Signed, open_signed, payload_of, sign
from offpay.wire.messages import Disclosure, DisclosureRequest, OfflinePayment

if TYPE_CHECKING:
    from offpay.bank.desks import Bank

REASON_MAX = 512  # characters of a reason the log keeps


def disclose(bank: Bank, data: bytes) -> bytes:
    """Answer the central bank's signed request for the evidence of the payment (or refund)
    ``bank`` recorded with the notary under the request's pseudonym."""
    req, ident = open_signed(
        data, DisclosureRequest, bank.trust, Role.NOTARY, receiver=bank.id, now=bank.clock()
    )
    if not req.reason.strip():
        raise Refused("a disclosure request must say why", code="bank.disclosure_reason")
    d = schema.debits
    with bank.db.connect() as conn:
        # A payment debited before pseudonyms is known to the notary by its id.
        named = (d.c.pseudonym == req.pseudonym) | (
            d.c.pseudonym.is_(None) & (d.c.tx_id == req.pseudonym)
        )
        row = conn.execute(select(d.c.tx_id, d.c.payment).where(named)).first()
    try:
        with bank.db.begin() as conn:
            conn.execute(
                insert(schema.disclosures).values(
                    nonce=req.nonce,
                    asked_by=ident.id,
                    pseudonym=req.pseudonym,
                    reason=req.reason[:REASON_MAX],
                    asked_at=bank.clock(),
                    disclosed=row is not None,
                )
            )
    except IntegrityError:
        raise Refused(
            "this disclosure request was answered before; a new request needs a new nonce",
            code="bank.disclosure_replayed",
        ) from None
    if row is None:
        raise NotFound(
            f"{bank.name} recorded no payment under pseudonym {req.pseudonym.hex()}",
            code="bank.disclosure_unknown",
        )
    signed: Signed[OfflinePayment] = Signed.from_bytes(bytes(row.payment))
    refund = bytes(row.tx_id) == refund_id(payload_of(signed, OfflinePayment).tx_id)
    answer = Disclosure(bank.id, ident.id, req.nonce, req.pseudonym, refund, signed)
    return sign(answer, bank.credential).to_bytes()
