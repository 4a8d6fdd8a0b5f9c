"""Settling an upload as one batch (issue 7, point 7): the batch path must settle exactly what
the one-by-one path settles, with one notarise request per upload and one debit or credit
request per other intermediary, and fall back to the one-by-one path for anything that is not
plain. Its three new request kinds refuse bad input like the others and answer a replay with
the first answer."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pytest

from conftest import Checked
from offpay.bank.verifier import Verifier
from offpay.central.bank import NOTARY_ID
from offpay.crypto.pki import Role
from offpay.sim.network import Merchant, OfflineNetwork, User
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import (
    BatchResult,
    CardSession,
    CreditBatch,
    DebitBatch,
    NotariseBatch,
    NotariseItem,
    OfflinePayment,
    SettlementStatus,
)
from test_attacks import altered, anomalies_of, begin, broken_card_key, payload, payment_to_shop

PIN = "1234"
SEK = 100


@pytest.fixture
def traffic(net: OfflineNetwork) -> list[tuple[str, str, bytes]]:
    seen: list[tuple[str, str, bytes]] = []

    def tap(to: str, kind: str, data: bytes) -> bytes:
        seen.append((to, kind, data))
        return data

    net.network.taps.append(tap)
    return seen


def kinds(traffic: list[tuple[str, str, bytes]]) -> list[str]:
    return [kind for _, kind, _ in traffic]


def payer(net: OfflineNetwork, checked: Checked, name: str, bank: str, card: int) -> User:
    user = net.add_user(name, bank, online=1000 * SEK)
    checked.top_up(user, card * SEK)
    return user


def settled_once(net: OfflineNetwork, count: int) -> None:
    assert net.central.notarised_count() == count
    debited = sum((b.settled_totals()[0] for b in net.banks.values()), net.money(0))
    credited = sum((b.settled_totals()[1] for b in net.banks.values()), net.money(0))
    assert debited == credited
    assert all(b.in_transit() == net.money(0) for b in net.banks.values())


@pytest.fixture(params=["here", "pool"])
def verifying(request: pytest.FixtureRequest, net: OfflineNetwork) -> Iterator[str]:
    """Payments verified in this process, or (``pool``) by a worker process for any batch."""
    if request.param == "pool":
        for bank in net.banks.values():
            bank.verifier = Verifier(bank.root_der, workers=1)
            bank.verifier.pool_min = 2
    yield request.param
    for bank in net.banks.values():
        bank.verifier.close()


def test_a_terminal_upload_settles_as_one_batch(
    net: OfflineNetwork,
    checked: Checked,
    traffic: list[tuple[str, str, bytes]],
    verifying: str,
) -> None:
    """Cards of both banks pay a shop at bank-b: one sync asks bank-a once, notarises once per
    payer's bank and credits bank-b once; a payer card's sync afterwards settles nothing."""
    shop = net.add_merchant("Shop", "bank-b")
    cards = [payer(net, checked, f"P{i}", ("bank-a", "bank-b")[i % 2], 100) for i in range(4)]
    for i, user in enumerate(cards):
        checked.charge(shop, user, (10 + i) * SEK)
        checked.charge(shop, user, 1 * SEK)
    traffic.clear()
    checked.sync(shop)
    sent = kinds(traffic)
    assert sent.count("debit-batch") == 1 and sent.count("credit-batch") == 1
    assert sent.count("notarise-batch") == 2  # bank-a's payers and bank-b's
    assert not {"notarise", "debit-request", "credit-request"} & set(sent)
    assert shop.wallet == net.money((10 + 11 + 12 + 13 + 4) * SEK)
    settled_once(net, 8)
    traffic.clear()
    checked.sync(*cards)
    assert "notarise-batch" not in kinds(traffic) and "notarise" not in kinds(traffic)
    settled_once(net, 8)
    assert [u.card_balance for u in cards] == [u.shadow for u in cards]
    assert cards[0].shadow == net.money((100 - 11) * SEK)


def test_a_payer_the_batch_cannot_cover_waits_in_order_and_the_others_settle(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Bob spends money he received offline and not yet settled: his payments wait in the
    queue in his card's order while Alice's settle in the same batch; once money reaches him
    they settle, exactly once."""
    alice = payer(net, checked, "Alice", "bank-a", 100)
    carol = payer(net, checked, "Carol", "bank-a", 100)
    bob = net.add_user("Bob", "bank-a")
    shop = net.add_merchant("Shop", "bank-a")
    checked.p2p(carol, bob, 50 * SEK)
    checked.charge(shop, bob, 20 * SEK)
    checked.charge(shop, alice, 30 * SEK)
    checked.charge(shop, bob, 25 * SEK)
    checked.sync(shop)
    assert shop.wallet == net.money(30 * SEK)
    assert [p.amount for p in alice.bank.pending(bob.card_id)] == [
        net.money(s * SEK) for s in (20, 25)
    ]
    checked.sync(carol)  # Bob's 50 reaches him: his waiting payments settle in his order
    assert shop.wallet == net.money(75 * SEK)
    assert bob.shadow == net.money(5 * SEK)
    checked.sync(bob, shop)
    settled_once(net, 4)
    assert not alice.bank.open_shortfalls()


