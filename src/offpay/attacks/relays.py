"""A hostile relay (phone, PoS app or network) that tries to send a payment to another payee."""

from __future__ import annotations

import functools

from offpay.attacks.checked import card_snapshot, expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, altered, funded, payment_to_shop
from offpay.relay.phone import confirmation_code
from offpay.wire.messages import PaymentRequest


def relay_swapping_the_payee(play: Play) -> None:
    """Hostile phones and PoS apps try to turn a payment to Bob (or to a shop) into one to
    Mallory (or another shop): by delivering the signed payment to another payee, rewriting the
    payee in the request, or substituting a request that Mallory's card signed for an earlier
    challenge or for another payer. Each is refused; the genuine payments settle to the payees
    that asked for them and Mallory gets nothing."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    carol = funded(checked, "Carol", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")
    mallory = net.add_user("Mallory", "bank-b")
    shop = net.add_merchant("Shop", "bank-b")
    other_shop = net.add_merchant("Other shop", "bank-b")

    play.tried("Mallory's card signs requests for an old challenge of Alice's and for Carol")
    stale = checked.step(mallory.phone.ask, alice.phone.show_identity(), net.money(20 * SEK))
    for_carol = checked.step(mallory.phone.ask, carol.phone.show_identity(), net.money(20 * SEK))

    play.tried("Bob asks Alice for SEK 20; the relay names Mallory as payee, or swaps requests")
    to_bob = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(20 * SEK))
    to_mallory = altered(to_bob, PaymentRequest, sender=mallory.card_id)
    play.refused(
        "crypto.bad_signature",
        "Alice's card",
        "Bob's request naming Mallory",
        alice.phone.pay,
        alice.pin,
        to_mallory,
    )
    play.refused(
        "wire.replay",
        "Alice's card",
        "Mallory's request for an old challenge",
        alice.phone.pay,
        alice.pin,
        stale,
    )
    play.refused(
        "wire.wrong_receiver",
        "Alice's card",
        "Mallory's request made for Carol",
        alice.phone.pay,
        alice.pin,
        for_carol,
    )
    payment = checked.step(alice.phone.pay, alice.pin, to_bob)
    play.tried("the relay delivers Alice's signed payment to Mallory's card")
    play.refused(
        "wire.wrong_receiver",
        "Mallory's card",
        "Alice's payment to Bob",
        mallory.phone.accept,
        mallory.pin,
        payment,
    )
    checked.step(bob.phone.accept, bob.pin, payment)

    play.tried("a PoS app delivers Alice's payment to the shop to another shop's module")
    at_shop = payment_to_shop(alice, shop, 30 * SEK)
    checked.conserved()
    play.refused(
        "wire.wrong_receiver",
        "the other shop's module",
        "Alice's payment to the shop",
        other_shop.pos.receive,
        at_shop,
    )
    checked.step(shop.pos.receive, at_shop)
    checked.sync(alice, bob, mallory, shop, other_shop)


def live_request_of_another_payee(play: Play) -> None:
    """The relay hands Alice's identity and fresh challenge to Mallory's card and brings back
    Mallory's request, signed for that challenge. The two people compare the code their phones
    show: Alice's phone refuses the substitute before her card is touched; with the genuine
    request the codes match and the payment goes through."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")
    mallory = net.add_user("Mallory", "bank-b")
    identity = alice.phone.show_identity()
    to_bob = checked.step(bob.phone.ask, identity, net.money(20 * SEK))
    play.tried(
        "the relay hands Alice's fresh challenge to Mallory's card too, and brings "
        "back Mallory's request instead of Bob's"
    )
    to_mallory = checked.step(mallory.phone.ask, identity, net.money(20 * SEK))
    shown_by_bob = confirmation_code(to_bob)
    expect(confirmation_code(to_mallory) != shown_by_bob, "Mallory's request shows Bob's code")
    card = card_snapshot(alice)
    play.refused(
        "payment.code_mismatch",
        "Alice's phone",
        f"Mallory's request, Alice having typed the code Bob's phone shows ({shown_by_bob})",
        functools.partial(alice.phone.pay, code=shown_by_bob),
        alice.pin,
        to_mallory,
    )
    expect(card_snapshot(alice) == card, "Alice's card was touched")
    payment = checked.step(alice.phone.pay, alice.pin, to_bob, code=shown_by_bob)
    checked.step(bob.phone.accept, bob.pin, payment)
    checked.sync(alice, bob, mallory)
