"""Every flow of report §3.4–3.7, with conservation asserted after every step and the money
checked to the öre: top-up, defund, terminal payment and resubmission, person-to-person
payments within and across intermediaries, card and terminal synchronisation, the
Alice–Bob–Charlie shortfall example, and connections cut at chosen messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from offpay.bank.engine import engine_id
from offpay.money import Money
from offpay.sim.network import OfflineNetwork, User
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed
from offpay.wire.messages import OfflinePayment, Operation

if TYPE_CHECKING:
    from conftest import Checked

SEK = 100  # minor units per krona


def tx_id(payment: bytes) -> bytes:
    return decode(Signed.from_bytes(payment).payload, OfflinePayment).tx_id


def assert_cards_match_shadows(net: OfflineNetwork) -> None:
    for user in net.users.values():
        assert user.card_balance == user.shadow, user.name


def no_open_shortfalls(net: OfflineNetwork) -> bool:
    return all(not bank.open_shortfalls() for bank in net.banks.values())


def begin_session(user: User, operation: Operation, minor: int) -> bytes:
    """The phone's first half of an online session: PIN, then the card's signed session."""
    user.phone.card.verify_pin(user.pin)
    return user.phone.card.begin_online(engine_id(user.bank.name), operation, Money(minor, "SEK"))


def send_session(net: OfflineNetwork, user: User, session: bytes) -> bytes:
    return net.network.send(user.bank.name, "card-session", session)


def send_confirmation(net: OfflineNetwork, user: User, confirmation: bytes) -> None:
    net.network.send(user.bank.name, "card-confirmation", confirmation)


# --- top-up and defund (report §3.4) ----------------------------------------------------------


def test_top_up_moves_money_online_to_shadow_to_card(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.conserved()
    assert (alice.online, alice.shadow, alice.card_balance) == (
        net.money(1000 * SEK),
        net.money(0),
        net.money(0),
    )

    checked.top_up(alice, 200 * SEK)
    assert alice.online == net.money(800 * SEK)
    assert alice.shadow == net.money(200 * SEK)
    assert alice.card_balance == net.money(200 * SEK)

    checked.top_up(alice, 50_25)
    assert alice.online == net.money(749_75)
    assert alice.shadow == net.money(250_25)
    assert alice.card_balance == net.money(250_25)
    assert alice.card.state.offline_transactions == 0


def test_top_up_above_the_online_wallet_is_refused(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=100 * SEK)
    checked.refused("funds.insufficient", alice.phone.top_up, alice.pin, net.money(100 * SEK + 1))
    assert alice.online == net.money(100 * SEK)
    assert alice.card_balance == net.money(0)


def test_defund_moves_money_card_to_shadow_to_online(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 200 * SEK)

    checked.defund(alice, 50 * SEK)
    assert alice.card_balance == net.money(150 * SEK)
    assert alice.shadow == net.money(150 * SEK)
    assert alice.online == net.money(850 * SEK)

    # A later sync moves no money: the defund was released online once, when the card
    # confirmed it, and must not be released again.
    checked.sync(alice)
    assert alice.card_balance == net.money(150 * SEK)
    assert alice.shadow == net.money(150 * SEK)
    assert alice.online == net.money(850 * SEK)


def test_defund_all_then_sync_leaves_an_empty_card(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 200 * SEK)
    checked.defund(alice, 150 * SEK)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(50 * SEK),
        net.money(50 * SEK),
        net.money(950 * SEK),
    )
    # The next sync must succeed and change nothing (it must not try to release the
    # SEK 150 a second time from a shadow wallet that holds SEK 50).
    checked.sync(alice)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(50 * SEK),
        net.money(50 * SEK),
        net.money(950 * SEK),
    )


def test_defund_above_the_card_balance_is_refused(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 200 * SEK)
    checked.refused("funds.insufficient", alice.phone.defund, alice.pin, net.money(200 * SEK + 1))


def test_defund_after_an_offline_payment_settles_it_first(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.p2p(alice, bob, 80 * SEK)

    # Card holds 120, shadow still 200: the defund settles the SEK 80 first.
    checked.refused("funds.insufficient", alice.phone.defund, alice.pin, net.money(120 * SEK + 1))
    checked.defund(alice, 120 * SEK)
    assert alice.card_balance == net.money(0)
    assert alice.shadow == net.money(0)
    assert alice.online == net.money(920 * SEK)
    assert bob.shadow == net.money(80 * SEK)
    assert net.central.notarised_count() == 1


def test_defund_refused_while_the_card_holds_unsettled_payments(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    checked.top_up(alice, 200 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)

    # Bob's shadow wallet cannot cover the SEK 50 yet, so Charlie's received payment does
    # not settle and his defund must be refused, leaving every wallet and card as it was.
    checked.refused("bank.unsynchronised", charlie.phone.defund, charlie.pin, net.money(50 * SEK))
    assert charlie.card_balance == net.money(50 * SEK)
    assert charlie.online == net.money(0)
    assert [s[2] for s in net.banks["bank-b"].open_shortfalls()] == [net.money(50 * SEK)]

    # Once Bob synchronised, the payment settles and the same defund goes through.
    checked.sync(bob)
    assert no_open_shortfalls(net)
    checked.defund(charlie, 50 * SEK)
    assert charlie.card_balance == net.money(0)
    assert charlie.shadow == net.money(0)
    assert charlie.online == net.money(50 * SEK)


# --- paying at a terminal (report §3.5) -------------------------------------------------------


@pytest.mark.parametrize("shop_bank", ["bank-a", "bank-b"])
def test_pay_at_a_terminal_then_sync(net: OfflineNetwork, checked: Checked, shop_bank: str):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", shop_bank)
    checked.top_up(alice, 200 * SEK)

    payment = checked.charge(shop, alice, 30 * SEK)
    assert alice.card_balance == net.money(170 * SEK)
    assert alice.shadow == net.money(200 * SEK)  # offline: nothing settled yet
    assert alice.card.state.offline_transactions == 1
    assert shop.module.state.offline_payments == 1
    assert shop.module.state.received == net.money(30 * SEK)
    assert shop.wallet == net.money(0)

    checked.sync(shop)
    assert shop.wallet == net.money(30 * SEK)
    assert alice.shadow == net.money(170 * SEK)
    assert shop.module.state.offline_payments == 0
    assert shop.module.state.received == net.money(0)
    assert shop.pos.records == []
    assert net.is_notarised(tx_id(payment))

    checked.sync(alice)
    assert alice.card_balance == net.money(170 * SEK)
    assert alice.card.state.offline_transactions == 0
    assert shop.wallet == net.money(30 * SEK)
    assert net.central.notarised_count() == 1
    assert_cards_match_shadows(net)


def test_card_syncing_before_the_terminal_settles_once(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.charge(shop, alice, 30 * SEK)

    checked.sync(alice)  # the payer uploads first: the shop is credited already
    assert alice.card_balance == alice.shadow == net.money(170 * SEK)
    assert shop.wallet == net.money(30 * SEK)
    checked.sync(shop)
    checked.sync(shop)
    checked.sync(alice)
    assert shop.wallet == net.money(30 * SEK)
    assert alice.shadow == net.money(170 * SEK)
    assert net.central.notarised_count() == 1


def test_resubmit_a_payment_the_terminal_missed(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 200 * SEK)
    card = checked.card_client(alice)

    # The terminal asks, the card pays, and the answer never reaches the terminal.
    request = checked.step(shop.module.request_payment, card.identity(), net.money(30 * SEK))
    checked.step(card.verify_pin, alice.pin)
    checked.step(card.pay, request)
    assert alice.card_balance == net.money(170 * SEK)
    assert shop.module.state.offline_payments == 0
    card_after_payment = (alice.card.state.seq, alice.card.state.log, alice.card_balance)

    # Resubmission: the card's last payment again, with no new debit on the card.
    checked.step(shop.pos.resubmit, alice.card.process)
    assert (alice.card.state.seq, alice.card.state.log, alice.card_balance) == card_after_payment
    assert shop.module.state.offline_payments == 1
    assert shop.module.state.received == net.money(30 * SEK)

    # A second resubmission of a payment the terminal has (its record was lost on the way to
    # the app, say) hands the record back and counts nothing twice.
    checked.step(shop.pos.resubmit, alice.card.process)
    assert shop.module.state.offline_payments == 1
    assert shop.module.state.received == net.money(30 * SEK)

    checked.sync(shop)
    assert shop.wallet == net.money(30 * SEK)
    assert alice.shadow == net.money(170 * SEK)
    # ... and so is a resubmission after the terminal synchronised.
    checked.refused("wire.replay", shop.pos.resubmit, alice.card.process)
    checked.sync(alice, shop)
    assert shop.wallet == net.money(30 * SEK)
    assert net.central.notarised_count() == 1
    assert_cards_match_shadows(net)


def test_resubmit_of_a_received_payment_counts_nothing_twice(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.charge(shop, alice, 30 * SEK)
    checked.step(shop.pos.resubmit, alice.card.process)
    assert shop.module.state.received == net.money(30 * SEK)
    assert shop.module.state.offline_payments == 1
    checked.sync(shop)
    assert shop.wallet == net.money(30 * SEK)
    assert alice.card_balance == net.money(170 * SEK)


def test_resubmit_with_no_payment_is_refused(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.refused("device.no_payment", shop.pos.resubmit, alice.card.process)


# --- person to person (report §3.6) and synchronisation (report §3.7) -------------------------


@pytest.mark.parametrize("bob_bank", ["bank-a", "bank-b"], ids=["same-bank", "across-banks"])
@pytest.mark.parametrize("first", ["payer", "payee"])
def test_person_to_person_then_both_sync(
    net: OfflineNetwork, checked: Checked, bob_bank: str, first: str
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", bob_bank)
    checked.top_up(alice, 200 * SEK)

    payment = checked.p2p(alice, bob, 80 * SEK)
    assert alice.card_balance == net.money(120 * SEK)
    assert bob.card_balance == net.money(80 * SEK)
    assert alice.shadow == net.money(200 * SEK)
    assert bob.shadow == net.money(0)
    assert alice.card.state.offline_transactions == 1
    assert bob.card.state.offline_transactions == 1
    assert net.central.notarised_count() == 0

    order = [alice, bob] if first == "payer" else [bob, alice]
    checked.sync(order[0])
    # Whoever uploads first settles the payment for both.
    assert alice.shadow == net.money(120 * SEK)
    assert bob.shadow == net.money(80 * SEK)
    assert net.is_notarised(tx_id(payment))
    assert net.central.notarised_count() == 1
    assert order[0].card_balance == order[0].shadow

    checked.sync(order[1])
    checked.sync(alice, bob)
    assert alice.card_balance == alice.shadow == net.money(120 * SEK)
    assert bob.card_balance == bob.shadow == net.money(80 * SEK)
    assert alice.online == net.money(800 * SEK)
    assert alice.card.state.offline_transactions == 0
    assert bob.card.state.offline_transactions == 0
    assert net.central.notarised_count() == 1
    assert no_open_shortfalls(net)
    for bank in net.banks.values():
        assert bank.in_transit() == net.money(0)


@pytest.mark.parametrize("first", ["payer", "payee"])
def test_across_banks_settles_by_debit_request(net: OfflineNetwork, checked: Checked, first: str):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.p2p(alice, bob, 80 * SEK)

    traffic: list[tuple[str, str]] = []

    def tap(to: str, kind: str, data: bytes) -> bytes:
        traffic.append((to, kind))
        return data

    net.network.taps.append(tap)
    checked.sync(alice if first == "payer" else bob)
    if first == "payee":
        # Bob's bank asks Alice's bank for the money, which debits, notarises and credits.
        assert ("bank-a", "debit-request") in traffic
    else:
        assert ("bank-a", "debit-request") not in traffic
        assert ("bank-b", "credit-request") in traffic
    assert traffic.count(("central-bank", "notarise")) == 1
    assert net.central.notarised_count() == 1
    # Holdings moved between the two intermediaries at the central bank.
    holdings = {p.institution: p.holdings for p in net.central.positions()}
    assert holdings["bank-b"] == net.money(80 * SEK)
    assert holdings["bank-a"] == net.money(920 * SEK)

    traffic.clear()
    checked.sync(bob if first == "payer" else alice)
    assert net.central.notarised_count() == 1
    assert bob.shadow == net.money(80 * SEK)
    assert alice.shadow == net.money(120 * SEK)
    holdings = {p.institution: p.holdings for p in net.central.positions()}
    assert holdings["bank-b"] == net.money(80 * SEK)
    assert holdings["bank-a"] == net.money(920 * SEK)
    assert_cards_match_shadows(net)


def test_terminal_and_cards_of_two_banks(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 300 * SEK)
    checked.top_up(bob, 100 * SEK)
    checked.charge(shop, alice, 45_50)
    checked.charge(shop, bob, 20 * SEK)
    checked.p2p(alice, bob, 10 * SEK)
    checked.charge(shop, bob, 85 * SEK)  # Bob spends money he just received offline

    # The shop syncs first: Bob's SEK 85 is not yet covered by his shadow wallet (the SEK 10
    # from Alice has not settled), so it is a shortfall at Bob's bank for now.
    checked.sync(shop)
    assert shop.wallet == net.money(65_50)
    assert [s[2] for s in net.banks["bank-b"].open_shortfalls()] == [net.money(85 * SEK)]
    checked.sync(bob)
    assert no_open_shortfalls(net)
    assert shop.wallet == net.money(150_50)
    checked.sync(alice, bob, shop)
    assert alice.card_balance == alice.shadow == net.money(244_50)
    assert bob.card_balance == bob.shadow == net.money(5 * SEK)
    assert shop.wallet == net.money(150_50)
    assert net.central.notarised_count() == 4
    assert no_open_shortfalls(net)


# --- the Alice–Bob–Charlie example (report §3.7) ----------------------------------------------


def test_alice_bob_charlie_shortfall_example(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")

    checked.top_up(alice, 200 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    assert alice.card_balance == net.money(120 * SEK)
    assert bob.card_balance == net.money(30 * SEK)
    assert charlie.card_balance == net.money(50 * SEK)

    # Charlie syncs first: Bob's shadow wallet is empty, so Bob's bank reports a shortfall
    # of SEK 50 and Charlie's card shows his shadow wallet.
    checked.sync(charlie)
    shortfalls = net.banks["bank-b"].open_shortfalls()
    assert [(device, amount) for _, device, amount in shortfalls] == [
        (bob.card_id, net.money(50 * SEK))
    ]
    assert net.banks["bank-a"].open_shortfalls() == []
    assert charlie.shadow == net.money(0)
    assert charlie.card_balance == charlie.shadow
    assert any(kind == "shortfall" for kind, _, _ in net.banks["bank-b"].anomalies())

    # Bob syncs: Alice's SEK 80 settles, then his SEK 50 to Charlie; the shortfall closes.
    checked.sync(bob)
    assert net.banks["bank-b"].open_shortfalls() == []
    assert bob.card_balance == bob.shadow == net.money(30 * SEK)
    assert alice.shadow == net.money(120 * SEK)
    assert charlie.shadow == net.money(50 * SEK)

    checked.sync(charlie)
    assert charlie.card_balance == net.money(50 * SEK)
    checked.sync(alice)
    assert alice.card_balance == net.money(120 * SEK)
    assert alice.online == net.money(800 * SEK)
    assert_cards_match_shadows(net)
    assert no_open_shortfalls(net)
    assert net.central.notarised_count() == 2


def test_chain_of_unsynced_payments_settles_after_everyone_syncs(
    net: OfflineNetwork, checked: Checked
):
    """Each holder spends money received offline before synchronising. Whatever the order
    of the syncs, once everyone has synchronised (twice) every payment must be settled: the
    payer of each link has by then been credited what it spent."""
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    dave = net.add_user("Dave", "bank-b")
    checked.top_up(alice, 100 * SEK)
    checked.p2p(alice, bob, 100 * SEK)
    checked.p2p(bob, charlie, 100 * SEK)
    checked.p2p(charlie, dave, 100 * SEK)

    # The last payee syncs first, then each payer up the chain.
    for _ in range(2):
        checked.sync(dave, charlie, bob, alice)

    assert_cards_match_shadows(net)
    assert dave.card_balance == net.money(100 * SEK)
    assert charlie.card_balance == net.money(0)
    assert no_open_shortfalls(net)
    assert net.central.notarised_count() == 3


# --- connections cut at chosen messages -------------------------------------------------------


def test_lost_top_up_instruction_completes_at_next_sync(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    session = checked.step(begin_session, alice, Operation.TOP_UP, 200 * SEK)
    checked.step(send_session, net, alice, session)  # the phone drops the instruction
    # The money left the online wallet for the shadow wallet, the card never heard.
    assert alice.online == net.money(800 * SEK)
    assert alice.shadow == net.money(200 * SEK)
    assert alice.card_balance == net.money(0)

    checked.sync(alice)
    assert alice.card_balance == net.money(200 * SEK)
    assert alice.shadow == net.money(200 * SEK)
    assert alice.online == net.money(800 * SEK)
    checked.sync(alice)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(200 * SEK),
        net.money(200 * SEK),
        net.money(800 * SEK),
    )


def test_lost_sync_instruction_with_offline_log(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.p2p(alice, bob, 80 * SEK)

    session = checked.step(begin_session, alice, Operation.SYNC, 0)
    checked.step(send_session, net, alice, session)  # settled, but the card never hears
    assert alice.shadow == net.money(120 * SEK)
    assert bob.shadow == net.money(80 * SEK)
    assert alice.card.state.offline_transactions == 1

    checked.sync(alice)
    assert alice.card_balance == alice.shadow == net.money(120 * SEK)
    assert alice.card.state.offline_transactions == 0
    checked.sync(bob)
    assert bob.card_balance == bob.shadow == net.money(80 * SEK)
    assert net.central.notarised_count() == 1


def test_lost_defund_instruction_moves_nothing(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 200 * SEK)
    session = checked.step(begin_session, alice, Operation.DEFUND, 50 * SEK)
    checked.step(send_session, net, alice, session)  # dropped: the card keeps its money
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(200 * SEK),
        net.money(200 * SEK),
        net.money(800 * SEK),
    )
    checked.sync(alice)
    checked.sync(alice)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(200 * SEK),
        net.money(200 * SEK),
        net.money(800 * SEK),
    )


def test_defund_after_a_lost_instruction(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 200 * SEK)
    session = checked.step(begin_session, alice, Operation.SYNC, 0)
    checked.step(send_session, net, alice, session)  # dropped

    checked.defund(alice, 50 * SEK)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(150 * SEK),
        net.money(150 * SEK),
        net.money(850 * SEK),
    )
    checked.sync(alice)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(150 * SEK),
        net.money(150 * SEK),
        net.money(850 * SEK),
    )


def test_lost_defund_confirmation_completes_once_at_next_sync(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 200 * SEK)
    session = checked.step(begin_session, alice, Operation.DEFUND, 50 * SEK)
    instruction = checked.step(send_session, net, alice, session)
    checked.step(alice.phone.card.apply_instruction, instruction)  # confirmation lost
    assert alice.card_balance == net.money(150 * SEK)
    assert alice.shadow == net.money(200 * SEK)  # not released before the card confirms
    assert alice.online == net.money(800 * SEK)

    checked.sync(alice)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(150 * SEK),
        net.money(150 * SEK),
        net.money(850 * SEK),
    )
    checked.sync(alice)
    checked.sync(alice)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(150 * SEK),
        net.money(150 * SEK),
        net.money(850 * SEK),
    )


def test_relay_retrying_a_session_gets_the_same_answer(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    session = checked.step(begin_session, alice, Operation.TOP_UP, 200 * SEK)
    first = checked.step(send_session, net, alice, session)
    second = checked.step(send_session, net, alice, session)
    assert first == second
    assert alice.online == net.money(800 * SEK)
    assert alice.shadow == net.money(200 * SEK)

    confirmation = checked.step(alice.phone.card.apply_instruction, second)
    checked.step(send_confirmation, net, alice, confirmation)
    assert alice.card_balance == net.money(200 * SEK)

    # Retried once more after the card applied it: same answer, and the card refuses it.
    third = checked.step(send_session, net, alice, session)
    assert third == first
    checked.refused("wire.replay", alice.phone.card.apply_instruction, third)
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(200 * SEK),
        net.money(200 * SEK),
        net.money(800 * SEK),
    )


def test_relay_retrying_a_defund_session_and_confirmation_moves_money_once(
    net: OfflineNetwork, checked: Checked
):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    checked.top_up(alice, 200 * SEK)
    session = checked.step(begin_session, alice, Operation.DEFUND, 50 * SEK)
    instruction = checked.step(send_session, net, alice, session)
    assert checked.step(send_session, net, alice, session) == instruction
    confirmation = checked.step(alice.phone.card.apply_instruction, instruction)
    checked.step(send_confirmation, net, alice, confirmation)
    checked.step(send_confirmation, net, alice, confirmation)  # the relay retries
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(150 * SEK),
        net.money(150 * SEK),
        net.money(850 * SEK),
    )


def test_relay_retrying_a_session_with_an_offline_log(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.charge(shop, alice, 30 * SEK)
    session = checked.step(begin_session, alice, Operation.SYNC, 0)
    answers = {checked.step(send_session, net, alice, session) for _ in range(3)}
    assert len(answers) == 1
    assert alice.shadow == net.money(170 * SEK)
    assert shop.wallet == net.money(30 * SEK)
    checked.step(alice.phone.card.apply_instruction, answers.pop())
    checked.sync(shop, alice)
    assert alice.card_balance == alice.shadow == net.money(170 * SEK)
    assert shop.wallet == net.money(30 * SEK)
    assert net.central.notarised_count() == 1


def test_lost_terminal_instruction_completes_at_next_sync(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 200 * SEK)
    checked.charge(shop, alice, 30 * SEK)

    upload = checked.step(shop.module.begin_sync, engine_id("bank-b"), shop.pos.records)
    checked.step(net.network.send, "bank-b", "terminal-upload", upload)  # reset lost
    assert shop.wallet == net.money(30 * SEK)
    assert shop.module.state.offline_payments == 1

    checked.sync(shop)
    assert shop.module.state.offline_payments == 0
    assert shop.wallet == net.money(30 * SEK)
    checked.charge(shop, alice, 20 * SEK)
    checked.sync(shop, alice, shop)
    assert shop.wallet == net.money(50 * SEK)
    assert alice.card_balance == alice.shadow == net.money(150 * SEK)
    assert net.central.notarised_count() == 2


def test_everyone_synced_cards_equal_shadows(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=2000 * SEK)
    bob = net.add_user("Bob", "bank-b", online=2000 * SEK)
    charlie = net.add_user("Charlie", "bank-b")
    shop_a = net.add_merchant("ShopA", "bank-a")
    shop_b = net.add_merchant("ShopB", "bank-b")
    checked.top_up(alice, 500 * SEK)
    checked.top_up(bob, 400 * SEK)
    checked.charge(shop_b, alice, 99_99)
    checked.p2p(alice, charlie, 100 * SEK)
    checked.p2p(bob, charlie, 250 * SEK)
    checked.charge(shop_a, charlie, 300 * SEK)
    checked.charge(shop_a, bob, 1)
    checked.sync_everyone()
    checked.sync_everyone()

    assert_cards_match_shadows(net)
    assert alice.card_balance == net.money(300_01)
    assert bob.card_balance == net.money(149_99)
    assert charlie.card_balance == net.money(50 * SEK)
    assert shop_a.wallet == net.money(300_01)
    assert shop_b.wallet == net.money(99_99)
    assert net.central.notarised_count() == 5
    assert no_open_shortfalls(net)