def test_a_counterfeit_entry_blocks_the_card_and_the_genuine_one_settles(
    net: OfflineNetwork, checked: Checked, verifying: str
) -> None:
    """Mallory's broken card uploads two payments from Alice, one altered from SEK 20 to 90:
    the upload settles one by one, the counterfeit is refused and blocks her card, the genuine
    payment settles; Alice's sync later settles her other payment once."""
    alice = payer(net, checked, "Alice", "bank-a", 100)
    mallory = net.add_user("Mallory", "bank-a")
    checked.p2p(alice, mallory, 10 * SEK)
    second = checked.p2p(alice, mallory, 20 * SEK)
    session = payload(begin(mallory), CardSession)
    first, last = session.log
    counterfeit = altered(second, OfflinePayment, amount=net.money(90 * SEK))
    log = (first, dataclasses.replace(last, payment=Signed.from_bytes(counterfeit)))
    forged = sign(dataclasses.replace(session, log=log), broken_card_key(mallory)).to_bytes()
    checked.step(net.network.send, "bank-a", "card-session", forged)
    assert "invalid_entry" in anomalies_of(mallory.bank, mallory.card_id)
    assert mallory.bank.device(mallory.card_id).status == "blocked"
    assert mallory.shadow == net.money(10 * SEK) and alice.shadow == net.money(90 * SEK)
    checked.sync(alice)
    assert mallory.shadow == net.money(30 * SEK) and alice.shadow == net.money(70 * SEK)
    settled_once(net, 2)


