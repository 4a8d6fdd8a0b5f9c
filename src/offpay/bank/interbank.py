"""Talking to other intermediaries and to the central bank (report §3.7: payment requests).

Answering: another intermediary asks us to debit our customer for a payment it holds (a
debit request), or to credit our customer for one we are owed (a credit request). Each answer
is signed, addressed, names the payment exactly and is remembered, so a retry gets it again.
Asking: the same two requests the other way, and reserve moves at the central bank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offpay.bank.evidence import verify_payment
from offpay.central.bank import open_result
from offpay.crypto.pki import Identity, Role
from offpay.errors import Refused, ReplayError
from offpay.wire.codec import M
from offpay.wire.envelope import open_signed, payload_of, sign
from offpay.wire.messages import (
    CreditRequest,
    DebitRequest,
    OfflinePayment,
    ReserveTransfer,
    SettlementResult,
    SettlementStatus,
)

if TYPE_CHECKING:
    from offpay.bank.desks import Bank

CENTRAL_BANK = "central-bank"  # the central bank's name on the network


def from_bank(bank: Bank, data: bytes, cls: type[M]) -> tuple[M, Identity, bytes | None]:
    """A request from another intermediary: signed by it and addressed to us; with the
    answer we gave before if it is a retry (then nothing is done again)."""
    req, ident = open_signed(data, cls, bank.trust, Role.ENGINE, receiver=bank.id)
    return req, ident, bank.ledger.seen(ident.id, req.nonce)  # type: ignore[attr-defined]


class Interbank:
    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    # -- answering ------------------------------------------------------------------------------

    def debit_request(self, data: bytes) -> bytes:
        """Another intermediary asks us to pay out of our customer's shadow wallet. Unlike the
        pilot, which paid "without verification", we verify the payer card's signature."""
        bank = self.bank
        req, ident, cached = from_bank(bank, data, DebitRequest)
        if cached is not None:
            return cached
        payment = verify_payment(req.payment, bank.trust)
        receipt = b""
        # Any intermediary may present a payment our customer made: whoever holds the signed
        # payment (its payee's bank, or one holding it as a funding receipt) may settle it.
        if payment.payer_institution != bank.name:
            status, detail = SettlementStatus.REFUSED, "the payer is not our customer"
        else:
            status, detail, receipt = bank.debit_and_notarise(req.payment, payment)
            if receipt:
                bank.deliver_credit(req.payment, payment, receipt)
        return self.answer(ident.id, req, payment, status, detail, receipt)

    def credit_request(self, data: bytes) -> bytes:
        """The payer's intermediary debited and notarised a payment to our customer."""
        bank = self.bank
        req, ident, cached = from_bank(bank, data, CreditRequest)
        if cached is not None:
            return cached
        payment = verify_payment(req.payment, bank.trust)
        if payment.payee_institution != bank.name or payment.payer_institution != ident.institution:
            raise Refused("payment does not concern these two banks", code="bank.wrong_parties")
        status = bank.credit(req.payment, payment, req.notary_receipt)
        return self.answer(ident.id, req, payment, status, "", b"")

    def answer(
        self,
        to: str,
        req: DebitRequest | CreditRequest,
        payment: OfflinePayment,
        status: SettlementStatus,
        detail: str,
        receipt: bytes,
    ) -> bytes:
        """Signed, addressed, naming the payment exactly, and remembered for a retry."""
        bank = self.bank
        result = SettlementResult(
            bank.id,
            to,
            req.nonce,
            payment.tx_id,
            req.payment.digest,
            payment.amount,
            status,
            "",
            detail,
            receipt,
        )
        response = sign(result, bank.credential).to_bytes()
        with bank.db.begin() as conn:
            bank.ledger.remember(conn, to, req.nonce, response)
        return response

    # -- asking ---------------------------------------------------------------------------------

    def ask_bank(
        self, institution: str, kind: str, request: DebitRequest | CreditRequest
    ) -> SettlementResult:
        """Send a debit or credit request to ``institution``; its answer, checked to be the
        one to this request and about this very payment."""
        bank = self.bank
        data = bank.network.send(institution, kind, sign(request, bank.credential).to_bytes())
        result = open_result(data, bank.trust, request, Role.ENGINE, institution)
        payment = payload_of(request.payment, OfflinePayment)
        if result.tx_id != payment.tx_id:
            raise ReplayError("the answer is about another payment")
        return result

    def ask_central(self, kind: str, request: ReserveTransfer) -> SettlementResult:
        """A reserve move at the central bank; refused unless it was made as asked."""
        bank = self.bank
        data = bank.network.send(CENTRAL_BANK, kind, sign(request, bank.credential).to_bytes())
        result = open_result(data, bank.trust, request, Role.NOTARY)
        if result.status is not SettlementStatus.DONE or result.amount != request.amount:
            raise Refused("the central bank did not make the move", code="bank.reserve_refused")
        return result
