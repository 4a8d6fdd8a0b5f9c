"""Clones the stateful machine (``tests/test_stateful.py``) found hard cases for: a clone that
pays before the genuine card synchronises, and a double spend whose first copy waits in the
liquidity queue when the second arrives."""

from __future__ import annotations

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, funded
from offpay.device.tamper import clone_card

# Anomalies that attribute a double spend or a rollback to the card.
CAUGHT = frozenset({"conflicting_payment", "rolled_back", "counter_drift", "counter_reused"})


def clone_paid_before_the_genuine_sync(play: Play) -> None:
    """A clone of the card spends counter n + 1 at a shop; the genuine card then synchronises
    with counter n and a log without that payment, and applies the instruction, which takes
    its counter to n + 1 too. Played twice: the shop synchronising after the genuine card
    (Mallory) and before it (Max). A payment under the counter the card used to apply an
    instruction cannot be its own: the card is caught, blocked and revoked, and never left
    holding more than its shadow wallet."""
    net, checked = play.net, play.checked
    for name, clone_first in (("Mallory", False), ("Max", True)):
        thief = funded(checked, name, "bank-a", 100 * SEK)
        shop = net.add_merchant(f"{name}'s shop", "bank-b")
        order = "before" if clone_first else "after"
        play.tried(
            f"{name}'s card is cloned; the clone pays SEK 60 offline (counter n + 1); the shop "
            f"synchronises {order} the genuine card, which takes counter n + 1 for its sync"
        )
        twin = clone_card(thief.card)
        checked.step(shop.pos.charge, twin.process, thief.pin, net.money(60 * SEK))
        play.no_anomaly("bank-a", thief.card_id)
        if clone_first:
            checked.sync(shop)
        checked.sync(thief, shop)
        found = set(play.incidents.anomalies("bank-a", thief.card_id)) & CAUGHT
        expect(bool(found), f"the clone of {name}'s card was not caught")
        for kind in sorted(found):
            play.detected("bank-a", thief.card_id, kind, f"the clone's payment ({order})")
        play.blocked("bank-a", thief.card_id)
        expect(
            thief.card_balance.minor <= thief.shadow.minor,
            f"{name}'s card holds more than its shadow wallet",
        )


def double_spend_first_copy_queued(play: Play) -> None:
    """Mallory's card holds SEK 150 against a shadow wallet of SEK 100 (SEK 50 from Alice not
    yet credited); it spends SEK 150 at a shop and a clone spends SEK 10 under the same counter
    at another. The SEK 150 waits in the liquidity queue when the clone's copy arrives: the
    second copy is caught as a conflicting payment, the card blocked and revoked, and the first
    copy stays queued, visible to its payee."""
    net, checked = play.net, play.checked
    mallory = funded(checked, "Mallory", "bank-a", 100 * SEK)
    alice = funded(checked, "Alice", "bank-b", 100 * SEK)
    shop, other_shop = net.add_merchant("Shop", "bank-b"), net.add_merchant("Other", "bank-b")
    play.tried("Alice pays Mallory SEK 50 offline: her card holds 150, her shadow wallet 100")
    checked.p2p(alice, mallory, 50 * SEK)
    play.tried("Mallory's card is cloned; the card pays SEK 150, the clone SEK 10, one counter")
    twin = clone_card(mallory.card)
    checked.charge(shop, mallory, 150 * SEK)
    checked.step(other_shop.pos.charge, twin.process, mallory.pin, net.money(10 * SEK))
    play.tried("the shop synchronises: the SEK 150 waits in the queue; then the other shop")
    checked.sync(shop)
    expect(
        queued(play, mallory.card_id) == [net.money(150 * SEK)],
        "the first copy did not wait in the queue",
    )
    expect(
        "conflicting_payment" not in play.incidents.anomalies("bank-a", mallory.card_id),
        "a conflict was recorded before the clone's copy arrived",
    )
    checked.sync(other_shop)
    play.detected("bank-a", mallory.card_id, "conflicting_payment", "the second copy")
    play.blocked("bank-a", mallory.card_id)
    expect(
        queued(play, mallory.card_id) == [net.money(150 * SEK)],
        "the first copy left the queue",
    )


def queued(play: Play, card_id: str) -> list[object]:
    """What the card's payments waiting in its intermediary's liquidity queue amount to."""
    bank = play.net.banks["bank-a"]
    return [amount for _, device, amount in bank.open_shortfalls() if device == card_id]
