"""Every limit of the signed policy at its boundary (report §3.3, §3.8): the card's offline
transaction count and maximum balance, the terminal's payment count and received total, policy
updates taken at sync, downgrades and foreign policies refused, and the option that money
received offline may not be spent offline before a sync."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from offpay.bank.engine import engine_id
from offpay.device.reader import CardClient
from offpay.device.terminal import TerminalModule
from offpay.errors import LimitExceeded, OffpayError, PolicyError
from offpay.policy import default_policy
from offpay.sim.network import OfflineNetwork, User
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    CardInstruction,
    CardSession,
    LimitsPolicy,
    Liquidity,
    Operation,
    TerminalInstruction,
    TerminalUpload,
)

if TYPE_CHECKING:
    from conftest import Checked

SEK = 100


def policy(net: OfflineNetwork, bank: str, version: int, **limits: object) -> LimitsPolicy:
    return dataclasses.replace(default_policy(bank, version, net.currency), **limits)


def publish(net: OfflineNetwork, bank: str, version: int, **limits: object) -> Signed:
    return net.banks[bank].publish_policy(policy(net, bank, version, **limits))


def funded(
    net: OfflineNetwork, checked: Checked, name: str, bank: str, minor: int, *, spare: int = 0
) -> User:
    """A user whose card was topped up with ``minor``, keeping ``spare`` online."""
    user = net.add_user(name, bank, online=minor + spare)
    checked.top_up(user, minor)
    return user


# --- card: offline transactions ---------------------------------------------------------------


def test_card_fifth_payment_passes_sixth_is_refused(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    for _ in range(5):
        checked.charge(shop, alice, 10 * SEK)
    assert alice.card.state.offline_transactions == 5
    assert alice.card_balance == net.money(50 * SEK)

    error = checked.refused(
        "limit.card_max_offline_transactions", checked.charge, shop, alice, 10 * SEK
    )
    assert isinstance(error, LimitExceeded)
    assert error.limit == "card_max_offline_transactions"
    assert shop.module.state.offline_payments == 5

    # The sync resets the counter and the card pays again.
    checked.sync(alice)
    assert alice.card.state.offline_transactions == 0
    checked.charge(shop, alice, 10 * SEK)
    assert alice.card_balance == net.money(40 * SEK)
    checked.sync(shop, alice)
    assert alice.card_balance == alice.shadow == net.money(40 * SEK)
    assert shop.wallet == net.money(60 * SEK)


def test_person_to_person_sixth_payment_is_refused(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    for payee in (bob, charlie, bob, charlie, bob):
        checked.p2p(alice, payee, 1 * SEK)
    request = checked.step(charlie.phone.ask, alice.phone.show_identity(), net.money(1 * SEK))
    checked.refused("limit.card_max_offline_transactions", alice.phone.pay, alice.pin, request)
    assert alice.card_balance == net.money(95 * SEK)
    checked.sync(alice)
    checked.p2p(alice, charlie, 1 * SEK)
    assert alice.card_balance == net.money(94 * SEK)


def test_payments_made_and_received_both_count(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.charge(shop, alice, 1 * SEK)
    checked.charge(shop, alice, 1 * SEK)
    checked.p2p(bob, alice, 1 * SEK)
    checked.p2p(alice, bob, 1 * SEK)
    checked.p2p(bob, alice, 1 * SEK)
    assert alice.card.state.offline_transactions == 5

    # A sixth, made or received, is refused.
    checked.refused("limit.card_max_offline_transactions", checked.charge, shop, alice, 1 * SEK)
    checked.refused(
        "limit.card_max_offline_transactions",
        alice.phone.ask,
        bob.phone.show_identity(),
        net.money(1 * SEK),
    )
    checked.sync(alice)
    checked.p2p(bob, alice, 1 * SEK)
    assert alice.card.state.offline_transactions == 1


def test_open_requests_count_towards_the_transaction_limit(net: OfflineNetwork, checked: Checked):
    """A recipient's card counts the payments it asked for, so it never has to refuse a
    payment that answers its own open request for a limit (README: rules chosen where the
    report is silent): with three logged and two asked, a third ask is refused up front."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    payers = [funded(net, checked, name, "bank-a", 100 * SEK) for name in ("C", "D", "E")]
    bob = net.add_user("Bob", "bank-b")
    for _ in range(3):
        checked.p2p(alice, bob, 1 * SEK)
    requests = [
        checked.step(bob.phone.ask, payer.phone.show_identity(), net.money(10 * SEK))
        for payer in payers[:2]
    ]
    checked.refused(
        "limit.card_max_offline_transactions",
        bob.phone.ask,
        payers[2].phone.show_identity(),
        net.money(10 * SEK),
    )
    for payer, request in zip(payers[:2], requests, strict=True):
        checked.step(bob.phone.accept, bob.pin, checked.step(payer.phone.pay, payer.pin, request))
    assert bob.card.state.offline_transactions == 5
    assert bob.card_balance == net.money(23 * SEK)
    checked.sync(bob, alice, *payers)
    assert bob.card_balance == bob.shadow == net.money(23 * SEK)
    assert net.central.notarised_count() == 5
    request = checked.step(bob.phone.ask, payers[2].phone.show_identity(), net.money(10 * SEK))
    checked.step(
        bob.phone.accept, bob.pin, checked.step(payers[2].phone.pay, payers[2].pin, request)
    )
    assert bob.card_balance == net.money(33 * SEK)


