"""Forged or replayed requests between intermediaries and to the notary on the settlement's
batch path (``bank/batch.py``) and for refunds (``bank/refusal.py``): each is refused and moves
nothing, and a replay gets the first answer."""

from __future__ import annotations

import dataclasses
import os

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.report import FindingKind
from offpay.attacks.tools import SEK, client, funded, payload, payment_to_shop
from offpay.bank.engine import Intermediary
from offpay.central.bank import NOTARY_ID
from offpay.crypto.pki import Role, TrustStore
from offpay.crypto.pseudonyms import NotaryName
from offpay.device.tamper import clone_card
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import (
    BatchResult,
    CreditBatch,
    DebitBatch,
    NotariseBatch,
    NotariseItem,
    OfflinePayment,
    RefundRequest,
    SettlementStatus,
)


def item_of(bank: Intermediary, signed: Signed) -> NotariseItem:
    """The notarise item the payer's intermediary ``bank`` would ask the notary to record for
    ``signed``: under its pseudonym and the commitment to its evidence."""
    p = payload(signed.to_bytes(), OfflinePayment)
    name = NotaryName.of(bank.pseudonym_key, p.tx_id, signed.digest)
    return NotariseItem(
        name.pseudonym, name.commitment, p.payer_institution, p.payee_institution, p.amount
    )


def batch_answer(data: bytes, trust: TrustStore, receiver: str) -> BatchResult:
    """A batch answer, verified as its receiver would."""
    result, _ = open_signed(data, BatchResult, trust, frozenset(Role), receiver=receiver)
    return result


class Kept:
    """A network tap that keeps every request of one kind that crosses it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests: list[bytes] = []

    def __call__(self, _to: str, kind: str, data: bytes) -> bytes:
        if kind == self.kind:
            self.requests.append(data)
        return data


def forged_batch_request(play: Play) -> None:
    """Alice (bank-a) has two payments to a shop of bank-b not yet settled. Debit batches for
    them reach bank-a addressed to another engine, with a broken signature, truncated; notarise
    batches reach the notary from the payee's intermediary, or with an amount of zero; credit
    batches reach bank-b with the notary's receipt of Carol's payments, and bank-a concerning
    other banks. All are refused and move nothing. The genuine debit batch, replayed, gets the
    first answer; sent again under a new nonce, it settles nothing twice. A clone's payment
    under a recorded payment id is refused by the notary (``central.conflict``), and its
    answer credits nobody. The payer's own sync races a debit batch: each payment settles
    once."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    carol = funded(checked, "Carol", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    play.tried("Alice's card pays the shop SEK 10 and SEK 20; the payments are not settled")
    payments = tuple(payment_to_shop(alice, shop, m * SEK) for m in (10, 20))  # signed bytes
    nonce = os.urandom(16)

    play.tried("forged debit batches for the two payments reach bank-a")
    wrong = sign(DebitBatch(b.id, b.id, nonce, payments), b.credential).to_bytes()
    play.refused("wire.wrong_receiver", "bank-a", "a debit batch addressed to bank-b",
                 a.handle, "debit-batch", wrong)  # fmt: skip
    good = sign(DebitBatch(b.id, a.id, nonce, payments), b.credential)
    spoiled = dataclasses.replace(good, signature=bytes(len(good.signature))).to_bytes()
    play.refused("crypto.bad_signature", "bank-a", "a debit batch with a broken signature",
                 a.handle, "debit-batch", spoiled)  # fmt: skip
    play.refused("wire.malformed", "bank-a", "a truncated debit batch",
                 a.handle, "debit-batch", good.to_bytes()[:-3])  # fmt: skip

    play.tried("forged notarise batches for them reach the notary")
    items = tuple(item_of(a, Signed.from_bytes(p)) for p in payments)
    by_payee = sign(NotariseBatch(b.id, NOTARY_ID, nonce, items), b.credential).to_bytes()
    play.refused("central.not_payer", "central-bank", "a notarise batch from the payee's bank",
                 net.central.handle, "notarise-batch", by_payee)  # fmt: skip
    zero = (dataclasses.replace(items[0], amount=net.money(0)), items[1])
    zeroed = sign(NotariseBatch(a.id, NOTARY_ID, nonce, zero), a.credential).to_bytes()
    play.refused("central.bad_amount", "central-bank", "a notarise batch of a zero amount",
                 net.central.handle, "notarise-batch", zeroed)  # fmt: skip

    play.tried("the network keeps the credit batch of Carol's two payments, and its receipt")
    carols_shop = net.add_merchant("Carol's shop", "bank-b")  # Alice's shop does not sync
    kept = Kept("credit-batch")
    net.network.taps.append(kept)
    try:
        checked.charge(carols_shop, carol, 5 * SEK)
        checked.charge(carols_shop, carol, 6 * SEK)
        checked.sync(carols_shop)
    finally:
        net.network.taps.remove(kept)
    expect(carols_shop.wallet == net.money(11 * SEK), "Carol's payments did not settle")
    receipt = payload(kept.requests[0], CreditBatch).notary_receipt
    play.tried("forged credit batches for Alice's payments reach bank-b and bank-a")
    credit = CreditBatch(a.id, b.id, os.urandom(16), payments, receipt)
    play.refused("bank.no_receipt", "bank-b", "a credit batch with the receipt of other payments",
                 b.handle, "credit-batch", sign(credit, a.credential).to_bytes())  # fmt: skip
    own = sign(dataclasses.replace(credit, sender=b.id, receiver=a.id), b.credential)
    play.refused("bank.wrong_parties", "bank-a", "a credit batch concerning other banks",
                 a.handle, "credit-batch", own.to_bytes())  # fmt: skip
    expect(shop.wallet == net.money(0), "a forged batch paid the shop")

    play.tried("bank-b's genuine debit batch for Alice's payments, then the same bytes again")
    request = sign(DebitBatch(b.id, a.id, os.urandom(16), payments), b.credential).to_bytes()
    first = checked.step(a.handle, "debit-batch", request)
    expect(checked.step(a.handle, "debit-batch", request) == first,
           "a replayed debit batch got another answer")  # fmt: skip
    statuses = [i.status for i in batch_answer(first, b.trust, b.id).items]
    expect(statuses == [SettlementStatus.DONE] * 2, f"the debit batch settled {statuses}")
    play.tried("the same payments in a debit batch under a new nonce")
    again = sign(DebitBatch(b.id, a.id, os.urandom(16), payments), b.credential).to_bytes()
    statuses = [i.status for i in batch_answer(checked.step(a.handle, "debit-batch", again),
                                               b.trust, b.id).items]  # fmt: skip
    expect(statuses == [SettlementStatus.ALREADY] * 2, f"a second batch settled {statuses}")
    expect(shop.wallet == net.money(30 * SEK), "the shop was paid other than once")
    expect(alice.shadow == net.money(70 * SEK), "Alice was debited other than once")

    notary_refuses_a_clones_payment(play)
    payer_sync_racing_a_debit_batch(play)


