"""A recipient may refuse a payment, and a payment that never reached its recipient is given
back (report §3.8: "a recipient should be able to choose not to receive a payment"; the shop
that never received a payment still got the money when the customer synchronised).

The rule (README, "Lost payments and refusal"):

* A payee device (terminal module or card) declines a payment request by cancelling it, and
  every request still open when the device synchronises lapses into a decline then. Once
  declined, the device refuses any payment answering that request. The device declares its
  declines, inside its signed upload or session, at that synchronisation.
* A payment whose request its payee declared declined is never kept by the payee. If it reaches
  the payee's intermediary after the declaration, it is credited and at once refunded; if it was
  credited before (the payer synchronised first), it is refunded when the declaration arrives.
* A refund is a reverse payment with its own id, derived from the payment's: the payee's
  intermediary debits the payee, the notary records the refund once under that id, and the
  payer's intermediary credits the payer's shadow wallet, which the card receives at its next
  synchronisation. A refund the payee's wallet cannot cover yet is owed, and is made when money
  reaches that wallet or at ``retry_pending``.

Time windows: a request is open from the moment the payee signs it until it is answered,
cancelled, or the payee's next synchronisation; the decline is final then. A refund reaches the
payer at the payer's first synchronisation after both the payment and the decline reached
the network. A payment already received by the payee cannot be declined (the device accepted
it), so a payment settles to its payee exactly once or comes back to its payer exactly once.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from offpay.bank.interbank import from_bank
from offpay.bank.names import engine_id
from offpay.central.bank import open_result
from offpay.crypto.pki import Role
from offpay.crypto.pseudonyms import commitment
from offpay.errors import InsufficientFunds, OffpayError, Refused, ReplayError
from offpay.money import Money
from offpay.store import schema
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import (
    MAX_DECLINED,
    OfflinePayment,
    PaymentRequest,
    RefundRequest,
    SettlementResult,
    SettlementStatus,
)

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


def refund_id(tx_id: bytes) -> bytes:
    """The refund's own id: derived, so that every party names the same refund, and never a
    payment's id (those are derived from a card and its counter under another label)."""
    return hashlib.sha256(b"offpay-refund\x00" + tx_id).digest()[:16]


def request_id_of(payment: OfflinePayment) -> bytes:
    return _request_id(payment.request.payload)


@lru_cache(maxsize=4096)
def _request_id(payload: bytes) -> bytes:
    """Read from the signed request's payload, once: a batch asks for it several times."""
    return decode(payload, PaymentRequest).request_id


