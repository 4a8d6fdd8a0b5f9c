"""Lost payments and refusal (issue 3, point 2; bank/refusal.py): a payee may decline, a payment
that never reached its payee goes back to its payer, resubmission still works, and nothing
settles twice. Conservation is checked after every step (``checked``)."""

from __future__ import annotations

import pytest
from tests.conftest import Checked, refused

from offpay.attacks.registry import play_in_process
from offpay.attacks.report import Outcome
from offpay.bank.refusal import refund_id
from offpay.device.reader import CardClient
from offpay.sim.network import Merchant, OfflineNetwork, User
from offpay.wire.codec import decode
from offpay.wire.messages import MAX_DECLINED, OfflinePayment

SEK = 100


def funded(net: OfflineNetwork, checked: Checked, name: str, bank: str, minor: int) -> User:
    user = net.add_user(name, bank, online=10 * minor)
    checked.top_up(user, minor)
    return user


def lost_at_the_terminal(checked: Checked, shop: Merchant, user: User, minor: int) -> bytes:
    """The terminal asks, the card pays, and the payment never reaches the terminal; returns
    the signed request."""
    card = CardClient(user.card.process)
    request = checked.step(shop.module.request_payment, card.identity(), checked.money(minor))
    checked.step(card.verify_pin, user.pin)
    checked.step(card.pay, request)
    return request


def pay_out(shop: Merchant, owner: User, minor: int) -> None:
    """A transfer between the shop's wallet and its owner's online wallet at the same bank (the
    engine has no merchant payout of its own yet)."""
    bank = shop.bank
    wallets = (f"{shop.customer_id}/merchant", f"{owner.customer_id}/online")
    source, target = wallets if minor > 0 else wallets[::-1]
    with bank.db.begin() as conn:
        bank.ledger.move(conn, source, target, abs(minor), "payout", None)


@pytest.mark.parametrize("banks", [("bank-a", "bank-b"), ("bank-a", "bank-a")], ids=["two", "one"])
@pytest.mark.parametrize("first", ["payer", "terminal"])
def test_a_payment_that_never_reached_the_terminal_goes_back_to_the_customer(
    net: OfflineNetwork, checked: Checked, banks: tuple[str, str], first: str
) -> None:
    alice = funded(net, checked, "Alice", banks[0], 200 * SEK)
    shop = net.add_merchant("Shop", banks[1])
    request = lost_at_the_terminal(checked, shop, alice, 30 * SEK)
    assert alice.card_balance == net.money(170 * SEK)
    checked.step(shop.pos.decline, request)  # the shop gives up: no goods, no payment

    order = [alice, shop] if first == "payer" else [shop, alice]
    checked.sync(*order)
    assert shop.wallet == net.money(0)
    assert alice.shadow == net.money(200 * SEK)
    checked.sync(alice)
    assert alice.card_balance == net.money(200 * SEK)  # not charged in the end
    tx_id = decode(alice.card.state.last_payment.payload, OfflinePayment).tx_id
    assert net.is_notarised(tx_id) and net.is_notarised(refund_id(tx_id))
    assert net.central.notarised_count() == 2

    checked.sync_everyone()  # and again: nothing moves twice
    assert (alice.shadow, shop.wallet) == (net.money(200 * SEK), net.money(0))
    assert net.central.notarised_count() == 2


def test_a_request_still_open_at_the_terminals_sync_is_declined(
    net: OfflineNetwork, checked: Checked
) -> None:
    """The shop never cancelled: the request lapses at the terminal's sync."""
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    lost_at_the_terminal(checked, shop, alice, 30 * SEK)
    checked.sync(alice)
    assert shop.wallet == net.money(30 * SEK)  # credited: the terminal may still get it
    checked.sync(shop)  # ... but it did not; the request lapses into a decline
    assert shop.wallet == net.money(0)
    assert shop.module.state.open_requests == ()
    checked.sync(alice)
    assert alice.card_balance == alice.shadow == net.money(200 * SEK)


def test_resubmission_still_works_and_nothing_goes_back(
    net: OfflineNetwork, checked: Checked
) -> None:
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    request = lost_at_the_terminal(checked, shop, alice, 30 * SEK)
    checked.step(shop.pos.resubmit, alice.card.process)
    checked.step(shop.pos.decline, request)  # too late: the payment was received
    checked.sync(shop, alice, shop, alice)
    assert (shop.wallet, alice.shadow) == (net.money(30 * SEK), net.money(170 * SEK))
    assert alice.card_balance == net.money(170 * SEK)
    assert net.central.notarised_count() == 1


