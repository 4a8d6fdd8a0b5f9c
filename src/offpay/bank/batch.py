"""Settling what one sync uploads as one batch (issue 7, point 7).

The one-by-one pipeline (:meth:`Intermediary.settle`) costs 7 to 11 transactions, 18 to 27
statements and up to three messages per payment. An upload of many payments is settled here
with one transaction per step and database, set-based statements, one notarise request per
upload and one debit or credit request per other intermediary and upload.

Only the common case takes this path: every entry of the upload is a valid payment of the
uploading device, and for a payer, every payment of the upload is new (or settled completely
before), its card active and past the counter it last confirmed, nothing of it waits in the
queue, and its shadow wallet covers them all. Anything else (a shortfall, a clone, a rolled
back or blocked card, a payment half settled before) goes through the one-by-one path, which
keeps its tested code and its order. The primary keys still make settlement exactly once: a
racing sync makes a batch insert fail as a whole, and its payments then settle one by one.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from offpay.bank.names import engine_id
from offpay.bank.plan import Debited, Entry, PayerState, plan_credits, plan_debits
from offpay.central.bank import NOTARY_ID
from offpay.crypto.pki import Role
from offpay.crypto.pseudonyms import NotaryName, commitment
from offpay.errors import OffpayError, Refused, ReplayError
from offpay.store import schema
from offpay.store.bulk import execute_in, execute_many, insert_rows
from offpay.store.schema import written_at
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import (
    BatchItem,
    BatchResult,
    CreditBatch,
    DebitBatch,
    Direction,
    NotariseBatch,
    NotariseItem,
    OfflinePayment,
    SettlementResult,
    SettlementStatus,
)

if TYPE_CHECKING:
    from offpay.bank.desks import Bank
    from offpay.bank.records import Outcome

RECEIPTS_KEPT = 16  # batch receipts an intermediary keeps read
BATCH_MIN = 2  # an upload of one payment takes the one-by-one path and its messages
SETTLED = (SettlementStatus.DONE, SettlementStatus.ALREADY)

# The hot path's statements, run through the driver (offpay.store.bulk): ``?`` marks a value,
# ``(*)`` a list. Written once here in SQL both SQLite and PostgreSQL take.
_d, _c = schema.debits, schema.credits
_TAKE = "UPDATE accounts SET balance = balance - ? WHERE id = ?"  # executemany, per wallet
_GIVE = "UPDATE accounts SET balance = balance + ? WHERE id = ?"
_DEVICES = "SELECT id, kind, account_id, status, last_seq FROM devices WHERE id IN (*)"
_DEBITED = "SELECT tx_id, evidence, notarised, credited FROM debits WHERE tx_id IN (*)"
_QUEUED = "SELECT tx_id FROM shortfalls WHERE tx_id IN (*)"
_WAITING = "SELECT device_id FROM shortfalls WHERE open = ? AND device_id IN (*)"
_BALANCES = "SELECT id, balance FROM accounts WHERE id IN (*)"
_NOTARISED = "UPDATE debits SET notarised = ? WHERE tx_id IN (*)"
_CREDITED = "UPDATE debits SET credited = ? WHERE tx_id IN (*)"
_CREDITED_BEFORE = "SELECT tx_id FROM credits WHERE tx_id IN (*)"
_DECLINED = "SELECT request_id, device_id FROM declines WHERE request_id IN (*)"
_CLOSE_AWAITED = "UPDATE awaited SET open = ? WHERE open = ? AND tx_id IN (*)"
# Rows written with the driver's executemany (offpay.store.bulk), one tuple per payment.
JOURNAL_COLUMNS = ("account_id", "delta", "reference")
# debits and credits; ``pseudonym``: what the notary knows the payment by
ROW_COLUMNS = ("tx_id", "device_id", "amount", "evidence", "payment", "pseudonym")


Settled = tuple[SettlementStatus, str, bytes]  # status, detail, the notary's receipt or b""


def read_receipt(receipt: bytes, trust: Any) -> tuple[str, dict[bytes, BatchItem]]:
    """The intermediary a notary's receipt was given to and the payments it recorded (now or
    before), by commitment (the item's ``evidence``; the evidence digest itself in a receipt
    made before pseudonyms): a single receipt (:class:`SettlementResult`) or a batch one."""
    signed = Signed.from_bytes(receipt)
    # Canonical CBOR puts the shortest key, the type tag "t", first: the tag says which kind
    # of receipt to open (a wrong guess fails to decode, it never passes).
    batch = BatchResult.TYPE.encode() in signed.payload[:32]
    if batch:
        result, _ = open_signed(signed, BatchResult, trust, Role.NOTARY, receiver=None)
        items = list(result.items)
    else:
        single, _ = open_signed(signed, SettlementResult, trust, Role.NOTARY, receiver=None)
        result = single  # type: ignore[assignment]
        items = [BatchItem(single.tx_id, single.evidence, single.amount, single.status, "", -1)]
    return result.receiver, {i.evidence: i for i in items if i.status in SETTLED}


class BatchDesk:
    def __init__(self, bank: Bank) -> None:
        self.bank = bank
        self._receipts: dict[bytes, tuple[str, dict[bytes, BatchItem]]] = {}

    def recorded_as(
        self, receipt: bytes, payments: Sequence[tuple[bytes, Any]]
    ) -> list[bytes | None] | None:
        """The pseudonym the notary recorded each of these payments under, if it signed, for
        the payer's intermediary, that it recorded each exactly (commitment to its evidence,
        amount); None if it did not. ``payments``: (evidence digest, the payment or its
        record). A receipt made before pseudonyms names a payment by its id and evidence
        digest (pseudonym None). A batch receipt is read once."""
        read = self._receipts.get(receipt)
        if read is None:
            read = read_receipt(receipt, self.bank.trust)
            forget_oldest(self._receipts, RECEIPTS_KEPT)
            self._receipts[receipt] = read
        receiver, items = read
        names: list[bytes | None] = []
        for digest, payment in payments:
            item = items.get(commitment(digest))
            legacy = item is None
            if legacy:
                item = items.get(digest)
            if (
                receiver != engine_id(payment.payer_institution)
                or item is None
                or item.amount != payment.amount
                or (legacy and item.tx_id != payment.tx_id)
            ):
                return None
            names.append(None if legacy else item.tx_id)
        return names

    # -- an upload from one of our devices ------------------------------------------------------

    def settle_upload(
        self, device_id: str, entries: Sequence[tuple[Direction, Signed[OfflinePayment]]]
    ) -> tuple[Outcome, ...]:
        """Settle an upload's log entries; the outcomes in the upload's order."""
        bank = self.bank
        verified = self._eligible(device_id, entries)
        if verified is None:
            return tuple(bank.settle_entry(device_id, d, s) for d, s in entries)
        outcomes: dict[int, Outcome] = {}
        local = [e for e in verified if e.payment.payer_institution == bank.name]
        results, leftover = self._settle_fast(local)
        for i, (status, detail, _) in results:
            outcomes[i] = bank.outcome(verified[i].payment, status, detail)
        remote: dict[str, list[Entry]] = defaultdict(list)
        for e in verified:
            if e.payment.payer_institution != bank.name:
                remote[e.payment.payer_institution].append(e)
        for institution, group in sorted(remote.items()):
            outcomes.update(self._ask_debits(institution, group))
        for e in sorted(leftover, key=lambda e: e.index):  # the one-by-one path, in order
            outcomes[e.index] = bank.settle(*e.decoded())
        return tuple(outcomes[i] for i in range(len(entries)))

    def _eligible(
        self, device_id: str, entries: Sequence[tuple[Direction, Signed[OfflinePayment]]]
    ) -> list[Entry] | None:
        """The upload's payments if all are valid, the device's own and carry no funding
        receipts, and there are enough of them to batch; None otherwise. Each payment is
        encoded once here, where it enters: those bytes are stored and forwarded."""
        if len(entries) < BATCH_MIN:
            return None
        envelopes = [signed for _, signed in entries]
        datas = [signed.to_bytes() for signed in envelopes]
        try:
            payments = self.bank.verifier.check_all(datas, self.bank.trust, envelopes)
        except OffpayError:
            return None  # refused and recorded one by one, in order
        out = []
        for i, ((direction, _), data, payment) in enumerate(
            zip(entries, datas, payments, strict=True)
        ):
            party = payment.sender if direction is Direction.OUT else payment.receiver
            if party != device_id or payment.funding:
                return None
            out.append(Entry(i, data, payment))
        return out

    # -- steps 1 and 2 at the payer's intermediary ----------------------------------------------

    def _settle_fast(self, entries: list[Entry]) -> tuple[list[tuple[int, Settled]], list[Entry]]:
        """Debit, notarise and credit the plain ``entries`` together; returns their results
        and the entries left for the one-by-one path."""
        if not entries:
            return [], []
        plain, already, leftover, accounts = self._classify(entries)
        results: list[tuple[int, Settled]] = [
            (e.index, (SettlementStatus.ALREADY, "", b"")) for e in already
        ]
        if not plain:
            return results, leftover
        if not self._debit(plain, accounts):
            return results, leftover + plain  # a racing sync debited some first
        receipt, notarised, refused = self._notarise(plain)
        leftover = leftover + refused
        self._deliver_credits(notarised, receipt)
        results += [(e.index, (SettlementStatus.DONE, "", receipt)) for e in notarised]
        return results, leftover

    def _classify(
        self, entries: list[Entry]
    ) -> tuple[list[Entry], list[Entry], list[Entry], dict[str, str]]:
        """The ledger's state of the upload's payers, read in one transaction, and the plan
        made from it (:func:`offpay.bank.plan.plan_debits`)."""
        plan = plan_debits(entries, self._payer_state(entries))
        return plan.debit, plan.settled, plan.one_by_one, plan.accounts

    def _payer_state(self, entries: list[Entry]) -> PayerState:
        """Five look-ups by list, each a statement the driver prepared once."""
        ids = [e.payment.tx_id for e in entries]
        payers = sorted({e.payment.sender for e in entries})
        with self.bank.db.connect() as conn:
            devices = {r.id: r for r in execute_in(conn, _DEVICES, payers)}
            debited = {
                bytes(r.tx_id): Debited(bytes(r.evidence), bool(r.notarised), bool(r.credited))
                for r in execute_in(conn, _DEBITED, ids)
            }
            queued = {bytes(r.tx_id) for r in execute_in(conn, _QUEUED, ids)}
            waiting = {r.device_id for r in execute_in(conn, _WAITING, payers, (True,))}
            accounts = sorted({r.account_id for r in devices.values()})
            balances = (
                {r.id: r.balance for r in execute_in(conn, _BALANCES, accounts)} if accounts else {}
            )
        return PayerState(devices, debited, queued, waiting, balances)

    def _debit(self, entries: list[Entry], accounts: dict[str, str]) -> bool:
        """One transaction: every payer's shadow wallet once, the journal and the debits. The
        balances' CHECK guards against a racing debit; a racing key makes it all roll back."""
        bank = self.bank
        totals: dict[str, int] = defaultdict(int)
        for e in entries:
            totals[accounts[e.payment.sender]] += e.payment.amount.minor
        try:
            with bank.db.begin() as conn:
                execute_many(conn, _TAKE, [(m, acc) for acc, m in sorted(totals.items())])
                insert_rows(
                    conn,
                    schema.journal,
                    JOURNAL_COLUMNS,
                    [
                        (accounts[e.payment.sender], -e.payment.amount.minor, e.payment.tx_id)
                        for e in entries
                    ],
                    {"reason": "offline-out"},
                )
                insert_rows(
                    conn,
                    _d,
                    ROW_COLUMNS,
                    [
                        (
                            e.payment.tx_id,
                            e.payment.sender,
                            e.payment.amount.minor,
                            e.payment.digest,
                            e.data,
                            bank.pseudonym(e.payment.tx_id),
                        )
                        for e in entries
                    ],
                    {"notarised": False, "credited": False, "recorded_at": written_at()},
                )
        except IntegrityError:
            return False
        return True

    def _notarise(self, entries: list[Entry]) -> tuple[bytes, list[Entry], list[Entry]]:
        """One request to the notary for the batch; returns its receipt, the entries it
        recorded (now or before) and those it refused."""
        bank = self.bank
        names = [
            NotaryName.of(bank.pseudonym_key, e.payment.tx_id, e.payment.digest) for e in entries
        ]
        items = tuple(
            NotariseItem(
                name.pseudonym,
                name.commitment,
                e.payment.payer_institution,
                e.payment.payee_institution,
                e.payment.amount,
            )
            for e, name in zip(entries, names, strict=True)
        )
        request = NotariseBatch(bank.id, NOTARY_ID, bank.nonce(), items)
        receipt = bank.network.send(
            "central-bank", "notarise-batch", sign(request, bank.credential).to_bytes()
        )
        result = open_batch(receipt, bank.trust, request, Role.NOTARY, entries)
        notarised = [e for e, r in zip(entries, result.items, strict=True) if r.status in SETTLED]
        refused = [e for e, r in zip(entries, result.items, strict=True) if r.status not in SETTLED]
        if notarised:
            with bank.db.begin() as conn:
                execute_in(conn, _NOTARISED, [e.payment.tx_id for e in notarised], (True,))
        return receipt, notarised, refused

    def _deliver_credits(self, entries: list[Entry], receipt: bytes) -> None:
        """Step 3: ours credited here, the others' with one request per payee's intermediary;
        the debits they cover are marked credited. A lost request is left to retry_pending."""
        bank = self.bank
        by_payee: dict[str, list[Entry]] = defaultdict(list)
        for e in entries:
            by_payee[e.payment.payee_institution].append(e)
        credited: list[Entry] = []
        for institution, group in sorted(by_payee.items()):
            if institution == bank.name:
                self.credit(group, receipt)
                credited += group
                continue
            request = CreditBatch(
                bank.id,
                engine_id(institution),
                bank.nonce(),
                tuple(e.data for e in group),
                receipt,
            )
            try:
                data = bank.network.send(
                    institution, "credit-batch", sign(request, bank.credential).to_bytes()
                )
                result = open_batch(data, bank.trust, request, Role.ENGINE, group, institution)
            except OffpayError:
                continue  # left for retry_pending(); the debit rows say they are not credited
            credited += [e for e, r in zip(group, result.items, strict=True) if r.status in SETTLED]
        if credited:
            with bank.db.begin() as conn:
                execute_in(conn, _CREDITED, [e.payment.tx_id for e in credited], (True,))

    # -- step 3 at the payee's intermediary -----------------------------------------------------

    def credit(self, entries: list[Entry], receipt: bytes) -> dict[int, SettlementStatus]:
        """Credit payments the notary recorded (``receipt`` covers each): one transaction,
        each payee's wallet once. A payment whose payee is unknown here, or a batch that a
        racing credit broke, goes through :meth:`Intermediary.credit` one by one."""
        bank = self.bank
        names = self.recorded_as(receipt, [(e.payment.digest, e.payment) for e in entries])
        if names is None:
            raise Refused(
                "the notary receipt does not cover these payments", code="bank.no_receipt"
            )
        recorded = {e.index: name for e, name in zip(entries, names, strict=True)}
        ids = [e.payment.tx_id for e in entries]
        request_ids = {e.index: e.payment.request_id for e in entries}
        with bank.db.connect() as conn:
            known = {bytes(r.tx_id) for r in execute_in(conn, _CREDITED_BEFORE, ids)}
            receivers = sorted({e.payment.receiver for e in entries})
            payees = {r.id: r for r in execute_in(conn, _DEVICES, receivers)}
            # Payments whose payee declined the request go one by one: credited, then refunded.
            declined = {
                (bytes(r.request_id), r.device_id)
                for r in execute_in(conn, _DECLINED, sorted(set(request_ids.values())))
            }
        plan = plan_credits(entries, known, set(payees), declined, request_ids)
        statuses = {e.index: SettlementStatus.ALREADY for e in plan.settled}
        new, slow = plan.credit, plan.one_by_one
        if new and not self._credit_rows(new, payees, recorded):
            slow, new = slow + new, []
        for e in new:
            statuses[e.index] = SettlementStatus.DONE
        self._close_awaited(ids)
        for e in slow:
            statuses[e.index] = bank.credit(*e.decoded(), receipt)
        self._after_credit(new, payees)
        return statuses

    def _credit_rows(
        self, entries: list[Entry], payees: dict[str, Any], recorded: dict[int, bytes | None]
    ) -> bool:
        bank = self.bank
        totals: dict[str, int] = defaultdict(int)
        for e in entries:
            totals[payees[e.payment.receiver].account_id] += e.payment.amount.minor
        try:
            with bank.db.begin() as conn:
                insert_rows(
                    conn,
                    _c,
                    (*ROW_COLUMNS, "request_id"),
                    [
                        (
                            e.payment.tx_id,
                            e.payment.receiver,
                            e.payment.amount.minor,
                            e.payment.digest,
                            e.data,
                            recorded[e.index],
                            e.payment.request_id,
                        )
                        for e in entries
                    ],
                    {"recorded_at": written_at()},
                )
                done = execute_many(conn, _GIVE, [(m, acc) for acc, m in sorted(totals.items())])
                if done not in (-1, len(totals)):
                    raise IntegrityError("credit", None, Exception("an account is missing"))
                insert_rows(
                    conn,
                    schema.journal,
                    JOURNAL_COLUMNS,
                    [
                        (
                            payees[e.payment.receiver].account_id,
                            e.payment.amount.minor,
                            e.payment.tx_id,
                        )
                        for e in entries
                    ],
                    {"reason": "offline-in"},
                )
        except IntegrityError:
            return False
        return True

    def _close_awaited(self, ids: list[bytes]) -> None:
        with self.bank.db.begin() as conn:
            execute_in(conn, _CLOSE_AWAITED, ids, (False, True))

    def _after_credit(self, entries: list[Entry], payees: dict[str, Any]) -> None:
        """Money reached a device's wallet: as after each credit one by one
        (:meth:`Intermediary.money_arrived`)."""
        received: dict[str, int] = defaultdict(int)
        for e in entries:
            received[e.payment.receiver] += e.payment.amount.minor
        for device_id, minor in sorted(received.items()):
            self.bank.money_arrived(payees[device_id], minor)

    # -- other intermediaries -------------------------------------------------------------------

    def _ask_debits(self, institution: str, group: list[Entry]) -> dict[int, Outcome]:
        """One debit request to the payers' intermediary for all its payers' payments in the
        upload; credit ours from the receipts in its answer (should its credit be lost)."""
        bank = self.bank
        request = DebitBatch(
            bank.id, engine_id(institution), bank.nonce(), tuple(e.data for e in group)
        )
        data = bank.network.send(
            institution, "debit-batch", sign(request, bank.credential).to_bytes()
        )
        result = open_batch(data, bank.trust, request, Role.ENGINE, group, institution)
        to_credit: dict[int, list[Entry]] = defaultdict(list)
        outcomes: dict[int, Outcome] = {}
        for e, item in zip(group, result.items, strict=True):
            if item.receipt >= 0 and e.payment.payee_institution == bank.name:
                if item.receipt >= len(result.receipts):
                    raise ReplayError("the answer names a receipt it does not carry")
                to_credit[item.receipt].append(e)
            if item.status is SettlementStatus.SHORT and e.payment.payee_institution == bank.name:
                bank.record_awaited(e.payment)
            outcomes[e.index] = bank.outcome(e.payment, item.status, item.detail)
        for index, entries in sorted(to_credit.items()):
            self.credit(entries, result.receipts[index])
        return outcomes

    def debit_request(self, data: bytes) -> bytes:
        """Another intermediary asks us to settle its device's upload's payments whose payers
        are our customers (one :class:`DebitBatch`); answered item by item, with receipts."""
        bank = self.bank
        req, ident = open_signed(data, DebitBatch, bank.trust, Role.ENGINE, receiver=bank.id)
        cached = bank.ledger.seen(ident.id, req.nonce)
        if cached is not None:
            return cached
        entries = self._entries(req.payments)
        ours = [e for e in entries if e.payment.payer_institution == bank.name]
        results = dict(self._settle_fast(ours)[0])
        for e in ours:
            if e.index not in results:
                signed, payment = e.decoded()
                status, detail, receipt = bank.debit_and_notarise(signed, payment)
                if receipt:
                    bank.deliver_credit(signed, payment, receipt)
                results[e.index] = (status, detail, receipt)
        receipts: list[bytes] = []
        items = []
        for e in entries:
            status, detail, receipt = results.get(
                e.index, (SettlementStatus.REFUSED, "the payer is not our customer", b"")
            )
            if receipt and receipt not in receipts:
                receipts.append(receipt)
            index = receipts.index(receipt) if receipt else -1
            items.append(
                BatchItem(
                    e.payment.tx_id, e.payment.digest, e.payment.amount, status, detail, index
                )
            )
        return self._answer(ident.id, req.nonce, items, receipts)

    def credit_request(self, data: bytes) -> bytes:
        """The payers' intermediary asks us to credit payments the notary recorded in one
        batch (one :class:`CreditBatch`)."""
        bank = self.bank
        req, ident = open_signed(data, CreditBatch, bank.trust, Role.ENGINE, receiver=bank.id)
        cached = bank.ledger.seen(ident.id, req.nonce)
        if cached is not None:
            return cached
        entries = self._entries(req.payments)
        for e in entries:
            p = e.payment
            if p.payee_institution != bank.name or p.payer_institution != ident.institution:
                raise Refused("payment does not concern these two banks", code="bank.wrong_parties")
        statuses = self.credit(entries, req.notary_receipt)
        items = [
            BatchItem(
                e.payment.tx_id, e.payment.digest, e.payment.amount, statuses[e.index], "", -1
            )
            for e in entries
        ]
        return self._answer(ident.id, req.nonce, items, [])

    def _entries(self, payments: Sequence[bytes]) -> list[Entry]:
        """A request's payments, as the signed bytes they came in, each decoded and verified
        (a big batch across processes), in its order; the typed error of the first that is
        not a valid payment refuses the request."""
        verified = self.bank.verifier.check_all(payments, self.bank.trust)
        return [Entry(i, d, p) for i, (d, p) in enumerate(zip(payments, verified, strict=True))]

    def _answer(
        self, to: str, nonce: bytes, items: list[BatchItem], receipts: list[bytes]
    ) -> bytes:
        """Signed, addressed, naming each payment exactly, and remembered for a retry."""
        bank = self.bank
        result = BatchResult(bank.id, to, nonce, tuple(items), tuple(receipts))
        response = sign(result, bank.credential).to_bytes()
        with bank.db.begin() as conn:
            bank.ledger.remember(conn, to, nonce, response)
        return response


