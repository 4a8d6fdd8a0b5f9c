"""Settling an upload as one batch (issue 7, point 7): the batch path must settle exactly what
the one-by-one path settles, with one notarise request per upload and one debit or credit
request per other intermediary, and fall back to the one-by-one path for anything that is not
plain. Its three new request kinds refuse bad input like the others and answer a replay with
the first answer."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import cbor2
import pytest

from conftest import Checked
from offpay.attacks.registry import play_in_process
from offpay.attacks.report import Outcome
from offpay.attacks.tools import begin_signed, payment_to_shop
from offpay.bank.records import VerifiedPayment
from offpay.bank.verifier import Verifier, key_of
from offpay.crypto.pki import Role
from offpay.sim.network import OfflineNetwork, User
from offpay.wire.envelope import Signed, open_signed, payload_of, sign
from offpay.wire.messages import (
    BatchResult,
    CardSession,
    DebitBatch,
    OfflinePayment,
    SettlementStatus,
)
from test_attacks import altered, anomalies_of, broken_card_key, payload

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
    session = payload(begin_signed(mallory), CardSession)  # Mallory broke her card
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


def test_forged_and_replayed_batch_requests_are_refused_and_settle_once(
    net: OfflineNetwork, checked: Checked
) -> None:
    """`offpay attack forged-batch-request`: a debit batch for another receiver, with a broken
    signature or truncated; a notarise batch from the payee's bank or of a zero amount; a
    credit batch whose receipt does not cover its payments or that concerns other banks: all
    refused, nothing moves. The genuine debit batch replayed gets the same answer; under a new
    nonce its payments are ``already``. A clone's payment under a recorded id is refused by
    the notary and its answer credits nobody. Erin's own sync races the debit batch for her
    payments: each settles once."""
    report = play_in_process("forged-batch-request", checked)
    assert report.outcome is Outcome.PREVENTED and report.loss == report.bound == net.money(0)
    assert [(f.party, f.code) for f in report.findings] == [
        ("bank-a", "wire.wrong_receiver"),
        ("bank-a", "crypto.bad_signature"),
        ("bank-a", "wire.malformed"),
        ("central-bank", "central.not_payer"),
        ("central-bank", "central.bad_amount"),
        ("bank-b", "bank.no_receipt"),
        ("bank-a", "bank.wrong_parties"),
        ("central-bank", "central.conflict"),
        ("bank-b", "bank.no_receipt"),
    ]
    users, shops = net.users, net.merchants
    assert shops["Shop"].wallet == net.money(30 * SEK)
    assert users["Alice"].shadow == net.money(70 * SEK)
    assert shops["Carol's shop"].wallet == net.money(11 * SEK)
    assert (shops["Dave's shop"].wallet, shops["Other"].wallet) == (
        net.money(50 * SEK),
        net.money(0),
    )
    assert shops["Erin's shop"].wallet == net.money(30 * SEK)
    assert users["Erin"].shadow == net.money(70 * SEK)
    settled_once(net, 2 + 2 + 2 + 2)  # Alice's, Carol's, Dave's genuine, Erin's


def _spoiled_encodings(data: bytes) -> list[bytes]:
    """A signed payment's bytes made invalid three ways: not CBOR, its map in another key
    order (not the canonical encoding), its payer's signature broken."""
    envelope = cbor2.loads(data)
    reordered = cbor2.dumps(dict(reversed(list(envelope.items()))))
    broken = Signed.from_bytes(data)
    broken = dataclasses.replace(broken, signature=bytes(len(broken.signature)))
    return [b"\x01garbage", reordered, broken.to_bytes()]


@pytest.mark.parametrize("spoil", [0, 1, 2])
def test_a_debit_batch_with_a_payment_that_is_not_its_canonical_signed_bytes_is_refused(
    net: OfflineNetwork, checked: Checked, verifying: str, spoil: int
) -> None:
    """Issue 15: batches carry payments as bytes. One element that is not CBOR, not canonical,
    or whose signature fails refuses the whole batch with the typed error the one-by-one
    path gives, whether the pool or this process verified it; nothing moves, and the genuine
    batch then settles each payment once."""
    alice = payer(net, checked, "Alice", "bank-a", 100)
    shop = net.add_merchant("Shop", "bank-b")
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    good = tuple(payment_to_shop(alice, shop, m * SEK) for m in (10, 20, 30))
    bad = (good[0], _spoiled_encodings(good[1])[spoil], good[2])
    request = sign(DebitBatch(b.id, a.id, os.urandom(16), bad), b.credential).to_bytes()
    before = checked.snapshot()
    code = ("wire.malformed", "wire.malformed", "crypto.bad_signature")[spoil]
    error = checked.refused(code, net.network.send, "bank-a", "debit-batch", request)
    assert error.code == code
    assert checked.snapshot() == before
    genuine = sign(DebitBatch(b.id, a.id, os.urandom(16), good), b.credential).to_bytes()
    answer = checked.step(net.network.send, "bank-a", "debit-batch", genuine)
    result, _ = open_signed(answer, BatchResult, b.trust, Role.ENGINE, receiver=b.id)
    assert [i.status for i in result.items] == [SettlementStatus.DONE] * 3
    assert alice.shadow == net.money(40 * SEK)
    settled_once(net, 3)


def test_the_verifier_takes_bytes_returns_plain_records_and_remembers_only_digests(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Bytes in, a slotted record of plain values out (the same whether a worker process or
    this one verified it); the memo holds 32-byte digests and records, no payload, and a
    payment seen again is not sent to the pool."""
    alice = payer(net, checked, "Alice", "bank-a", 100)
    shop = net.add_merchant("Shop", "bank-b")
    datas = [payment_to_shop(alice, shop, m * SEK) for m in (1, 2, 3)]
    root = net.banks["bank-b"].root_der
    pooled = Verifier(root, workers=1)
    pooled.pool_min = 2
    here = Verifier(root, workers=0)
    try:
        records = pooled.check_all(datas, net.banks["bank-b"].trust)
        assert records == here.check_all(datas, net.banks["bank-b"].trust)
        for data, record in zip(datas, records, strict=True):
            signed = Signed.from_bytes(data)
            payment = payload_of(signed, OfflinePayment)
            assert isinstance(record, VerifiedPayment) and not hasattr(record, "__dict__")
            assert (record.tx_id, record.sender, record.amount, record.digest) == (
                payment.tx_id,
                payment.sender,
                payment.amount,
                signed.digest,
            )
        for data, record in zip(datas, records, strict=True):  # kept by digest, no payload
            assert pooled.remembered(key_of(data)) == record
            assert all(len(v) <= 64 for v in vars_of(record) if isinstance(v, bytes))
        assert pooled.start(datas).job is None  # all remembered: nothing goes to the pool
    finally:
        pooled.close()


def vars_of(record: VerifiedPayment) -> list[object]:
    return [getattr(record, f.name) for f in dataclasses.fields(record)]
