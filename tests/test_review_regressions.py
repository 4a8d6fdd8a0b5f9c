"""Regressions for faults found in review: a cut issuance, terminal requests that outrun the
terminal's limits, and a top-up racing an open shortfall."""

from __future__ import annotations

import pytest

from conftest import Checked
from offpay.device.card import Card
from offpay.device.reader import CardClient
from offpay.errors import OffpayError
from offpay.sim.network import OfflineNetwork
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import PaymentRequest

SEK = 100


def test_a_cut_card_issuance_can_be_retried(net: OfflineNetwork) -> None:
    bank = net.banks["bank-a"]
    customer = bank.open_customer("Ann")
    card = Card.manufacture()
    calls = {"n": 0}

    def flaky(apdu: bytes) -> bytes:
        calls["n"] += 1
        if apdu[1] == 0xC2 and calls["n"] < 4:  # PERSONALISE lost on the first attempt
            raise OffpayError("reader lost the card", code="network.cut")
        return card.process(apdu)

    with pytest.raises(OffpayError):
        bank.issue_card(customer, flaky, "1234")
    assert not card.is_personalised
    card_id = bank.issue_card(customer, flaky, "1234")
    assert card.state.card_id == card_id
    other = bank.open_customer("Eve")
    with pytest.raises(OffpayError) as exc:
        bank.issue_card(other, card.process, "1234")  # the same key for someone else
    assert exc.value.code in ("bank.device_taken", "device.personalised")


def test_terminal_counts_open_requests_against_its_limits(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Eleven accepted and one open request fill a 12-payment terminal: a thirteenth request
    is refused before any card pays, so no card is debited for a refused payment."""
    shop = net.add_merchant("Shop", "bank-b")
    users = [net.add_user(f"U{i}", "bank-a", online=100 * SEK) for i in range(13)]
    for u in users:
        checked.step(u.phone.top_up, u.pin, net.money(10 * SEK))
    for u in users[:11]:
        checked.charge(shop, u, 1 * SEK)
    open_request = shop.module.request_payment(
        CardClient(users[11].card.process).identity(), net.money(1 * SEK)
    )
    checked.refused(
        "limit.terminal_max_offline_payments",
        shop.module.request_payment,
        CardClient(users[12].card.process).identity(),
        net.money(1 * SEK),
    )
    assert users[12].card_balance == net.money(10 * SEK)
    client = CardClient(users[11].card.process)
    client.identity()  # the card's challenge was replaced; a fresh request is needed
    shop.module.cancel_request(
        payload_of(Signed.from_bytes(open_request), PaymentRequest).request_id
    )
    checked.charge(shop, users[11], 1 * SEK)
    assert shop.module.state.offline_payments == 12


def test_a_refused_card_payment_frees_the_terminal_request(
    net: OfflineNetwork, checked: Checked
) -> None:
    shop = net.add_merchant("Shop", "bank-b")
    poor = net.add_user("Poor", "bank-a")
    checked.refused(
        "funds.insufficient", shop.pos.charge, poor.card.process, poor.pin, net.money(5 * SEK)
    )
    assert shop.module.state.open_requests == ()


def test_a_top_up_pays_what_the_card_still_owes_first(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Zoe pays Alice, Alice pays Bob, Bob pays Charlie, all offline from money received
    offline. Charlie, then Bob synchronise first: both of Bob's payments are short and leave
    his card's log. When Bob tops up, what he still owes Charlie is settled from the new money
    before his card is given a balance, so the card never holds money already owed."""
    zoe = net.add_user("Zoe", "bank-a", online=500 * SEK)
    alice = net.add_user("Alice", "bank-a")
    bob = net.add_user("Bob", "bank-a", online=500 * SEK)
    charlie = net.add_user("Charlie", "bank-b")
    checked.step(zoe.phone.top_up, zoe.pin, net.money(100 * SEK))
    checked.p2p(zoe, alice, 80 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie, bob)
    assert len(bob.bank.open_shortfalls()) == 2
    assert bob.card.state.offline_transactions == 0
    checked.step(bob.phone.top_up, bob.pin, net.money(100 * SEK))
    assert bob.card_balance == bob.shadow == net.money(50 * SEK)
    checked.sync(zoe)  # Zoe's payment settles, then Alice's, then nothing more is owed
    assert bob.bank.open_shortfalls() == []
    checked.sync(bob, charlie, alice)
    assert bob.card_balance == bob.shadow == net.money(130 * SEK)
    assert charlie.card_balance == net.money(50 * SEK)
    assert alice.card_balance == alice.shadow == net.money(0)
