"""Broken cards: a secure element cloned, rolled back, or guessed at (SIMULATED HARDWARE BREAK
through :mod:`offpay.device.tamper`)."""

from __future__ import annotations

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import SEK, funded, wire
from offpay.device.tamper import clone_card, read_state, write_back
from offpay.money import format_money
from offpay.relay.phone import PhoneApp


def cloned_card(
    play: Play, *, balance: int = 100 * SEK, spent: int = 100 * SEK, copied: int = 100 * SEK
) -> None:
    """Alice's card is cloned (its key and state copied into a second card) and both spend
    from the same balance at two terminals: by default all of SEK 100 each (``balance``, what
    the card ``spent`` and what the clone ``copied``, in minor units, each within the balance).
    The two payments carry the same card counter, so the second to reach Alice's intermediary
    is refused and recorded as a conflicting payment; the card is blocked and revoked
    network-wide, the refused payment is a recorded loss with the bound the policy puts on it,
    and Alice's shadow wallet is debited once."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", balance)
    shop = net.add_merchant("Shop", "bank-b")
    other_shop = net.add_merchant("Other shop", "bank-a")
    play.tried(f"Alice's card ({format_money(net.money(balance))}) is cloned: its key and state "
               "copied into a second card")  # fmt: skip
    clone = clone_card(alice.card)
    play.tried(f"the card pays {format_money(net.money(spent))} at a shop; the clone pays "
               f"{format_money(net.money(copied))} at another")  # fmt: skip
    checked.charge(shop, alice, spent)
    checked.step(other_shop.pos.charge, clone.process, alice.pin, net.money(copied))
    play.no_anomaly("bank-a", alice.card_id)  # offline, nobody can know yet
    play.tried("both shops synchronise")
    checked.sync(shop, other_shop)
    play.detected("bank-a", alice.card_id, "conflicting_payment", "the clone's payment")
    expect(other_shop.module.state.offline_payments == 0, "the refused payment stays waiting")
    play.blocked("bank-a", alice.card_id)
    play.refused(
        "crypto.revoked", "bank-a", "a sync of the revoked card", alice.phone.sync, alice.pin
    )
    play.refused(
        "crypto.revoked",
        "bank-a",
        "a sync of the revoked clone",
        PhoneApp(clone.process, "bank-a", wire(net), net.currency).sync,
        alice.pin,
    )


def rolled_back_card(play: Play) -> None:
    """Alice saves her card's state (SEK 100), pays SEK 100, synchronises, restores the saved
    state and pays SEK 100 again at a terminal that cannot know. At its next sync the restored
    card shows a counter below one it showed before: it is refused, blocked and revoked. The
    second payment reuses the first one's counter: when the terminal synchronises it is refused
    and recorded as a loss. Nobody is paid twice."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    other_shop = net.add_merchant("Other shop", "bank-b")
    play.tried("Alice's broken card: its state (SEK 100) read out and saved")
    saved = read_state(alice.card)
    checked.charge(shop, alice, 100 * SEK)
    checked.sync(alice)
    expect(alice.card_balance == alice.shadow == net.money(0), "the card was not emptied")
    play.tried("after paying SEK 100 and a sync, the saved state is written back and spent again")
    write_back(alice.card, saved)
    expect(alice.card_balance == net.money(100 * SEK), "the write-back did not take")
    checked.charge(other_shop, alice, 100 * SEK)
    play.refused(
        "device.rolled_back", "bank-a", "the rolled-back card's sync", alice.phone.sync, alice.pin
    )
    play.detected("bank-a", alice.card_id, "rolled_back", "a counter below one the card showed")
    play.blocked("bank-a", alice.card_id)
    play.tried("both shops synchronise")
    checked.sync(shop, other_shop)
    play.detected("bank-a", alice.card_id, "conflicting_payment", "the second spend of SEK 100")


def rolled_back_before_a_defund(play: Play) -> None:
    """A broken card's core writes back the state it had before a defund (SEK 100 on the card)
    and spends it offline. The card had confirmed the defund's instruction: when it later says
    it never applied it, that is a rollback, not a lost message. The card is blocked and
    revoked, and the shop's payment is never paid out of money that went online."""
    net, checked = play.net, play.checked
    mallory = funded(checked, "Mallory", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    play.tried("Mallory saves her card's state (SEK 100), defunds SEK 100 to her online wallet")
    saved = read_state(mallory.card)
    checked.defund(mallory, 100 * SEK)
    expect(mallory.online == net.money(100 * SEK), "the defund did not reach the wallet")
    play.tried("the saved state is written back and the SEK 100 spent again at a shop")
    write_back(mallory.card, saved)
    checked.charge(shop, mallory, 100 * SEK)
    # The payment's counter is one the card had passed when it confirmed the defund, and no
    # upload ever showed it: proof of a rollback when the shop synchronises.
    play.tried("the shop synchronises")
    checked.sync(shop)
    play.detected("bank-a", mallory.card_id, "rolled_back", "a payment from before the defund")
    play.blocked("bank-a", mallory.card_id)
    play.refused(
        "crypto.revoked", "bank-a", "a sync of the revoked card", mallory.phone.sync, mallory.pin
    )


def pin_brute_force(play: Play) -> None:
    """A thief with Alice's card guesses PINs at a shop. The third wrong guess blocks the PIN;
    after that the right PIN is refused too, and the card pays nothing and cannot go online."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    bob = net.add_user("Bob", "bank-b")
    play.tried("a thief guesses PINs 0000, 1111, 2222 for SEK 50 at a shop")
    for guess, code in (("0000", "pin.wrong"), ("1111", "pin.wrong"), ("2222", "pin.blocked")):
        play.refused_any(
            code,
            "Alice's card",
            f"PIN {guess}",
            shop.pos.charge,
            alice.card.process,
            guess,
            net.money(50 * SEK),
        )
    expect(shop.module.state.open_requests == (), "the shop kept an open request")
    play.tried("then the right PIN: for a payment, a sync and a defund")
    play.refused(
        "pin.blocked",
        "Alice's card",
        "a charge with the right PIN",
        shop.pos.charge,
        alice.card.process,
        alice.pin,
        net.money(1),
    )
    ask = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(5 * SEK))
    play.refused("pin.blocked", "Alice's card", "a payment to Bob", alice.phone.pay, alice.pin, ask)
    play.refused("pin.blocked", "Alice's card", "a sync", alice.phone.sync, alice.pin)
    play.refused(
        "pin.blocked",
        "Alice's card",
        "a defund",
        alice.phone.defund,
        alice.pin,
        net.money(100 * SEK),
    )