def test_a_payment_answering_a_lapsed_request_goes_back_to_its_payer(
    net: OfflineNetwork, checked: Checked
):
    """A request lapses at its payee's sync and is declined there (bank/refusal.py): Bob's card
    refuses a late payment for it, and Alice gets her money back at her sync."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")
    request = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(80 * SEK))
    checked.sync(bob)  # the open request lapses, and Bob's card declares it declined
    payment = checked.step(alice.phone.pay, alice.pin, request)
    checked.refused("wire.replay", bob.phone.accept, bob.pin, payment)
    assert alice.card_balance == net.money(20 * SEK)
    assert bob.card_balance == net.money(0)

    checked.sync(alice)  # settles once, and comes straight back: Bob never had it
    assert bob.shadow == net.money(0)
    assert alice.shadow == alice.card_balance == net.money(100 * SEK)
    checked.sync(bob)
    assert bob.card_balance == net.money(0)
    assert net.central.notarised_count() == 2  # the payment and its refund, each once


def test_the_oldest_of_five_open_requests_lapses(net: OfflineNetwork, checked: Checked):
    payers = [funded(net, checked, f"P{i}", "bank-a", 100 * SEK) for i in range(5)]
    bob = net.add_user("Bob", "bank-b")
    requests = [
        checked.step(bob.phone.ask, p.phone.show_identity(), net.money((i + 1) * SEK))
        for i, p in enumerate(payers)
    ]
    assert len(bob.card.state.open_requests) == 4
    first = checked.step(payers[0].phone.pay, payers[0].pin, requests[0])
    checked.refused("device.declined", bob.phone.accept, bob.pin, first)
    last = checked.step(payers[4].phone.pay, payers[4].pin, requests[4])
    checked.step(bob.phone.accept, bob.pin, last)
    assert bob.card_balance == net.money(5 * SEK)
    checked.sync(*payers, bob)
    # The lapsed request was declined: its payment (SEK 1) went back to its payer.
    assert bob.card_balance == bob.shadow == net.money(5 * SEK)
    assert payers[0].shadow == net.money(100 * SEK)  # the card gets it at its next sync
    checked.sync(payers[0])
    assert payers[0].card_balance == net.money(100 * SEK)


def test_a_payment_to_a_lapsed_request_does_not_lock_the_recipient_out_of_sync(
    net: OfflineNetwork, checked: Checked
):
    """Bob asks Alice for SEK 50 at SEK 2 950, his request lapses at his sync, Charlie pays
    him SEK 50 and Alice answers the lapsed request: Bob's card refuses her payment, which
    goes back to her. Nothing is lost, Bob can still synchronise (a sync moves no money) and
    his card stays within its limit."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    charlie = funded(net, checked, "Charlie", "bank-a", 100 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 2950 * SEK)
    late = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(50 * SEK))
    checked.sync(bob)
    checked.p2p(charlie, bob, 50 * SEK)
    payment = checked.step(alice.phone.pay, alice.pin, late)
    checked.refused("wire.replay", bob.phone.accept, bob.pin, payment)
    checked.sync(alice, charlie)
    assert bob.shadow == net.money(3000 * SEK)  # Charlie's arrived; Alice's went back
    assert alice.shadow == net.money(100 * SEK)

    checked.sync(bob)  # must not be refused
    assert bob.card_balance <= bob.card.state.policy.card_max_balance
    assert bob.shadow + bob.online == net.money(3000 * SEK)


