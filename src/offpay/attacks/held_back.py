"""Messages a hostile relay holds back: a session delivered late, a payment that never reaches
the shop."""

from __future__ import annotations

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, client, wire
from offpay.bank.engine import engine_id
from offpay.wire.messages import Operation


def session_delivered_late(play: Play) -> None:
    """The phone keeps a top-up session back, opens a sync session and lets it complete, then
    delivers the old one: refused as stale; the card stays usable and nothing moves."""
    net, checked = play.net, play.checked
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    checked.top_up(alice, 100 * SEK)
    play.tried("Alice's phone holds back a SEK 50 top-up session and lets a later sync complete")
    card = client(alice)
    card.verify_pin(alice.pin)
    held = card.begin_online(engine_id("bank-a"), Operation.TOP_UP, net.money(50 * SEK))
    checked.sync(alice)
    play.tried("the phone delivers the held-back session to bank-a")
    play.refused(
        "device.stale_session", "bank-a", "the late top-up session",
        wire(net).send, "bank-a", "card-session", held,
    )  # fmt: skip
    status = play.incidents.status("bank-a", alice.card_id)
    expect(status == "active", f"a late session left an honest card {status}")
    checked.top_up(alice, 50 * SEK)
    expect(alice.card_balance == alice.shadow == net.money(150 * SEK), "the card lost money")


def payment_that_never_reached_the_shop(play: Play) -> None:
    """Report §3.8 point 4: the card pays, the payment is lost on its way to the terminal, the
    shop declines the request and the customer synchronises first. The module refuses the
    payment if it turns up later; the shop is not paid and the customer gets the money back."""
    net, checked = play.net, play.checked
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    play.tried("Alice's card pays SEK 30; the PoS app loses the payment and the shop declines")
    card = client(alice)
    request = checked.step(shop.module.request_payment, card.identity(), net.money(30 * SEK))
    checked.step(card.verify_pin, alice.pin)
    payment = checked.step(card.pay, request)  # lost on its way to the terminal
    checked.step(shop.pos.decline, request)
    play.tried("the lost payment turns up at the module after the decline")
    play.refused(
        "device.declined", "the shop's module", "the payment after the decline",
        shop.pos.receive, payment,
    )  # fmt: skip
    checked.sync(alice, shop, alice)
    expect(shop.wallet == net.money(0), "the shop was paid for a declined request")
    expect(alice.card_balance == alice.shadow == net.money(100 * SEK), "the refund is missing")


def memory_copy_written_back(play: Play) -> None:
    """An attacker reads a card's and a terminal's sealed memory, spends, and writes the copy
    back: each device refuses its older memory (a monotonic counter seals it), so nothing is
    paid twice and the terminal cannot hide the reset it applied."""
    net, checked = play.net, play.checked
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    play.tried("the attacker copies the memory of Alice's card (SEK 100) and pays SEK 80")
    copy_of_memory = alice.card.memory.blob
    checked.charge(shop, alice, 80 * SEK)
    play.tried("the copy is written back and the SEK 100 spent again")
    alice.card.memory.blob = copy_of_memory
    play.refused_any(
        "device.rolled_back", "Alice's card", "a charge from the older memory",
        checked.charge, shop, alice, 80 * SEK,
    )  # fmt: skip
    play.refused_any(
        "device.rolled_back", "Alice's card", "a sync from the older memory",
        alice.phone.sync, alice.pin,
    )  # fmt: skip
    expect(shop.module.state.received == net.money(80 * SEK), "the shop took a payment twice")
    play.tried("the shop's module memory copied, the module synchronised, the copy written back")
    before = shop.module.memory.blob
    checked.sync(shop)
    shop.module.memory.blob = before
    play.refused_any(
        "device.rolled_back", "the shop's module", "a sync from the older memory", shop.pos.sync
    )
    expect(shop.wallet == net.money(80 * SEK), "the shop was paid twice or not at all")
