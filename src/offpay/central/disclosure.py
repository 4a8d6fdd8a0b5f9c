"""The central bank's side of a dispute (issue 19, point 2): asking the intermediary that
notarised a payment for its evidence, and checking what comes back.

The notary holds a pseudonym, a commitment, an amount and two institutions; the evidence stays
with the intermediary that recorded it (offpay.bank.disclosure). A disclosure is accepted only
if it is the signed answer of that intermediary to this very request, its payment's evidence
matches the notary's commitment, both devices' signatures verify, and the amount and the
institutions are the ones the notary recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from offpay.bank.evidence import verify_payment
from offpay.bank.names import engine_id
from offpay.central.bank import NOTARY_ID, CentralBank
from offpay.crypto.pki import Role
from offpay.crypto.pseudonyms import commitment
from offpay.errors import NotFound, Refused, ReplayError
from offpay.store import schema
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import Disclosure, DisclosureRequest, OfflinePayment

Send = Callable[[str, str, bytes], bytes]  # institution, request kind, signed request -> answer


@dataclass(frozen=True)
class Disclosed:
    """A payment's evidence, as the central bank checked it."""

    pseudonym: bytes
    institution: str  # the intermediary that recorded and disclosed it
    refund: bool  # recorded as the refund of this payment
    payment: OfflinePayment
    signed: Signed[OfflinePayment]


def recorded_by(central: CentralBank, pseudonym: bytes) -> tuple[str, bytes, str, str, int]:
    """The notary's record under ``pseudonym``: who recorded it, the commitment, the
    institutions (payer's, payee's) and the amount."""
    n = schema.notary
    with central.db.connect() as conn:
        row = conn.execute(select(n).where(n.c.pseudonym == pseudonym)).first()
    if row is None:
        raise NotFound(
            f"the notary recorded nothing under {pseudonym.hex()}", code="central.no_such_payment"
        )
    institution = row.payer_institution
    return (
        institution,
        bytes(row.commitment),
        row.payer_institution,
        row.payee_institution,
        row.amount,
    )


def disclosure_request(
    central: CentralBank, pseudonym: bytes, reason: str
) -> tuple[str, DisclosureRequest, bytes]:
    """The intermediary to ask, the request and its signed bytes."""
    if not reason.strip():
        raise Refused("say why the evidence is needed (--reason)", code="central.disclosure_reason")
    institution = recorded_by(central, pseudonym)[0]
    request = DisclosureRequest(
        NOTARY_ID, engine_id(institution), os.urandom(16), pseudonym, reason
    )
    return institution, request, sign(request, central.notary).to_bytes()


def check_disclosure(central: CentralBank, request: DisclosureRequest, answer: bytes) -> Disclosed:
    """The disclosed payment, if ``answer`` is what the notary's record and ``request`` say."""
    institution, committed, payer, payee, amount = recorded_by(central, request.pseudonym)
    disclosure, _ = open_signed(
        Signed.from_bytes(answer),
        Disclosure,
        central.trust,
        Role.ENGINE,
        receiver=NOTARY_ID,
        institution=institution,
        now=central.clock(),
    )
    if (disclosure.nonce, disclosure.pseudonym) != (request.nonce, request.pseudonym):
        raise ReplayError("the disclosure answers another request")
    payment = verify_payment(disclosure.payment, central.trust)
    refund = disclosure.refund
    expected = (payee, payer) if refund else (payer, payee)
    digest = disclosure.payment.digest
    if (
        committed not in (commitment(digest, refund=refund), digest)  # digest: before pseudonyms
        or (payment.payer_institution, payment.payee_institution) != expected
        or payment.amount.minor != amount
    ):
        raise Refused(
            "the disclosed payment is not the one the notary recorded",
            code="central.disclosure_mismatch",
        )
    return Disclosed(request.pseudonym, institution, refund, payment, disclosure.payment)


def ask_disclosure(central: CentralBank, send: Send, pseudonym: bytes, reason: str) -> Disclosed:
    """Ask the intermediary that recorded ``pseudonym`` for its evidence and check it."""
    institution, request, data = disclosure_request(central, pseudonym, reason)
    return check_disclosure(central, request, send(institution, "disclosure-request", data))
