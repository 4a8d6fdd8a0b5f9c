"""One offline payment settled exactly once, whichever party uploaded it (report §3.7).

The path of one payment, in the order it takes:

1. **verify** (:mod:`offpay.bank.verification`): both signatures, or a typed refusal;
2. **debit** (:meth:`Settlement.debit_and_notarise`, at the payer's intermediary): the
   payer's shadow wallet, keyed by the payment id; a payment it cannot cover waits in the
   queue (a shortfall), or borrows from the pool under policy ``pool``;
3. **notarise** (:mod:`offpay.bank.notarisation`): the central bank records it once;
4. **credit** (:meth:`Settlement.credit`, at the payee's intermediary, keyed by the payment
   id again), here or by a credit request to the payee's intermediary
   (:mod:`offpay.bank.interbank`).

Every write goes through :class:`~offpay.bank.ledger.Ledger` or the primary keys of the
debits and credits tables, so a retry, a duplicate or a race settles nothing twice. A whole
upload in the common case takes the batch path (:mod:`offpay.bank.batch`), which plans with
:mod:`offpay.bank.plan` and comes back here for everything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from offpay.bank.containment import Containment
from offpay.bank.evidence import verify_payment
from offpay.bank.interbank import Interbank
from offpay.bank.liquidity import LiquidityDesk
from offpay.bank.names import engine_id
from offpay.bank.notarisation import Notarisation
from offpay.bank.records import Outcome
from offpay.bank.refusal import Refusals, request_id_of
from offpay.bank.verification import VerifiedPayments
from offpay.errors import InsufficientFunds, OffpayError
from offpay.money import Money
from offpay.store import schema
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import (
    CreditRequest,
    DebitRequest,
    Direction,
    Liquidity,
    OfflinePayment,
    SettlementStatus,
)

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


class Settlement:
    def __init__(
        self,
        bank: Bank,
        *,
        verification: VerifiedPayments,
        notarisation: Notarisation,
        interbank: Interbank,
        liquidity: LiquidityDesk,
        containment: Containment,
        refusals: Refusals,
    ) -> None:
        self.bank = bank
        self.verification = verification
        self.notarisation = notarisation
        self.interbank = interbank
        self.liquidity = liquidity
        self.containment = containment
        self.refusals = refusals

    # -- one payment of an upload ---------------------------------------------------------------

    def settle_entry(
        self, device_id: str, direction: Direction, signed: Signed[OfflinePayment]
    ) -> Outcome:
        """One entry of a device's upload: verified, checked to be the device's own, settled."""
        bank = self.bank
        try:
            payment = self.verification.verified(signed)
        except OffpayError as exc:
            # A tamper-resistant device uploaded something that is not a valid payment: keep
            # the rest of its upload, refuse this entry and record it against the device.
            bank.ledger.anomaly("invalid_entry", device_id, None, f"[{exc.code}] {exc.message}")
            # An honest card or terminal module verified every payment it stored and signs its
            # upload: an invalid one in it proves the device was tampered with.
            bank.block_device(device_id, f"uploaded an invalid payment: {exc.code}")
            return Outcome(
                b"", Money.zero(bank.currency), "", "", SettlementStatus.REFUSED, exc.message
            )
        party = payment.sender if direction is Direction.OUT else payment.receiver
        if party != device_id:
            bank.ledger.anomaly(
                "foreign_entry", device_id, payment.tx_id, "log entry of another device"
            )
            return self.outcome(payment, SettlementStatus.REFUSED, "entry names another device")
        return self.settle(signed, payment)

    def outcome(self, p: OfflinePayment, status: SettlementStatus, detail: str = "") -> Outcome:
        return Outcome(p.tx_id, p.amount, p.sender, p.receiver, status, detail)

    def settle(
        self, signed: Signed[OfflinePayment], verified: OfflinePayment | None = None
    ) -> Outcome:
        """Settle one offline payment exactly once, whichever party uploaded it. ``verified``:
        the payment as :func:`verify_payment` already returned it, so it is not checked twice."""
        bank = self.bank
        payment = verified if verified is not None else verify_payment(signed, bank.trust)
        if payment.funding:
            self.liquidity.settle_funding(payment)  # policy receipts: causal order first
        if payment.payer_institution == bank.name:
            status, detail, receipt = self.debit_and_notarise(signed, payment)
            if receipt:
                self.deliver_credit(signed, payment, receipt)
        else:
            # Report §3.7: a payment request to the payer's intermediary, which debits,
            # notarises and credits us back; its answer carries the notary's receipt so that
            # we can credit ourselves should its credit message have been lost.
            request = DebitRequest(
                bank.id, engine_id(payment.payer_institution), bank.nonce(), signed
            )
            result = self.interbank.ask_bank(payment.payer_institution, "debit-request", request)
            status, detail = result.status, result.detail
            if result.notary_receipt and payment.payee_institution == bank.name:
                self.credit(signed, payment, result.notary_receipt)
        if status is SettlementStatus.SHORT and payment.payee_institution == bank.name:
            self.record_awaited(payment)
        return self.outcome(payment, status, detail)

    # -- the payer's side: debit and notarise -------------------------------------------------

    def debit_and_notarise(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, *, borrowed: bool = False
    ) -> tuple[SettlementStatus, str, bytes]:
        """Steps 1 and 2 at the payer's intermediary; returns the notary's receipt if the
        payment is (now or already) debited and recorded. Under policy ``pool`` a gap is
        borrowed once before the payment is queued."""
        bank = self.bank
        d = schema.debits
        device = bank.device(payment.sender)
        gap = 0
        conflict = False
        if device.kind == "card" and payment.payer_seq <= device.last_seq:
            with bank.db.connect() as conn:
                known = conn.execute(select(d.c.tx_id).where(d.c.tx_id == payment.tx_id)).first()
                queued = conn.execute(
                    select(schema.shortfalls.c.tx_id).where(
                        schema.shortfalls.c.tx_id == payment.tx_id
                    )
                ).first()
            if known is None and queued is None:
                # The card had passed this counter when it confirmed a sync, and its uploads
                # never showed this payment: it was made from a state the card had left.
                self.containment.rolled_back(device.id, payment)
                return SettlementStatus.REFUSED, "made by a rolled-back card", b""
        if device.status != "active" and not self.containment.settles_despite_block(device.id):
            with bank.db.connect() as conn:
                known = conn.execute(select(d.c.tx_id).where(d.c.tx_id == payment.tx_id)).first()
            if known is None:
                bank.ledger.anomaly(
                    "late_payment",
                    payment.sender,
                    payment.tx_id,
                    f"a payment of {payment.amount} from a blocked card arrived after the window",
                )
                return SettlementStatus.REFUSED, "the payer's card is blocked", b""
        try:
            with bank.db.begin() as conn:
                existing = conn.execute(select(d).where(d.c.tx_id == payment.tx_id)).first()
                waiting = conn.execute(
                    select(schema.shortfalls.c.payment).where(
                        schema.shortfalls.c.tx_id == payment.tx_id
                    )
                ).first()
                if (
                    existing is None
                    and waiting is not None
                    and Signed.from_bytes(bytes(waiting.payment)).digest != signed.digest
                ):
                    # The first copy to arrive waits in the queue; this one is another payment
                    # under the same counter: a clone's. Neither is paid by this one arriving.
                    bank.ledger.anomaly_in(
                        conn,
                        "conflicting_payment",
                        payment.sender,
                        payment.tx_id,
                        "two different payments carry the same card counter (one waits)",
                    )
                    conflict = True
                elif existing is not None:
                    if bytes(existing.evidence) != signed.digest:
                        bank.ledger.anomaly_in(
                            conn,
                            "conflicting_payment",
                            payment.sender,
                            payment.tx_id,
                            "two different payments carry the same card counter",
                        )
                        conflict = True
                        status = SettlementStatus.REFUSED
                    status = SettlementStatus.ALREADY
                else:
                    try:
                        bank.ledger.move(
                            conn,
                            device.account_id,
                            None,
                            payment.amount.minor,
                            "offline-out",
                            payment.tx_id,
                        )
                    except InsufficientFunds:
                        status = SettlementStatus.SHORT
                        # Goes to the payee's intermediary too: no account id (it names the
                        # customer) and no balance (docs/privacy.md).
                        detail = f"the payer's shadow wallet does not cover {payment.amount} yet"
                        held = conn.execute(
                            select(schema.accounts.c.balance).where(
                                schema.accounts.c.id == device.account_id
                            )
                        ).scalar_one()
                        gap = payment.amount.minor - held
                    else:
                        conn.execute(
                            insert(d).values(
                                tx_id=payment.tx_id,
                                device_id=payment.sender,
                                amount=payment.amount.minor,
                                evidence=signed.digest,
                                payment=signed.to_bytes(),
                                notarised=False,
                                credited=False,
                                pseudonym=self.notarisation.pseudonym(payment.tx_id),
                            )
                        )
                        status = SettlementStatus.DONE
        except IntegrityError:
            return self.debit_and_notarise(signed, payment)  # a racing sync debited first
        if conflict:
            # A cloned or rolled-back card: the counter was used twice. Block and revoke it;
            # the second payment is not settled (no money is created) and is a reported loss.
            bank.block_device(payment.sender, "two payments with the same counter: cloned")
            self.containment.record_loss(
                payment.sender,
                payment.tx_id,
                payment.amount.minor,
                f"payment to {payment.receiver} refused: its counter was used by another payment",
            )
            return SettlementStatus.REFUSED, "conflicting payment with the same id", b""
        if status is SettlementStatus.SHORT:
            if (
                not borrowed
                and bank.policy()[1].liquidity is Liquidity.POOL
                and self.liquidity.draw(payment, device.account_id, gap)
            ):
                return self.debit_and_notarise(signed, payment, borrowed=True)
            self.record_shortfall(payment, signed)
            return status, detail, b""
        receipt = self.notarisation.notarise(payment, signed)
        with bank.db.begin() as conn:
            conn.execute(
                update(schema.shortfalls)
                .where(schema.shortfalls.c.tx_id == payment.tx_id, schema.shortfalls.c.open)
                .values(open=False, settled_at=bank.clock())
            )
        return status, "", receipt

    # -- the queue of payments their payer's shadow wallet cannot cover yet ----------------------

    def record_shortfall(self, payment: OfflinePayment, signed: Signed[OfflinePayment]) -> None:
        """The payer's side of the queue: the payment waits, signed, for its payer's money."""
        bank = self.bank
        s = schema.shortfalls
        with bank.db.begin() as conn:
            if conn.execute(select(s.c.tx_id).where(s.c.tx_id == payment.tx_id)).first():
                return
            conn.execute(
                insert(s).values(
                    tx_id=payment.tx_id,
                    device_id=payment.sender,
                    amount=payment.amount.minor,
                    payment=signed.to_bytes(),
                    open=True,
                    queued_at=bank.clock(),
                )
            )
        bank.ledger.anomaly(
            "shortfall",
            payment.sender,
            payment.tx_id,
            f"shadow wallet cannot cover {payment.amount} to {payment.receiver}",
        )

    def record_awaited(self, payment: OfflinePayment) -> None:
        """The payee's side of the queue: our device is owed a payment that waits."""
        bank = self.bank
        a = schema.awaited
        with bank.db.begin() as conn:
            if conn.execute(select(a.c.tx_id).where(a.c.tx_id == payment.tx_id)).first() is None:
                conn.execute(
                    insert(a).values(
                        tx_id=payment.tx_id,
                        device_id=payment.receiver,
                        payer=payment.sender,
                        amount=payment.amount.minor,
                        open=True,
                        since=bank.clock(),
                    )
                )

    def retry_shortfalls(self, device_id: str) -> None:
        """Settle, in the payer's own order, the payments a device made that its shadow wallet
        could not cover before; called when the device syncs and when money reaches it. The
        device's log may be cleared by then: the engine kept the signed payments."""
        s = schema.shortfalls
        with self.bank.db.connect() as conn:
            rows = conn.execute(
                select(s.c.payment).where(s.c.device_id == device_id, s.c.open.is_(True))
            ).all()
        if not rows:
            return
        waiting = sorted(
            (Signed.from_bytes(bytes(r.payment)) for r in rows),
            key=lambda signed: payload_of(signed, OfflinePayment).payer_seq,
        )
        for signed in waiting:
            if self.settle(signed).status is SettlementStatus.SHORT:
                return  # later payments of this payer wait behind the earlier one

    # -- the payee's side: credit ---------------------------------------------------------------

    def credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> SettlementStatus:
        """Step 3 at the payee's intermediary, keyed by the payment id."""
        bank = self.bank
        recorded_as = self.notarisation.recorded_as(receipt, signed, payment)
        c = schema.credits
        device = bank.device(payment.receiver)
        try:
            with bank.db.begin() as conn:
                if conn.execute(select(c.c.tx_id).where(c.c.tx_id == payment.tx_id)).first():
                    status = SettlementStatus.ALREADY
                else:
                    conn.execute(
                        insert(c).values(
                            tx_id=payment.tx_id,
                            device_id=payment.receiver,
                            amount=payment.amount.minor,
                            evidence=signed.digest,
                            payment=signed.to_bytes(),
                            request_id=request_id_of(payment),
                            pseudonym=recorded_as,
                        )
                    )
                    bank.ledger.move(
                        conn,
                        None,
                        device.account_id,
                        payment.amount.minor,
                        "offline-in",
                        payment.tx_id,
                    )
                    status = SettlementStatus.DONE
        except IntegrityError:
            return SettlementStatus.ALREADY  # a racing sync credited first: the key held
        with bank.db.begin() as conn:
            conn.execute(
                update(schema.awaited)
                .where(schema.awaited.c.tx_id == payment.tx_id)
                .values(open=False)
            )
        if status is SettlementStatus.DONE:
            if self.refusals.declined(payment):
                self.refusals.refund(signed, payment)  # the payee declined it: it goes back
            else:
                self.money_arrived(device, payment.amount.minor)
        return status

    def money_arrived(self, device: Row[Any], minor: int | None = None) -> None:
        """Money reached a device's wallet: it makes a refund the device owes, repays a pool
        loan, then may fund a waiting payment (in that order: the oldest debt first)."""
        self.refusals.retry_owed_for(device.id)
        if device.kind == "card":
            if minor is not None:
                self.liquidity.repay(device.id, device.account_id, minor)
            self.retry_shortfalls(device.id)

    def deliver_credit(
        self, signed: Signed[OfflinePayment], payment: OfflinePayment, receipt: bytes
    ) -> None:
        """Step 3 wherever the payee banks: here, or by a credit request to its intermediary;
        the debit is marked credited once it is (a lost request is left for a retry)."""
        bank = self.bank
        if payment.payee_institution == bank.name:
            self.credit(signed, payment, receipt)
        else:
            request = CreditRequest(
                bank.id, engine_id(payment.payee_institution), bank.nonce(), signed, receipt
            )
            try:
                result = self.interbank.ask_bank(
                    payment.payee_institution, "credit-request", request
                )
            except OffpayError:
                return  # left for retry_pending(); the debit row says it is not credited
            if result.status not in (SettlementStatus.DONE, SettlementStatus.ALREADY):
                return
        with bank.db.begin() as conn:
            conn.execute(
                update(schema.debits)
                .where(schema.debits.c.tx_id == payment.tx_id)
                .values(credited=True)
            )

    # -- what a crash or a lost message left half done ----------------------------------------

    def unfinished(self) -> list[Row[Any]]:
        """Debits not yet notarised or not yet credited (refunds apart: their desk retries)."""
        d = schema.debits
        with self.bank.db.connect() as conn:
            return list(
                conn.execute(
                    select(d).where(
                        d.c.notarised.is_(False) | d.c.credited.is_(False),
                        d.c.tx_id.not_in(select(schema.refunds.c.refund_id)),
                    )
                ).all()
            )

    def finish(self, rows: list[Row[Any]]) -> int:
        """Notarise and credit each of :meth:`unfinished`'s debits; returns how many."""
        for row in rows:
            signed = Signed.from_bytes(bytes(row.payment))
            payment = verify_payment(signed, self.bank.trust)
            self.deliver_credit(signed, payment, self.notarisation.notarise(payment, signed))
        return len(rows)
