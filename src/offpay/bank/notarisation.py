"""Step 2 of settlement: the central bank's notary records each payment once, under a
pseudonym, which moves its value from the payer's intermediary to the payee's; its signed
receipt is what lets the payee's intermediary credit.

The notary knows a payment by its pseudonym and a commitment to its evidence, never by its id
(docs/notary-privacy.md); a payment debited before pseudonyms is known by its id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update

from offpay.bank.batch import BatchDesk
from offpay.central.bank import NOTARY_ID, open_result
from offpay.crypto.pki import Role
from offpay.crypto.pseudonyms import NotaryName, pseudonym
from offpay.errors import Refused, ReplayError
from offpay.money import Money
from offpay.store import schema
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import NotariseRequest, OfflinePayment, SettlementResult, SettlementStatus

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


class Notarisation:
    def __init__(self, bank: Bank, batch: BatchDesk) -> None:
        self.bank = bank
        self.batch = batch

    def pseudonym(self, tx_id: bytes) -> bytes:
        """What the notary knows our payment, refund or loan ``tx_id`` by."""
        return pseudonym(self.bank.pseudonym_key, tx_id)

    def notary_name(self, tx_id: bytes, evidence: bytes, *, refund: bool = False) -> NotaryName:
        """What the notary records the payment (or refund) we debited as ``tx_id`` under: its
        pseudonym, or its id for a debit made before pseudonyms (the notary knows it so)."""
        d = schema.debits
        with self.bank.db.connect() as conn:
            row = conn.execute(select(d.c.pseudonym).where(d.c.tx_id == tx_id)).first()
        if row is not None and row.pseudonym is None:
            return NotaryName.legacy(tx_id, evidence)
        return NotaryName.of(self.bank.pseudonym_key, tx_id, evidence, refund=refund)

    def ask_notary(
        self, name: NotaryName, payer: str, payee: str, amount: Money
    ) -> tuple[bytes, SettlementResult]:
        """Record a move from institution ``payer`` to ``payee`` with the notary (a payment,
        or a refund going the other way) under ``name``; returns its signed receipt and what
        it says (:func:`open_result` checks that it names ``name``)."""
        bank = self.bank
        request = NotariseRequest(
            sender=bank.id,
            receiver=NOTARY_ID,
            nonce=bank.nonce(),
            pseudonym=name.pseudonym,
            commitment=name.commitment,
            payer_institution=payer,
            payee_institution=payee,
            amount=amount,
        )
        receipt = bank.network.send(
            "central-bank", "notarise", sign(request, bank.credential).to_bytes()
        )
        return receipt, open_result(receipt, bank.trust, request, Role.NOTARY)

    def notarise(self, payment: OfflinePayment, signed: Signed[OfflinePayment]) -> bytes:
        """Record a payment we debited with the notary and mark its debit notarised; returns
        the notary's receipt. Refused if the notary refuses or answers about another one."""
        receipt, result = self.ask_notary(
            self.notary_name(payment.tx_id, signed.digest),
            payment.payer_institution,
            payment.payee_institution,
            payment.amount,
        )
        if result.amount != payment.amount:
            raise ReplayError("the notary's answer is about another payment")
        if result.status not in (SettlementStatus.DONE, SettlementStatus.ALREADY):
            raise Refused(
                f"the notary refused payment {payment.tx_id.hex()}",
                code=result.code or "central.refused",
            )
        with self.bank.db.begin() as conn:
            conn.execute(
                update(schema.debits)
                .where(schema.debits.c.tx_id == payment.tx_id)
                .values(notarised=True)
            )
        return receipt

    def recorded_as(
        self, receipt: bytes, signed: Signed[OfflinePayment], payment: OfflinePayment
    ) -> bytes | None:
        """A credit needs the notary's signed word that the payer's intermediary recorded
        this very payment; returns the pseudonym it was recorded under (None: before them)."""
        names = self.batch.recorded_as(receipt, [(signed.digest, payment)])
        if names is None:
            raise Refused("the notary receipt does not cover this payment", code="bank.no_receipt")
        return names[0]