def notary_refuses_a_clones_payment(play: Play) -> None:
    """Dave's card is cloned; his two genuine payments settle, then bank-a asks the notary to
    record the clone's payment, which reuses the first one's counter and so its id, in a batch
    with the second. The notary answers the second ``already`` and the clone's ``refused``
    (``central.conflict``), nothing moves, and the answer is no receipt: it credits nobody."""
    net, checked = play.net, play.checked
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    dave = funded(checked, "Dave", "bank-a", 100 * SEK)
    shop, other = net.add_merchant("Dave's shop", "bank-b"), net.add_merchant("Other", "bank-b")
    play.tried("Dave's card is cloned; the card pays SEK 30 and 20 at a shop, the clone SEK 40")
    clone = clone_card(dave.card)
    first = Signed.from_bytes(checked.charge(shop, dave, 30 * SEK))
    second = Signed.from_bytes(checked.charge(shop, dave, 20 * SEK))
    checked.step(other.pos.charge, clone.process, dave.pin, net.money(40 * SEK))
    copied = clone.state.last_payment  # carried sealed to the other shop's module
    expect(copied is not None, "the clone made no payment")
    assert copied is not None
    checked.sync(shop)  # the genuine payments are recorded; the other shop never syncs
    conflict, genuine = item_of(a, copied), item_of(a, first)
    expect(conflict.pseudonym == genuine.pseudonym and conflict.commitment != genuine.commitment,
           "the clone's payment does not reuse the first one's pseudonym")  # fmt: skip
    play.tried("bank-a asks the notary to record the clone's payment in a batch")
    before = checked.snapshot()
    batch = NotariseBatch(a.id, NOTARY_ID, os.urandom(16), (item_of(a, second), conflict))
    data = checked.step(net.central.handle, "notarise-batch", sign(batch, a.credential).to_bytes())
    answers = [(i.status, i.detail) for i in batch_answer(data, a.trust, a.id).items]
    expect(
        answers == [(SettlementStatus.ALREADY, ""), (SettlementStatus.REFUSED, "central.conflict")],
        f"the notary answered {answers}",
    )
    expect(checked.snapshot() == before, "the notary's refusal changed something")
    play.finding(FindingKind.REFUSED, "central-bank", "central.conflict",
                 "the clone's payment under a recorded payment id")  # fmt: skip
    play.tried("the notary's answer offered to bank-b as the receipt for the clone's payment")
    credit = CreditBatch(a.id, b.id, os.urandom(16), (copied.to_bytes(),), data)
    play.refused("bank.no_receipt", "bank-b", "a credit batch with the notary's refusal",
                 b.handle, "credit-batch", sign(credit, a.credential).to_bytes())  # fmt: skip
    expect((shop.wallet, other.wallet) == (net.money(50 * SEK), net.money(0)),
           "the clone's payee was paid")  # fmt: skip


