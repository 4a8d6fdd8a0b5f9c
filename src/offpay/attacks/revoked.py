"""Revoked devices: a card or terminal its intermediary blocked, used as if nothing happened."""

from __future__ import annotations

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, funded
from offpay.sim.liquidity import SimClock

MINUTES_PER_HOUR = 60


def revoked_card_paying(play: Play) -> None:
    """Mallory's intermediary blocks her card, which revokes it network-wide. A terminal and a
    card that synchronised since refuse it offline; the card itself cannot go online. A
    terminal that has not synchronised cannot know and accepts a payment; when that payment
    reaches the intermediary after the policy's window it is refused and recorded against the
    card. Needs a network on a :class:`~offpay.sim.liquidity.SimClock`."""
    net, checked = play.net, play.checked
    clock = net.clock
    expect(isinstance(clock, SimClock), "this attack needs a network on a SimClock")
    mallory = funded(checked, "Mallory", "bank-a", 300 * SEK, spare=100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    unsynced = net.add_merchant("Unsynced shop", "bank-a")
    bob = net.add_user("Bob", "bank-b")
    play.tried("bank-a blocks Mallory's card (a suspected clone); she goes on paying with it")
    checked.step(mallory.bank.block_device, mallory.card_id, "suspected clone")
    expect(mallory.card_id in net.central.revoked_devices(), "the block was not revoked")

    checked.sync(shop, bob)
    play.refused(
        "crypto.revoked",
        "the shop's module (synchronised since)",
        "a payment of SEK 10",
        checked.charge,
        shop,
        mallory,
        10 * SEK,
    )
    play.refused(
        "crypto.revoked",
        "Bob's card (synchronised since)",
        "Mallory's identity",
        bob.phone.ask,
        mallory.phone.show_identity(),
        net.money(1),
    )
    play.refused("crypto.revoked", "bank-a", "a sync", mallory.phone.sync, mallory.pin)
    play.refused(
        "crypto.revoked",
        "bank-a",
        "a top-up of SEK 50",
        mallory.phone.top_up,
        mallory.pin,
        net.money(50 * SEK),
    )

    play.tried("she pays SEK 40 at a shop that has not synchronised since; it syncs a week late")
    checked.charge(unsynced, mallory, 40 * SEK)  # it has no list that names the card
    window = mallory.card.state.policy.blocked_window_hours
    clock.advance(MINUTES_PER_HOUR * (window + 1))
    checked.sync(unsynced)
    play.detected(
        "bank-a",
        mallory.card_id,
        "late_payment",
        f"a payment reaching bank-a more than {window} h after the block",
    )


def revoked_terminal_receiving(play: Play) -> None:
    """The shop's intermediary blocks its terminal (stolen), which revokes it network-wide. A
    card that synchronised since refuses to pay it, and the terminal's own sync is refused, so
    nothing it collects afterwards is uploaded from it."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    play.tried("bank-b blocks the shop's stolen terminal; the thief goes on charging with it")
    checked.step(shop.bank.block_device, shop.terminal_id, "stolen terminal")
    expect(shop.terminal_id in net.central.revoked_devices(), "the block was not revoked")
    checked.sync(alice)
    expect(shop.terminal_id in alice.card.state.revoked, "Alice's card did not learn the list")
    play.refused(
        "crypto.revoked",
        "Alice's card (synchronised since)",
        "a charge of SEK 10",
        checked.charge,
        shop,
        alice,
        10 * SEK,
    )
    play.refused("crypto.revoked", "bank-b", "the stolen terminal's sync", shop.pos.sync)
    play.detected("bank-b", shop.terminal_id, "blocked", "the stolen terminal")