def test_a_racing_payer_sync_settles_each_payment_once(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Alice's own sync runs while bank-b's debit batch for her payments is on its way."""
    alice = payer(net, checked, "Alice", "bank-a", 100)
    shop = net.add_merchant("Shop", "bank-b")
    checked.charge(shop, alice, 10 * SEK)
    checked.charge(shop, alice, 20 * SEK)
    raced: list[bool] = []

    def race(to: str, kind: str, data: bytes) -> bytes:
        if kind == "debit-batch" and not raced:
            raced.append(True)
            alice.phone.sync(PIN)
        return data

    net.network.taps.append(race)
    checked.sync(shop)
    assert raced
    assert shop.wallet == net.money(30 * SEK) and alice.shadow == net.money(70 * SEK)
    settled_once(net, 2)


# --- the new request kinds: bad input and replays ----------------------------------------------


def payments_held(net: OfflineNetwork, checked: Checked) -> tuple[User, Merchant, list[Signed]]:
    """Two payments of Alice (bank-a) to a shop of bank-b, not settled."""
    alice = payer(net, checked, "Alice", "bank-a", 100)
    shop = net.add_merchant("Shop", "bank-b")
    payments = [Signed.from_bytes(payment_to_shop(alice, shop, m * SEK)) for m in (10, 20)]
    return alice, shop, payments


def answer(data: bytes, trust: object, receiver: str) -> BatchResult:
    result, _ = open_signed(data, BatchResult, trust, frozenset(Role), receiver=receiver)  # type: ignore[arg-type]
    return result


def test_a_debit_batch_replayed_gets_the_same_answer_and_settles_once(
    net: OfflineNetwork, checked: Checked
) -> None:
    alice, shop, payments = payments_held(net, checked)
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    request = sign(DebitBatch(b.id, a.id, os.urandom(16), tuple(payments)), b.credential)
    first = checked.step(a.handle, "debit-batch", request.to_bytes())
    assert checked.step(a.handle, "debit-batch", request.to_bytes()) == first
    done = answer(first, b.trust, b.id)
    assert [i.status for i in done.items] == [SettlementStatus.DONE] * 2
    assert shop.wallet == net.money(30 * SEK)
    again = sign(DebitBatch(b.id, a.id, os.urandom(16), tuple(payments)), b.credential)
    result = answer(checked.step(a.handle, "debit-batch", again.to_bytes()), b.trust, b.id)
    assert [i.status for i in result.items] == [SettlementStatus.ALREADY] * 2
    settled_once(net, 2)
    assert alice.shadow == net.money(70 * SEK)


def test_batch_requests_refuse_bad_input_and_move_nothing(
    net: OfflineNetwork, checked: Checked
) -> None:
    """A debit batch for another receiver or with a broken signature, a credit batch whose
    receipt does not cover its payments or that concerns other banks, a notarise batch from
    the payee's bank or of a negative amount: all refused, nothing moves."""
    _, shop, payments = payments_held(net, checked)
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    nonce = os.urandom(16)
    wrong = sign(DebitBatch(b.id, b.id, nonce, tuple(payments)), b.credential).to_bytes()
    checked.refused("wire.wrong_receiver", a.handle, "debit-batch", wrong)
    good = sign(DebitBatch(b.id, a.id, nonce, tuple(payments)), b.credential)
    spoiled = dataclasses.replace(good, signature=bytes(len(good.signature))).to_bytes()
    checked.refused("crypto.bad_signature", a.handle, "debit-batch", spoiled)
    checked.refused("wire.malformed", a.handle, "debit-batch", good.to_bytes()[:-3])

    items = tuple(item_of(p) for p in payments)
    by_payee = sign(NotariseBatch(b.id, NOTARY_ID, nonce, items), b.credential).to_bytes()
    checked.refused("central.not_payer", net.central.handle, "notarise-batch", by_payee)
    negative = (dataclasses.replace(items[0], amount=net.money(0)), items[1])
    zero = sign(NotariseBatch(a.id, NOTARY_ID, nonce, negative), a.credential).to_bytes()
    checked.refused("central.bad_amount", net.central.handle, "notarise-batch", zero)

    # A genuine receipt, for Carol's payments, cannot credit Alice's.
    carol = payer(net, checked, "Carol", "bank-a", 100)
    checked.charge(shop, carol, 5 * SEK)
    checked.charge(shop, carol, 6 * SEK)
    sent: list[bytes] = []
    net.network.taps.append(lambda to, kind, data: sent.append(data) or data)
    checked.sync(shop)
    receipt = next(
        r.notary_receipt for r in (payload(d, CreditBatch) for d in sent if _is(d, CreditBatch))
    )
    credit = CreditBatch(a.id, b.id, os.urandom(16), tuple(payments), receipt)
    before = shop.wallet
    assert before == net.money(11 * SEK)
    checked.refused(
        "bank.no_receipt", b.handle, "credit-batch", sign(credit, a.credential).to_bytes()
    )
    own = sign(dataclasses.replace(credit, sender=b.id, receiver=a.id), b.credential).to_bytes()
    checked.refused("bank.wrong_parties", a.handle, "credit-batch", own)
    assert shop.wallet == before


def item_of(signed: Signed) -> NotariseItem:
    p = payload(signed.to_bytes(), OfflinePayment)
    return NotariseItem(p.tx_id, signed.digest, p.payer_institution, p.payee_institution, p.amount)


def _is(data: bytes, cls: type) -> bool:
    try:
        payload(data, cls)
    except Exception:
        return False
    return True
