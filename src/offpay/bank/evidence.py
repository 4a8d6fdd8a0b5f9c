"""What makes an uploaded offline payment valid evidence for settlement.

Both parties signed it (report §3.5: "signed by both parties"): the payer card signed the
payment, the payee (terminal module or card) signed the request inside it. An intermediary
settles nothing on a payment whose two halves do not agree.
"""

from __future__ import annotations

from offpay.crypto.pki import PAYEE_ROLES, Role, TrustStore
from offpay.errors import CertificateError, EncodingError
from offpay.wire.envelope import Signed, open_signed
from offpay.wire.messages import OfflinePayment, PaymentRequest


def verify_payment(signed: Signed[OfflinePayment], trust: TrustStore) -> OfflinePayment:
    """The payment, if the payer's and the payee's signatures and their contents agree
    (:func:`verify_payment_and_request`)."""
    return verify_payment_and_request(signed, trust)[0]


def verify_payment_and_request(
    signed: Signed[OfflinePayment], trust: TrustStore
) -> tuple[OfflinePayment, PaymentRequest]:
    """The payment and the payee's request inside it, if the payer's and the payee's
    signatures and their contents agree: the request is decoded once, here.

    Revocation is not checked here: a payment a device signed before it was revoked is still
    genuine evidence, and the payer's intermediary decides whether it settles (the policy's
    window for a blocked card). Devices refuse revoked devices offline."""
    payment, payer = open_signed(
        signed, OfflinePayment, trust, Role.CARD, receiver=None, check_revoked=False
    )
    request, payee = open_signed(
        payment.request,
        PaymentRequest,
        trust,
        PAYEE_ROLES,
        receiver=payment.sender,
        check_revoked=False,
    )
    if payer.institution != payment.payer_institution:
        raise CertificateError("payment names another institution than its payer's certificate")
    if request.sender != payment.receiver or payee.institution != payment.payee_institution:
        raise CertificateError("payment is addressed to another party than its request's signer")
    if request.amount != payment.amount or request.payee_institution != payee.institution:
        raise EncodingError("payment and request disagree", code="wire.malformed.mismatch")
    if payment.payer_seq < 1:
        raise EncodingError("payment counter must be positive", code="wire.malformed.counter")
    return payment, request