class Refusals:
    """The payee's intermediary's side (declines, refunds out) and the payer's (refunds in)."""

    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    # -- the payee's intermediary -----------------------------------------------------------

    def declare(self, device_id: str, request_ids: tuple[bytes, ...]) -> int:
        """Record what a device declared declined, and refund what was already credited for
        those requests; returns how many declines were new."""
        bank, dec, c = self.bank, schema.declines, schema.credits
        if len(request_ids) > MAX_DECLINED:
            raise Refused(
                f"a device declares at most {MAX_DECLINED} declined requests per sync",
                code="bank.too_many_declines",
            )
        new = 0
        with bank.db.begin() as conn:
            for request_id in dict.fromkeys(request_ids):
                known = conn.execute(
                    select(dec.c.device_id).where(dec.c.request_id == request_id)
                ).first()
                if known is None:
                    conn.execute(
                        insert(dec).values(
                            request_id=request_id, device_id=device_id, declared_at=bank.clock()
                        )
                    )
                    new += 1
        if not request_ids:
            return 0
        with bank.db.connect() as conn:
            credited = conn.execute(
                select(c.c.tx_id).where(
                    c.c.device_id == device_id,
                    c.c.request_id.in_(list(request_ids)),
                    c.c.tx_id.not_in(select(schema.refunds.c.tx_id)),  # refunded, or owed
                )
            ).scalars()
            tx_ids = [bytes(t) for t in credited]
        for tx_id in tx_ids:
            self._refund_credit(tx_id)
        return new

    def declined(self, payment: OfflinePayment) -> bool:
        dec = schema.declines
        with self.bank.db.connect() as conn:
            row = conn.execute(
                select(dec.c.device_id).where(dec.c.request_id == request_id_of(payment))
            ).first()
        return row is not None and row.device_id == payment.receiver

    def _refund_credit(self, tx_id: bytes) -> None:
        """Refund a payment credited to our device, from the evidence kept with its credit."""
        with self.bank.db.connect() as conn:
            evidence = conn.execute(
                select(schema.credits.c.payment).where(schema.credits.c.tx_id == tx_id)
            ).scalar_one()
        signed: Signed[OfflinePayment] = Signed.from_bytes(bytes(evidence))
        self.refund(signed, self.bank.verified(signed))

    def refund(self, signed: Signed[OfflinePayment], payment: OfflinePayment) -> bool:
        """Give a declined payment back to its payer; True once it is on its way. Each step is
        keyed by the refund id, so a retry after any cut repeats nothing."""
        bank, r = self.bank, schema.refunds
        rid = refund_id(payment.tx_id)
        with bank.db.begin() as conn:
            row = conn.execute(select(r).where(r.c.refund_id == rid)).first()
            if row is None:
                conn.execute(
                    insert(r).values(
                        refund_id=rid,
                        tx_id=payment.tx_id,
                        device_id=payment.receiver,
                        amount=payment.amount.minor,
                        open=True,
                        queued_at=bank.clock(),
                    )
                )
                bank.ledger.anomaly_in(
                    conn,
                    "refund",
                    payment.receiver,
                    payment.tx_id,
                    f"{payment.amount} from {payment.sender} refunded: its payee declined the "
                    "request",
                )
            elif not row.open:
                return True
        device = bank.device(payment.receiver)
        try:
            with bank.db.begin() as conn:
                if conn.execute(select(r.c.open).where(r.c.refund_id == rid)).scalar_one():
                    bank.ledger.move(
                        conn, device.account_id, None, payment.amount.minor, "refund-out", rid
                    )
                    conn.execute(
                        insert(schema.debits).values(
                            tx_id=rid,
                            device_id=payment.receiver,
                            amount=payment.amount.minor,
                            evidence=signed.digest,
                            payment=signed.to_bytes(),
                            notarised=False,
                            credited=False,
                            pseudonym=bank.pseudonym(rid),
                        )
                    )
                    conn.execute(
                        update(r)
                        .where(r.c.refund_id == rid)
                        .values(open=False, done_at=bank.clock())
                    )
        except InsufficientFunds:
            return False  # owed: made when money reaches the payee (retry)
        except IntegrityError:
            pass  # a racing retry debited it first
        self.deliver(signed, payment)
        return True

    def deliver(self, signed: Signed[OfflinePayment], payment: OfflinePayment) -> None:
        """Notarise the refund and have the payer's intermediary credit it."""
        bank = self.bank
        rid = refund_id(payment.tx_id)
        try:
            receipt, result = bank.ask_notary(
                bank.notary_name(rid, signed.digest, refund=True),
                payment.payee_institution,  # the other way
                payment.payer_institution,
                payment.amount,
            )
        except OffpayError:
            return  # left for retry_pending: the debit row says it is not notarised
        if result.status not in (SettlementStatus.DONE, SettlementStatus.ALREADY):
            raise Refused(f"the notary refused refund {rid.hex()}", code=result.code)
        d = schema.debits
        with bank.db.begin() as conn:
            conn.execute(update(d).where(d.c.tx_id == rid).values(notarised=True))
        if payment.payer_institution == bank.name:
            status = self.credit_refund(signed, payment, receipt)
        else:
            ask = RefundRequest(
                sender=bank.id,
                receiver=engine_id(payment.payer_institution),
                nonce=bank.nonce(),
                payment=signed,
                notary_receipt=receipt,
            )
            try:
                data = bank.network.send(
                    payment.payer_institution,
                    "refund-request",
                    sign(ask, bank.credential).to_bytes(),
                )
                answer = open_result(data, bank.trust, ask, Role.ENGINE, payment.payer_institution)
            except OffpayError:
                return  # left for retry_pending: the debit row says it is not credited
            if answer.tx_id != rid:
                raise ReplayError("the answer is about another refund")
            status = answer.status
        if status in (SettlementStatus.DONE, SettlementStatus.ALREADY):
            with bank.db.begin() as conn:
                conn.execute(update(d).where(d.c.tx_id == rid).values(credited=True))

    def retry(self) -> int:
        """Refunds owed, and refunds a cut left half done; returns how many were tried."""
        bank, r, d = self.bank, schema.refunds, schema.debits
        with bank.db.connect() as conn:
            unfinished = (
                conn.execute(
                    select(d.c.payment)
                    .join(r, r.c.refund_id == d.c.tx_id)
                    .where(d.c.notarised.is_(False) | d.c.credited.is_(False))
                )
                .scalars()
                .all()
            )
        owed = self.retry_owed_for(None)
        for data in unfinished:
            signed: Signed[OfflinePayment] = Signed.from_bytes(bytes(data))
            self.deliver(signed, bank.verified(signed))
        return owed + len(unfinished)

    def retry_owed_for(self, device_id: str | None) -> int:
        """Money reached ``device_id``'s wallet (None: any): make the refunds it owes; returns
        how many were tried."""
        r = schema.refunds
        query = select(r.c.tx_id).where(r.c.open.is_(True))
        if device_id is not None:
            query = query.where(r.c.device_id == device_id)
        with self.bank.db.connect() as conn:
            owed = conn.execute(query).scalars().all()
        for tx_id in owed:
            self._refund_credit(bytes(tx_id))
        return len(owed)

    def owed(self) -> list[tuple[bytes, str, Money]]:
        """Refunds our payees owe and their wallets cannot cover yet: (payment id, device,
        amount)."""
        r = schema.refunds
        with self.bank.db.connect() as conn:
            rows = conn.execute(select(r).where(r.c.open.is_(True)).order_by(r.c.queued_at)).all()
        return [(bytes(x.tx_id), x.device_id, Money(x.amount, self.bank.currency)) for x in rows]

    # -- the payer's intermediary -----------------------------------------------------------

    def refund_request(self, data: bytes) -> bytes:
        """The payee's intermediary gives back a payment our customer made."""
        bank = self.bank
        req, ident, cached = from_bank(bank, data, RefundRequest)
        if cached is not None:
            return cached
        payment = bank.verified(req.payment)
        if payment.payer_institution != bank.name or payment.payee_institution != ident.institution:
            raise Refused("refund does not concern these two banks", code="bank.wrong_parties")
        status = self.credit_refund(req.payment, payment, req.notary_receipt)
        result = SettlementResult(
            bank.id,
            ident.id,
            req.nonce,
            refund_id(payment.tx_id),
            req.payment.digest,
            payment.amount,
            status,
            "",
            "",
            b"",
        )
        response = sign(result, bank.credential).to_bytes()
        with bank.db.begin() as conn:
            bank.ledger.remember(conn, ident.id, req.nonce, response)
        return response

    def credit_refund(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> SettlementStatus:
        """Credit the payer's shadow wallet once, on the notary's word that the refund was
        recorded by the payee's intermediary."""
        bank, c = self.bank, schema.credits
        rid = refund_id(payment.tx_id)
        result, _ = open_signed(
            Signed.from_bytes(receipt), SettlementResult, bank.trust, Role.NOTARY, receiver=None
        )
        # Recorded under the payee's intermediary's pseudonym for the refund, committing to
        # the payment's evidence; before pseudonyms, under the refund id and the digest.
        legacy = result.tx_id == rid
        if (
            result.receiver != engine_id(payment.payee_institution)
            or result.evidence
            != (signed.digest if legacy else commitment(signed.digest, refund=True))
            or result.amount != payment.amount
            or result.status not in (SettlementStatus.DONE, SettlementStatus.ALREADY)
        ):
            raise Refused("the notary receipt does not cover this refund", code="bank.no_receipt")
        device = bank.device(payment.sender)
        try:
            with bank.db.begin() as conn:
                if conn.execute(select(c.c.tx_id).where(c.c.tx_id == rid)).first():
                    return SettlementStatus.ALREADY
                conn.execute(
                    insert(c).values(
                        tx_id=rid,
                        device_id=payment.sender,
                        amount=payment.amount.minor,
                        evidence=signed.digest,
                        payment=signed.to_bytes(),
                        request_id=None,
                        pseudonym=None if legacy else result.tx_id,
                    )
                )
                bank.ledger.move(
                    conn, None, device.account_id, payment.amount.minor, "refund-in", rid
                )
        except IntegrityError:
            return SettlementStatus.ALREADY
        bank.money_arrived(device, payment.amount.minor)
        return SettlementStatus.DONE