def forget_oldest(cache: dict[Any, Any], kept: int) -> None:
    """Make room in a bounded cache (first in, first out). Another thread may change it at
    the same time: then someone else made room."""
    if len(cache) >= kept:
        with contextlib.suppress(RuntimeError, StopIteration, KeyError):
            cache.pop(next(iter(cache)))


def open_batch(
    data: bytes,
    trust: Any,
    request: NotariseBatch | DebitBatch | CreditBatch,
    role: Role,
    entries: Sequence[Entry],
    institution: str | None = None,
) -> BatchResult:
    """The answer to a batch ``request``: signed by the party asked, addressed to the asker,
    echoing the nonce, and naming the request's payments in its order, each exactly (to the
    notary: by the pseudonym and commitment the request named)."""
    result, _ = open_signed(
        Signed.from_bytes(data),
        BatchResult,
        trust,
        role,
        receiver=request.sender,
        institution=institution,
    )
    if result.nonce != request.nonce:
        raise ReplayError("the answer is not for this request")
    if isinstance(request, NotariseBatch):
        named = [(i.pseudonym, i.commitment, i.amount) for i in request.items]
    else:
        named = [(e.payment.tx_id, e.payment.digest, e.payment.amount) for e in entries]
    if len(result.items) != len(entries) or any(
        (i.tx_id, i.evidence, i.amount) != n for i, n in zip(result.items, named, strict=True)
    ):
        raise ReplayError("the answer is about other payments")
    return result