# --- card: maximum balance --------------------------------------------------------------------


def test_top_up_to_exactly_the_maximum_balance(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=5000 * SEK)
    checked.top_up(alice, 2999 * SEK)
    checked.top_up(alice, 1 * SEK)
    assert alice.card_balance == alice.shadow == net.money(3000 * SEK)

    error = checked.refused("limit.card_max_balance", alice.phone.top_up, alice.pin, net.money(1))
    assert isinstance(error, LimitExceeded)
    assert alice.online == net.money(2000 * SEK)


def test_top_up_one_ore_above_the_maximum_is_refused(net: OfflineNetwork, checked: Checked):
    alice = net.add_user("Alice", "bank-a", online=5000 * SEK)
    checked.refused(
        "limit.card_max_balance", alice.phone.top_up, alice.pin, net.money(3000 * SEK + 1)
    )
    assert (alice.card_balance, alice.shadow, alice.online) == (
        net.money(0),
        net.money(0),
        net.money(5000 * SEK),
    )
    checked.top_up(alice, 3000 * SEK)
    assert alice.card_balance == net.money(3000 * SEK)


def test_person_to_person_above_the_recipients_maximum_is_refused(
    net: OfflineNetwork, checked: Checked
):
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 2950 * SEK)
    checked.refused(
        "limit.card_max_balance",
        bob.phone.ask,
        alice.phone.show_identity(),
        net.money(50 * SEK + 1),
    )
    # Exactly to the maximum passes.
    checked.p2p(alice, bob, 50 * SEK)
    assert bob.card_balance == net.money(3000 * SEK)
    checked.refused(
        "limit.card_max_balance", bob.phone.ask, alice.phone.show_identity(), net.money(1)
    )


def test_open_requests_count_towards_the_maximum_balance(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 2950 * SEK)
    checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(30 * SEK))
    checked.refused(
        "limit.card_max_balance",
        bob.phone.ask,
        alice.phone.show_identity(),
        net.money(20 * SEK + 1),
    )
    checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(20 * SEK))


