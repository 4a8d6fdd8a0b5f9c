"""Replays: a hostile relay keeps signed messages and delivers them again later."""

from __future__ import annotations

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import (
    SEK,
    begin,
    client,
    funded,
    session_and_answer,
    terminal_upload_and_reset,
    wire,
)
from offpay.bank.engine import engine_id
from offpay.wire.messages import Operation


def replayed_top_up(play: Play) -> None:
    """The relay keeps a top-up's session and signed instruction (card balance SEK 100) and
    replays them after the card was defunded to zero: the card refuses the instruction (it
    answers no open session and is not the next number), the engine answers the replayed
    session with the same instruction and moves nothing."""
    net, checked = play.net, play.checked
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    play.tried("the relay keeps Alice's top-up session and the SEK 100 instruction it brought")
    session, instruction = checked.step(
        session_and_answer, wire(net), alice, Operation.TOP_UP, 100 * SEK
    )
    confirmation = checked.step(client(alice).apply_instruction, instruction)
    checked.step(wire(net).send, "bank-a", "card-confirmation", confirmation)
    checked.defund(alice, 100 * SEK)
    play.tried("Alice defunds her card to zero; the relay replays the kept instruction")
    play.refused(
        "wire.replay",
        "Alice's card",
        "the replayed instruction",
        client(alice).apply_instruction,
        instruction,
    )
    begin(alice)  # a session is open when the replay arrives
    play.refused(
        "wire.replay",
        "Alice's card",
        "the replayed instruction, with a new session open",
        client(alice).apply_instruction,
        instruction,
    )
    play.tried("the relay replays the kept session to bank-a")
    before = checked.snapshot()
    answer = checked.step(wire(net).send, "bank-a", "card-session", session)
    expect(answer == instruction, "bank-a answered a replayed session with a new instruction")
    expect(checked.snapshot() == before, "a replayed session moved money")
    play.refused(
        "wire.replay",
        "Alice's card",
        "bank-a's answer to the replayed session",
        client(alice).apply_instruction,
        instruction,
    )


def replayed_reset(play: Play) -> None:
    """A terminal's signed reset, and a card's signed sync instruction, replayed by the relay
    once the device holds a new unsettled payment: the device refuses it and keeps the payment,
    the engine answers the replayed upload or session as before, and each payment is paid once.
    """
    net, checked = play.net, play.checked
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    carol = funded(checked, "Carol", "bank-a", 100 * SEK)

    play.tried("the PoS app keeps the shop's upload and the reset bank-b signed for it")
    checked.charge(shop, alice, 30 * SEK)
    upload, reset = checked.step(terminal_upload_and_reset, wire(net), shop)
    checked.step(shop.module.apply_instruction, reset)
    shop.pos.records.clear()
    play.tried("Carol pays SEK 20; the PoS app replays the old reset to wipe her payment")
    checked.charge(shop, carol, 20 * SEK)
    play.refused(
        "wire.replay",
        "the shop's module",
        "the replayed reset",
        shop.module.apply_instruction,
        reset,
    )
    shop.module.begin_sync(engine_id("bank-b"), shop.pos.records)  # a sync is open
    play.refused(
        "wire.replay",
        "the shop's module",
        "the replayed reset, with a sync open",
        shop.module.apply_instruction,
        reset,
    )
    expect(shop.module.state.offline_payments == 1, "the module lost Carol's payment")
    play.tried("the PoS app replays the old upload to bank-b")
    before = checked.snapshot()
    answer = checked.step(wire(net).send, "bank-b", "terminal-upload", upload)
    expect(answer == reset, "bank-b answered a replayed upload with a new reset")
    expect(checked.snapshot() == before, "a replayed upload moved money")

    play.tried("Alice's phone keeps a sync instruction, and replays it after she pays SEK 5")
    checked.charge(shop, alice, 10 * SEK)
    _, sync_instruction = checked.step(session_and_answer, wire(net), alice)
    checked.step(client(alice).apply_instruction, sync_instruction)
    checked.charge(shop, alice, 5 * SEK)
    begin(alice)
    play.refused(
        "wire.replay",
        "Alice's card",
        "the replayed sync instruction",
        client(alice).apply_instruction,
        sync_instruction,
    )
    expect(alice.card.state.offline_transactions == 1, "the card lost its unsettled payment")
    checked.sync(shop, alice, carol)