def test_a_shop_can_refuse_a_payment(net: OfflineNetwork, checked: Checked) -> None:
    """The shop declines the request; the card's payment for it then arrives and is refused
    by the module; the customer gets the money back."""
    alice = funded(net, checked, "Alice", "bank-b", 200 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    card = CardClient(alice.card.process)
    request = checked.step(shop.module.request_payment, card.identity(), net.money(50 * SEK))
    checked.step(shop.pos.decline, request)
    checked.step(card.verify_pin, alice.pin)
    payment = checked.step(card.pay, request)  # the card cannot know; it pays
    checked.refused("device.declined", shop.pos.receive, payment)
    checked.sync(alice, shop, alice)
    assert alice.card_balance == alice.shadow == net.money(200 * SEK)
    assert shop.wallet == net.money(0)


@pytest.mark.parametrize("first", ["payer", "payee"])
def test_a_person_can_refuse_a_payment(net: OfflineNetwork, checked: Checked, first: str) -> None:
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 10 * SEK)
    request = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(40 * SEK))
    payment = checked.step(alice.phone.pay, alice.pin, request)
    checked.step(bob.phone.decline, request)  # Bob does not want it
    checked.refused("device.declined", bob.phone.accept, bob.pin, payment)
    checked.refused("device.no_request", bob.phone.decline, request)  # declined once only
    checked.sync(*((alice, bob) if first == "payer" else (bob, alice)))
    checked.sync(alice, bob)
    assert alice.card_balance == alice.shadow == net.money(200 * SEK)
    assert bob.card_balance == bob.shadow == net.money(10 * SEK)
    assert [kind for kind, device, _ in bob.bank.anomalies() if device == bob.card_id] == ["refund"]


def test_a_received_payment_cannot_be_declined(net: OfflineNetwork, checked: Checked) -> None:
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    bob = net.add_user("Bob", "bank-b")
    request = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(40 * SEK))
    checked.step(bob.phone.accept, bob.pin, checked.step(alice.phone.pay, alice.pin, request))
    checked.refused("device.no_request", bob.phone.decline, request)
    checked.sync(alice, bob)
    assert bob.card_balance == bob.shadow == net.money(40 * SEK)


def test_a_refund_the_shop_cannot_cover_yet_is_owed_then_made(
    net: OfflineNetwork, checked: Checked
) -> None:
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    request = lost_at_the_terminal(checked, shop, alice, 30 * SEK)
    checked.sync(alice)  # the shop is credited SEK 30 ...
    owner = net.add_user("Owner", "bank-b")
    checked.step(pay_out, shop, owner, 30 * SEK)  # ... and pays it out to its owner
    checked.step(shop.pos.decline, request)
    checked.sync(shop)
    assert alice.shadow == net.money(170 * SEK)  # owed, not yet made
    [(_, device, amount)] = shop.bank.refusals.owed()
    assert (device, amount) == (shop.terminal_id, net.money(30 * SEK))
    checked.charge(shop, alice, 10 * SEK)
    checked.sync(shop)  # SEK 10 reaches the shop: still short of SEK 30
    assert alice.shadow == net.money(160 * SEK)
    checked.step(pay_out, shop, owner, -20 * SEK)  # the owner puts SEK 20 back
    checked.step(shop.bank.retry_pending)
    assert alice.shadow == net.money(190 * SEK)
    assert shop.bank.refusals.owed() == []
    checked.sync(alice)
    assert alice.card_balance == net.money(190 * SEK)


@pytest.mark.parametrize("kind", ["notarise", "refund-request"])
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_a_cut_refund_completes_on_retry(
    net: OfflineNetwork, checked: Checked, kind: str, after: bool
) -> None:
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    request = lost_at_the_terminal(checked, shop, alice, 30 * SEK)
    checked.sync(alice)
    checked.step(shop.pos.decline, request)
    net.network.cut_next(kind, after=after)
    checked.sync(shop)  # the sync completes; the refund waits for retry
    checked.step(shop.bank.retry_pending)
    checked.step(shop.bank.retry_pending)
    assert (alice.shadow, shop.wallet) == (net.money(200 * SEK), net.money(0))
    assert net.central.notarised_count() == 2
    assert net.banks["bank-b"].in_transit() == net.money(0)


def test_a_refund_request_from_another_bank_is_refused_and_a_replay_moves_nothing(
    net: OfflineNetwork, checked: Checked
) -> None:
    """`offpay attack forged-refund-request`: the refund request replayed gets the first answer
    and moves nothing; bank-a asking itself for a refund of its own customer's payment is
    refused."""
    report = play_in_process("forged-refund-request", checked)
    assert report.outcome is Outcome.PREVENTED and report.loss == net.money(0)
    assert [(f.party, f.code) for f in report.findings] == [("bank-a", "bank.wrong_parties")]
    alice, shop = net.users["Alice"], net.merchants["Shop"]
    assert alice.shadow == net.money(200 * SEK)  # the refund, once
    assert alice.card_balance == net.money(170 * SEK)  # her card gets it at its next sync
    assert shop.wallet == net.money(0)
    assert net.central.notarised_count() == 2  # the payment and its refund, once each


def test_too_many_declines_are_refused_before_anything_moves(
    net: OfflineNetwork, checked: Checked
) -> None:
    shop = net.add_merchant("Shop", "bank-b")
    payers = [funded(net, checked, f"P{i}", "bank-a", 10 * SEK) for i in range(2)]
    for i in range(MAX_DECLINED):
        payer = payers[i % 2]
        request = shop.module.request_payment(
            CardClient(payer.card.process).identity(), net.money(SEK)
        )
        shop.pos.decline(request)
    error = refused(
        "device.busy",
        shop.module.request_payment,
        CardClient(payers[0].card.process).identity(),
        net.money(SEK),
    )
    assert "synchronise" in error.message
    checked.sync(shop)  # declares all of them at once; the terminal takes requests again
    shop.module.request_payment(CardClient(payers[0].card.process).identity(), net.money(SEK))
    too_many = tuple(bytes([i]) * 16 for i in range(MAX_DECLINED + 1))
    refused("bank.too_many_declines", shop.bank.refusals.declare, shop.terminal_id, too_many)