def payer_sync_racing_a_debit_batch(play: Play) -> None:
    """Erin's own sync runs while bank-b's debit batch for her payments is on its way: each
    payment is debited, notarised and credited once."""
    net, checked = play.net, play.checked
    erin = funded(checked, "Erin", "bank-a", 100 * SEK)
    shop = net.add_merchant("Erin's shop", "bank-b")
    checked.charge(shop, erin, 10 * SEK)
    checked.charge(shop, erin, 20 * SEK)
    notarised = net.central.notarised_count()
    raced: list[bool] = []

    def race(_to: str, kind: str, data: bytes) -> bytes:
        if kind == "debit-batch" and not raced:
            raced.append(True)
            erin.phone.sync(erin.pin)
        return data

    play.tried("the shop synchronises; Erin's sync reaches bank-a before the debit batch")
    net.network.taps.append(race)
    try:
        checked.sync(shop)
    finally:
        net.network.taps.remove(race)
    expect(raced == [True], "the payer's sync did not race the debit batch")
    expect(shop.wallet == net.money(30 * SEK), "the shop was paid other than once")
    expect(erin.shadow == net.money(70 * SEK), "Erin was debited other than once")
    expect(net.central.notarised_count() == notarised + 2, "a payment was notarised twice")


def forged_refund_request(play: Play) -> None:
    """A payment lost on its way to the shop, which declines it; the payee's intermediary asks
    the payer's for a refund, and the network keeps the request. Replayed, it gets the first
    answer and moves nothing; the payer's own intermediary asking itself for a refund of its
    customer's payment is refused: only the payee's intermediary may give a payment back."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 200 * SEK, spare=1_800 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    play.tried("Alice's card pays SEK 30; the payment never reaches the shop, which declines")
    card = client(alice)
    request = checked.step(shop.module.request_payment, card.identity(), net.money(30 * SEK))
    checked.step(card.verify_pin, alice.pin)
    checked.step(card.pay, request)
    checked.step(shop.pos.decline, request)
    play.tried("both synchronise; the network keeps bank-b's refund request")
    kept = Kept("refund-request")
    net.network.taps.append(kept)
    try:
        checked.sync(alice, shop)
    finally:
        net.network.taps.remove(kept)
    expect(len(kept.requests) == 1, f"{len(kept.requests)} refund requests, not one")
    expect(alice.shadow == net.money(200 * SEK), "the refund did not reach Alice")
    (data,) = kept.requests
    play.tried("the refund request replayed to bank-a")
    before = checked.snapshot()
    checked.step(net.network.send, "bank-a", "refund-request", data)
    expect(checked.snapshot() == before, "a replayed refund request moved something")
    play.tried("bank-a asks itself for a refund of Alice's payment")
    genuine, a = payload(data, RefundRequest), net.banks["bank-a"]
    forged = RefundRequest(a.id, a.id, os.urandom(16), genuine.payment, genuine.notary_receipt)
    play.refused("bank.wrong_parties", "bank-a", "a refund request from the payer's own bank",
                 net.network.send, "bank-a", "refund-request",
                 sign(forged, a.credential).to_bytes())  # fmt: skip
    expect(alice.shadow == net.money(200 * SEK) and shop.wallet == net.money(0),
           "a refund moved money twice")  # fmt: skip
