"""Detect and contain: revocation lists at every sync, cloned and rolled-back cards, counter
drift told apart from tampering, and a card reported lost or stolen. Conservation is checked
after every step by ``checked``."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from sqlalchemy import update
from tests.conftest import ISSUED_PER_BANK, Checked, refused

from offpay.attacks.registry import play_in_process
from offpay.device.card import Card
from offpay.errors import ReplayError
from offpay.sim.liquidity import SimClock
from offpay.sim.network import OfflineNetwork, User
from offpay.store import schema

SEK = 100


def clocked() -> tuple[OfflineNetwork, Checked, SimClock]:
    clock = SimClock()
    net = OfflineNetwork(clock=clock)
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    checked = Checked(net)
    checked.conserved()
    return net, checked, clock


def anomalies(user: User) -> list[str]:
    return [kind for kind, device, _ in user.bank.anomalies() if device == user.card_id]


def clone_of(user: User) -> Card:
    """A second card with the victim card's key and state: what a well-funded attacker who
    broke the secure element could build."""
    twin = Card(user.card._signer)
    twin._trust = copy.deepcopy(user.card._trust)
    twin._state = user.card._state
    return twin


# --- revocation lists reach cards and terminals ----------------------------------------------


def test_a_revoked_card_is_refused_offline_by_cards_and_terminals_that_synchronised(
    net: OfflineNetwork, checked: Checked
):
    mallory = net.add_user("Mallory", "bank-a", online=500 * SEK)
    bob = net.add_user("Bob", "bank-b")
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(mallory, 300 * SEK)
    checked.step(net.banks["bank-a"].block_device, mallory.card_id, "investigation")
    assert mallory.card_id in net.central.revoked_devices()
    # Nobody has synchronised yet: offline, they cannot know.
    checked.charge(shop, mallory, 10 * SEK)
    # Bob's card and the shop's terminal (of another intermediary) learn at their next sync.
    checked.sync(bob, shop)
    assert mallory.card_id in bob.card.state.revoked
    assert mallory.card_id in shop.module.state.revoked
    checked.refused("crypto.revoked", checked.charge, shop, mallory, 10 * SEK)
    checked.refused("crypto.revoked", bob.phone.ask, mallory.phone.show_identity(), net.money(1))
    # The payment made before the block settles (within the window).
    assert shop.wallet == net.money(10 * SEK)


def test_a_revoked_terminal_is_refused_by_a_card_that_synchronised(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    checked.step(net.banks["bank-b"].block_device, shop.terminal_id, "stolen terminal")
    checked.sync(alice)
    assert shop.terminal_id in alice.card.state.revoked
    checked.refused("crypto.revoked", checked.charge, shop, alice, 10 * SEK)
    assert alice.card_balance == net.money(100 * SEK)


def test_a_forged_or_older_revocation_list_is_not_applied(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    bob = net.add_user("Bob", "bank-b", online=500 * SEK)
    checked.top_up(alice, 100 * SEK)
    net.banks["bank-b"].block_device(bob.card_id, "test")
    checked.sync(alice)
    version = alice.card.state.revocation_version
    assert version == 1
    # A list signed by an intermediary instead of the central bank is a typed refusal.
    from offpay.crypto.revocation import RevocationList, newer_revocations
    from offpay.wire.envelope import sign

    forged = sign(RevocationList("bank-a/engine", 0, ()), net.banks["bank-a"].credential)
    try:
        newer_revocations(forged, alice.card._trusted(), version)  # type: ignore[arg-type]
    except Exception as exc:
        assert getattr(exc, "code", "").startswith("crypto.")
    else:
        raise AssertionError("a list signed by an intermediary was accepted")
    older = net.central.revocation_list()
    assert newer_revocations(older, alice.card._trusted(), version) is None


# --- a cloned card at two terminals ----------------------------------------------------------


def test_a_cloned_card_at_two_terminals_is_detected_blocked_revoked_and_the_loss_bounded(
    net: OfflineNetwork, checked: Checked
):
    mallory = net.add_user("Mallory", "bank-a", online=500 * SEK)
    checked.top_up(mallory, 200 * SEK)
    twin = clone_of(mallory)
    shop1 = net.add_merchant("Shop1", "bank-b")
    shop2 = net.add_merchant("Shop2", "bank-a")
    checked.charge(shop1, mallory, 150 * SEK)
    checked.step(shop2.pos.charge, twin.process, mallory.pin, net.money(180 * SEK))
    checked.sync(shop1)
    checked.sync(shop2)  # the same counter, another payment: a clone
    bank = net.banks["bank-a"]
    assert bank.device(mallory.card_id).status == "blocked"
    assert mallory.card_id in net.central.revoked_devices()
    assert "conflicting_payment" in anomalies(mallory)
    [loss] = bank.losses()
    assert (loss.device, loss.amount) == (mallory.card_id, net.money(180 * SEK))
    assert loss.bound == net.money(3_000 * SEK)  # the policy's card balance limit
    # Money is not created: only the first payment settled.
    assert shop1.wallet == net.money(150 * SEK) and shop2.wallet == net.money(0)
    assert mallory.shadow == net.money(50 * SEK)
    checked.refused("crypto.revoked", mallory.phone.sync, mallory.pin)


# --- a rolled-back card ----------------------------------------------------------------------


def test_a_rolled_back_card_that_only_syncs_is_refused_and_blocked_once_it_spends(
    net: OfflineNetwork, checked: Checked
):
    """A session showing a state older than the card confirmed is refused without blocking:
    a hostile relay that delivers an honest card's session late produces exactly that. The
    card is blocked as soon as it spends from the old state: that payment is the proof."""
    mallory = net.add_user("Mallory", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    other = net.add_merchant("Other", "bank-b")
    checked.top_up(mallory, 100 * SEK)
    saved = mallory.card._state
    checked.charge(shop, mallory, 60 * SEK)
    checked.sync(mallory)  # the engine saw counter values beyond the saved state
    mallory.card._state = saved  # restore the older state: SEK 100 again
    checked.refused("device.stale_session", mallory.phone.sync, mallory.pin)
    assert net.banks["bank-a"].device(mallory.card_id).status == "active"
    assert "stale_session" in anomalies(mallory)
    mallory.card._state = saved
    checked.charge(other, mallory, 90 * SEK)
    checked.refused("device.rolled_back", mallory.phone.sync, mallory.pin)
    assert net.banks["bank-a"].device(mallory.card_id).status == "blocked"
    assert "rolled_back" in anomalies(mallory)
    assert mallory.card_id in net.central.revoked_devices()
    checked.sync(shop, other)
    assert (shop.wallet, other.wallet) == (net.money(60 * SEK), net.money(0))
    assert [loss.amount for loss in net.banks["bank-a"].losses()] == [net.money(90 * SEK)]


def test_a_session_delivered_late_is_refused_and_blocks_nobody(
    net: OfflineNetwork, checked: Checked
):
    """Played by `offpay attack stale-session`: the phone keeps a top-up session back, lets a
    sync complete, then delivers the old one: refused as stale; the card stays usable and
    nothing moves."""
    report = play_in_process("stale-session", checked)
    alice = net.users["Alice"]
    assert [(f.party, f.code) for f in report.findings] == [("bank-a", "device.stale_session")]
    assert net.banks["bank-a"].device(alice.card_id).status == "active"
    assert alice.card_balance == alice.shadow == net.money(150 * SEK)
    assert report.loss == report.bound == net.money(0)


def test_a_rolled_back_card_spending_again_is_caught_by_its_reused_counter(
    net: OfflineNetwork, checked: Checked
):
    mallory = net.add_user("Mallory", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    other = net.add_merchant("Other", "bank-b")
    checked.top_up(mallory, 100 * SEK)
    saved = mallory.card._state
    checked.charge(shop, mallory, 60 * SEK)
    mallory.card._state = saved
    # The same terminal would refuse the reused payment id offline; another one cannot know.
    with pytest.raises(ReplayError):
        checked.charge(shop, mallory, 90 * SEK)
    mallory.card._state = saved
    checked.charge(other, mallory, 90 * SEK)  # the same counter value signs another payment
    checked.sync(shop, other)
    assert net.banks["bank-a"].device(mallory.card_id).status == "blocked"
    assert [loss.amount for loss in net.banks["bank-a"].losses()] == [net.money(90 * SEK)]
    assert (shop.wallet, other.wallet) == (net.money(60 * SEK), net.money(0))


# --- counter drift: a lost message or tampering -----------------------------------------------


def test_counter_drift_from_lost_records_is_recovered_from_the_cards_signed_history(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-a")
    checked.top_up(alice, 100 * SEK)
    checked.sync(alice)
    bank = net.banks["bank-a"]
    # The intermediary lost its record of the last instruction (a database restored from an
    # older backup): its counter is behind the card's.
    with bank.db.begin() as conn:
        conn.execute(
            update(schema.devices)
            .where(schema.devices.c.id == alice.card_id)
            .values(issued_no=schema.devices.c.issued_no - 1)
        )
    checked.charge(shop, alice, 30 * SEK)
    checked.sync(alice)  # recovered: no block, nothing lost
    assert "counter_recovered" in anomalies(alice)
    assert bank.device(alice.card_id).status == "active"
    checked.sync(shop)
    assert alice.card_balance == alice.shadow == net.money(70 * SEK)
    assert shop.wallet == net.money(30 * SEK)
    checked.sync(alice)
    checked.charge(shop, alice, 10 * SEK)


def test_counter_drift_without_proof_is_tampering_and_blocks_the_card(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    checked.top_up(alice, 100 * SEK)
    checked.sync(alice)
    # The card claims instructions the intermediary never issued and has no signed proof.
    alice.card._state = alice.card._state.__class__(
        **{**alice.card._state.__dict__, "instruction_no": 9, "last_instruction": None}
    )
    checked.refused("device.counter_drift", alice.phone.sync, alice.pin)
    assert net.banks["bank-a"].device(alice.card_id).status == "blocked"


# --- a lost or stolen card --------------------------------------------------------------------


def test_a_lost_card_is_blocked_its_earlier_payments_settle_in_the_window_and_the_rest_returns():
    net, checked, clock = clocked()
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    early = net.add_merchant("Early", "bank-b")
    late = net.add_merchant("Late", "bank-a")
    checked.top_up(alice, 300 * SEK)
    checked.charge(early, alice, 40 * SEK)
    checked.charge(late, alice, 25 * SEK)
    bank = net.banks["bank-a"]

    checked.step(bank.report_lost, alice.customer_id, alice.card_id)  # the holder reports it
    assert bank.device(alice.card_id).status == "blocked"
    assert alice.card_id in net.central.revoked_devices()
    checked.refused("crypto.revoked", alice.phone.sync, alice.pin)  # the finder cannot use it

    clock.advance(60 * 24)  # a day later, within the policy's 7-day window
    checked.sync(early)
    assert early.wallet == net.money(40 * SEK)

    clock.advance(60 * 24 * 7)  # past the window: what is left goes back online
    checked.step(bank.containment.release_expired)
    assert alice.shadow == net.money(0)
    assert alice.online == net.money(200 * SEK + 260 * SEK)
    checked.sync(late)  # a payment that arrives now is refused and reported
    assert late.wallet == net.money(0)
    assert "late_payment" in anomalies(alice)


def test_only_the_holder_may_report_a_card_lost(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    mallory = net.add_user("Mallory", "bank-a")
    checked.refused(
        "bank.not_holder", net.banks["bank-a"].report_lost, mallory.customer_id, alice.card_id
    )


def test_the_window_is_measured_from_the_block(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    checked.top_up(alice, 100 * SEK)
    bank = net.banks["bank-a"]
    bank.report_lost(alice.customer_id, alice.card_id)
    blocked_at = bank.device(alice.card_id).blocked_at
    assert blocked_at is not None
    assert bank.containment.settles_despite_block(alice.card_id)
    assert bank.containment.release_expired() == 0  # the window is still open
    assert isinstance(blocked_at, dt.datetime)


# --- anti-rollback of a device's sealed memory ----------------------------------------------


def test_a_card_refuses_an_older_copy_of_its_own_memory(net: OfflineNetwork, checked: Checked):
    """Played by `offpay attack memory-copy-written-back`: the card and the terminal refuse
    an older copy of their sealed memory; nothing is paid twice."""
    report = play_in_process("memory-copy-written-back", checked)
    shop = net.merchants["Shop"]
    assert [(f.party, f.code) for f in report.findings] == [
        ("Alice's card", "device.rolled_back"),
        ("Alice's card", "device.rolled_back"),
        ("the shop's module", "device.rolled_back"),
    ]
    assert shop.wallet == net.money(80 * SEK)  # nothing was paid twice
    assert report.loss == report.bound == net.money(0)


def test_a_card_refuses_altered_or_foreign_memory(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    bob = net.add_user("Bob", "bank-a", online=500 * SEK)
    checked.top_up(alice, 100 * SEK)
    genuine = alice.card.memory.blob
    assert genuine is not None
    alice.card.memory.blob = genuine[:-1] + bytes([genuine[-1] ^ 1])
    refused("seal.invalid", alice.phone.sync, alice.pin)
    alice.card.memory.blob = bob.card.memory.blob  # another card's memory
    refused("seal.invalid", alice.phone.sync, alice.pin)
    alice.card.memory.blob = genuine
    checked.sync(alice)
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)


def test_a_terminal_refuses_an_older_copy_of_its_memory(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    before = shop.module.memory.blob
    checked.charge(shop, alice, 30 * SEK)
    checked.sync(shop)
    # Rolling the module back would let it take the same payment again, or hide the reset.
    shop.module.memory.blob = before
    refused("device.rolled_back", shop.pos.sync)
    assert shop.wallet == net.money(30 * SEK)
