"""A card left after its PIN: the holder entered it, the payment did not happen (the card
pulled out, the power cut), and somebody else presents the card."""

from __future__ import annotations

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, client, funded


def card_left_after_its_pin(play: Play) -> None:
    """The PIN-verified status and the challenge live in the card's RAM and are lost at every
    reset: the payment the holder started is refused (its challenge is gone), and a new one
    needs the PIN again. The holder, back with the PIN, pays once."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    card = client(alice)
    play.tried("Alice's card is asked for SEK 30 and she enters her PIN; the card is pulled out")
    request = checked.step(shop.module.request_payment, card.identity(), net.money(30 * SEK))
    checked.step(card.verify_pin, alice.pin)
    sealed = alice.card.memory.blob
    checked.step(alice.card.reset)
    expect(alice.card.memory.blob is sealed, "a reset touched the card's sealed memory")
    play.tried("somebody else presents the card for the request she had entered her PIN for")
    play.refused("wire.replay", "Alice's card", "the request of the lost challenge",
                 card.pay, request)  # fmt: skip
    play.tried("and for a new request, without the PIN")
    fresh = checked.step(shop.module.request_payment, card.identity(), net.money(30 * SEK))
    play.refused("pin.required", "Alice's card", "a new request without the PIN",
                 card.pay, fresh)  # fmt: skip
    play.tried("Alice enters her PIN again and pays")
    checked.step(card.verify_pin, alice.pin)
    checked.step(shop.pos.receive, checked.step(card.pay, fresh))
    expect(alice.card_balance == net.money(70 * SEK), "the card paid other than once")
    checked.sync(shop, alice)
    expect(shop.wallet == net.money(30 * SEK), "the shop was paid other than once")