def test_unanswered_payment_requests_do_not_block_the_card_after_sync(
    net: OfflineNetwork, checked: Checked
):
    """A recipient whose payer never pays (here: cannot pay) must not be blocked forever: once
    the card has synchronised, it can be paid again."""
    broke = net.add_user("Broke", "bank-a")
    charlie = funded(net, checked, "Charlie", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")
    for _ in range(4):
        request = checked.step(bob.phone.ask, broke.phone.show_identity(), net.money(750 * SEK))
        checked.refused("funds.insufficient", broke.phone.pay, broke.pin, request)
    checked.sync(bob)
    checked.p2p(charlie, bob, 10 * SEK)
    assert bob.card_balance == net.money(10 * SEK)


# --- terminal limits --------------------------------------------------------------------------


def test_terminal_twelfth_payment_passes_thirteenth_is_refused(
    net: OfflineNetwork, checked: Checked
):
    shop = net.add_merchant("Shop", "bank-b")
    users = [funded(net, checked, n, "bank-a", 100 * SEK) for n in ("A", "B", "C")]
    payers = [users[0]] * 5 + [users[1]] * 5 + [users[2]] * 2
    for payer in payers:
        checked.charge(shop, payer, 1 * SEK)
    assert shop.module.state.offline_payments == 12

    checked.refused("limit.terminal_max_offline_payments", checked.charge, shop, users[2], 1 * SEK)
    assert users[2].card_balance == net.money(98 * SEK)  # the card was not debited
    assert users[2].card.state.offline_transactions == 2

    checked.sync(shop)
    assert shop.wallet == net.money(12 * SEK)
    checked.charge(shop, users[2], 1 * SEK)
    assert shop.module.state.offline_payments == 1


def test_terminal_received_total_exactly_at_the_limit(net: OfflineNetwork, checked: Checked):
    shop = net.add_merchant("Shop", "bank-b")
    users = [funded(net, checked, f"U{i}", "bank-a", 3000 * SEK) for i in range(8)]
    for payer in users[:6]:
        checked.charge(shop, payer, 3000 * SEK)
    assert shop.module.state.received == net.money(18_000 * SEK)

    # SEK 2 000.01 would pass 20 000; it is refused and the card keeps its money.
    checked.refused("limit.terminal_max_received", checked.charge, shop, users[6], 2000 * SEK + 1)
    assert users[6].card_balance == net.money(3000 * SEK)
    checked.charge(shop, users[6], 2000 * SEK)
    assert shop.module.state.received == net.money(20_000 * SEK)

    error = checked.refused("limit.terminal_max_received", checked.charge, shop, users[7], 1)
    assert isinstance(error, LimitExceeded)
    assert users[7].card_balance == net.money(3000 * SEK)
    assert users[7].card.state.offline_transactions == 0

    checked.sync(shop)
    assert shop.wallet == net.money(20_000 * SEK)
    checked.charge(shop, users[7], 1)
    checked.sync(shop, *users)
    assert shop.wallet == net.money(20_000 * SEK + 1)
    for user in users:
        assert user.card_balance == user.shadow


# --- policy updates ---------------------------------------------------------------------------


def test_card_takes_a_lower_limit_at_sync_then_enforces_it(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    publish(net, "bank-a", 2, card_max_offline_transactions=2)

    # Until it syncs the card keeps the policy it has.
    for _ in range(3):
        checked.charge(shop, alice, 1 * SEK)
    assert alice.card.state.policy.version == 1

    checked.sync(alice)
    assert alice.card.state.policy.version == 2
    assert alice.card.state.policy.card_max_offline_transactions == 2
    checked.charge(shop, alice, 1 * SEK)
    checked.charge(shop, alice, 1 * SEK)
    checked.refused("limit.card_max_offline_transactions", checked.charge, shop, alice, 1 * SEK)
    assert alice.card_balance == net.money(95 * SEK)


def test_card_takes_a_lower_maximum_balance_at_sync(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 100 * SEK, spare=100 * SEK)
    publish(net, "bank-b", 2, card_max_balance=net.money(150 * SEK))
    checked.sync(bob)
    assert bob.card.state.policy.card_max_balance == net.money(150 * SEK)
    checked.refused(
        "limit.card_max_balance",
        bob.phone.ask,
        alice.phone.show_identity(),
        net.money(50 * SEK + 1),
    )
    checked.p2p(alice, bob, 50 * SEK)
    checked.refused("limit.card_max_balance", bob.phone.top_up, bob.pin, net.money(1))


def test_terminal_takes_a_lower_limit_at_sync(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    publish(net, "bank-b", 2, terminal_max_offline_payments=1)
    checked.charge(shop, alice, 1 * SEK)
    checked.charge(shop, alice, 1 * SEK)  # still under version 1
    checked.sync(shop)
    assert shop.module.state.policy.version == 2
    checked.charge(shop, alice, 1 * SEK)
    checked.refused("limit.terminal_max_offline_payments", checked.charge, shop, alice, 1 * SEK)
    assert alice.card_balance == net.money(97 * SEK)


def test_bank_refuses_to_publish_an_older_policy(net: OfflineNetwork, checked: Checked):
    publish(net, "bank-a", 2, card_max_offline_transactions=3)
    for version in (1, 2):
        with pytest.raises(OffpayError) as info:
            publish(net, "bank-a", version)
        assert info.value.code == "policy.downgrade"
    current = net.banks["bank-a"].current_policy()
    assert current is not None
    assert current[1].version == 2


def forged_card_instruction(
    net: OfflineNetwork, user: User, bank: str, signed_policy: Signed
) -> tuple[CardClient, bytes]:
    """Open a sync session on the card and answer it with an instruction signed by ``bank``'s
    engine that carries ``signed_policy``; otherwise exactly what the card expects."""
    client = CardClient(user.card.process)
    client.verify_pin(user.pin)
    session_bytes = client.begin_online(engine_id(user.bank.name), Operation.SYNC, net.money(0))
    opened = user.bank.intake.open(session_bytes)  # the test plays the intermediary
    session = decode(Signed.from_bytes(opened).payload, CardSession)
    state = user.card.state
    engine = net.banks[bank]
    instruction = CardInstruction(
        sender=engine.id,
        receiver=state.card_id,
        nonce=session.nonce,
        instruction_no=state.instruction_no + 1,
        expected_seq=state.seq,
        operation=Operation.SYNC,
        balance=state.balance,
        clear_through_seq=state.seq,
        policy=signed_policy,
        revocations=None,
    )
    return client, sign(instruction, engine.credential).to_bytes()


def test_forged_instruction_helper_is_accepted_with_a_newer_policy(
    net: OfflineNetwork, checked: Checked
):
    """Control for the refusals below: the same construction with a valid newer policy is
    applied, so the refusals are caused by the policy alone."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    newer = publish(net, "bank-a", 2, card_max_offline_transactions=4)
    client, instruction = forged_card_instruction(net, alice, "bank-a", newer)
    client.apply_instruction(instruction)
    assert alice.card.state.policy.version == 2
    assert alice.card_balance == net.money(100 * SEK)


def test_card_refuses_an_older_policy(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    current = net.banks["bank-a"].current_policy()
    assert current is not None
    version_1 = current[0]
    publish(net, "bank-a", 2, card_max_offline_transactions=3)
    checked.sync(alice)
    assert alice.card.state.policy.version == 2

    client, instruction = forged_card_instruction(net, alice, "bank-a", version_1)
    error = checked.refused("policy.downgrade", client.apply_instruction, instruction)
    assert isinstance(error, PolicyError)
    assert alice.card.state.policy.version == 2
    assert alice.card.state.policy.card_max_offline_transactions == 3


def test_card_refuses_a_policy_signed_by_another_bank(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    # Bank B's own policy, and a policy naming bank A as issuer but signed by bank B.
    foreign = publish(net, "bank-b", 2, card_max_offline_transactions=50)
    impostor = sign(
        policy(net, "bank-a", 9, card_max_offline_transactions=50),
        net.banks["bank-b"].credential,
    )
    for signed_policy in (foreign, impostor):
        client, instruction = forged_card_instruction(net, alice, "bank-a", signed_policy)
        error = checked.refused("policy.unsigned", client.apply_instruction, instruction)
        assert isinstance(error, PolicyError)
        assert alice.card.state.policy.version == 1
        assert alice.card.state.policy.card_max_offline_transactions == 5


def test_card_refuses_an_instruction_signed_by_another_bank(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    foreign = publish(net, "bank-b", 2, card_max_offline_transactions=50)
    client, instruction = forged_card_instruction(net, alice, "bank-b", foreign)
    checked.refused("crypto.bad_certificate", client.apply_instruction, instruction)
    assert alice.card.state.policy.version == 1


def forged_terminal_instruction(
    net: OfflineNetwork, shop_name: str, signed_policy: Signed
) -> tuple[TerminalModule, bytes]:
    shop = net.merchants[shop_name]
    upload_bytes = shop.module.begin_sync(engine_id(shop.bank.name), shop.pos.records)
    opened = shop.bank.intake.open(upload_bytes)  # the test plays the intermediary
    upload = decode(Signed.from_bytes(opened).payload, TerminalUpload)
    state = shop.module.state
    instruction = TerminalInstruction(
        sender=shop.bank.id,
        receiver=state.terminal_id,
        nonce=upload.nonce,
        instruction_no=state.instruction_no + 1,
        clear_through_seq=state.cleared_through,
        policy=signed_policy,
        revocations=None,
    )
    return shop.module, sign(instruction, shop.bank.credential).to_bytes()


def test_terminal_refuses_an_older_or_foreign_policy(net: OfflineNetwork, checked: Checked):
    net.add_merchant("Shop", "bank-b")
    shop = net.merchants["Shop"]
    current = net.banks["bank-b"].current_policy()
    assert current is not None
    version_1 = current[0]
    publish(net, "bank-b", 2, terminal_max_offline_payments=3)
    checked.sync(shop)
    assert shop.module.state.policy.version == 2

    module, instruction = forged_terminal_instruction(net, "Shop", version_1)
    checked.refused("policy.downgrade", module.apply_instruction, instruction)
    foreign = publish(net, "bank-a", 3, terminal_max_offline_payments=99)
    module, instruction = forged_terminal_instruction(net, "Shop", foreign)
    checked.refused("policy.unsigned", module.apply_instruction, instruction)
    assert shop.module.state.policy.version == 2
    assert shop.module.state.policy.terminal_max_offline_payments == 3


# --- money received offline, not spendable offline --------------------------------------------


def test_received_money_not_spendable_offline_until_sync(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 100 * SEK)
    charlie = net.add_user("Charlie", "bank-a")
    shop = net.add_merchant("Shop", "bank-a")
    publish(net, "bank-b", 2, liquidity=Liquidity.RESTRICT)
    checked.sync(bob)
    assert bob.card.state.policy.liquidity is Liquidity.RESTRICT

    checked.p2p(alice, bob, 80 * SEK)
    assert bob.card_balance == net.money(180 * SEK)

    # Bob's own SEK 100 is spendable, the SEK 80 he received is not.
    request = checked.step(charlie.phone.ask, bob.phone.show_identity(), net.money(100 * SEK + 1))
    error = checked.refused("limit.card_received_not_spendable", bob.phone.pay, bob.pin, request)
    assert isinstance(error, LimitExceeded)
    checked.refused("limit.card_received_not_spendable", checked.charge, shop, bob, 100 * SEK + 1)
    checked.charge(shop, bob, 60 * SEK)
    checked.p2p(bob, charlie, 40 * SEK)
    assert bob.card_balance == net.money(80 * SEK)
    checked.refused("limit.card_received_not_spendable", checked.charge, shop, bob, 1)

    # After the sync the received money is Bob's to spend offline.
    checked.sync(bob)
    assert bob.card_balance == bob.shadow == net.money(80 * SEK)
    checked.charge(shop, bob, 80 * SEK)
    checked.sync_everyone()
    assert bob.card_balance == bob.shadow == net.money(0)
    assert shop.wallet == net.money(140 * SEK)
    assert charlie.card_balance == charlie.shadow == net.money(40 * SEK)


def test_received_money_is_spendable_offline_by_default(net: OfflineNetwork, checked: Checked):
    alice = funded(net, checked, "Alice", "bank-a", 200 * SEK)
    bob = net.add_user("Bob", "bank-b")
    shop = net.add_merchant("Shop", "bank-a")
    checked.p2p(alice, bob, 80 * SEK)
    checked.charge(shop, bob, 80 * SEK)
    assert bob.card_balance == net.money(0)
