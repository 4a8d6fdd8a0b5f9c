"""The weaknesses the e-krona pilot reported in report §3.8 (DESIGN §6), one test each, named
after the weakness. Each shows the fix at work; conservation is checked after every step."""

from __future__ import annotations

import dataclasses

from tests.conftest import Checked

from offpay.attacks.registry import play_in_process
from offpay.bank.engine import engine_id
from offpay.device.reader import CardClient
from offpay.policy import default_policy
from offpay.sim.network import OfflineNetwork
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import CardInstruction, Operation

SEK = 100


def test_weakness_1_top_ups_are_uniquely_addressed_and_cannot_be_replayed(
    net: OfflineNetwork, checked: Checked
):
    """A top-up instruction answers one card's one session and carries the next number."""
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    carol = net.add_user("Carol", "bank-a", online=500 * SEK)
    captured: list[bytes] = []
    client = CardClient(alice.card.process)
    client.verify_pin(alice.pin)
    session = client.begin_online(engine_id("bank-a"), Operation.TOP_UP, net.money(100 * SEK))
    instruction = checked.step(net.network.send, "bank-a", "card-session", session)
    captured.append(instruction)
    checked.step(client.apply_instruction, instruction)
    assert alice.card_balance == net.money(100 * SEK)
    # Replayed to the same card, to another card, or with a fresh session: refused.
    checked.refused("wire.replay", client.apply_instruction, instruction)
    carol_client = CardClient(carol.card.process)
    checked.refused("wire.wrong_receiver", carol_client.apply_instruction, instruction)
    client.verify_pin(alice.pin)
    client.begin_online(engine_id("bank-a"), Operation.SYNC, net.money(0))
    checked.refused("wire.replay", client.apply_instruction, instruction)
    # The intermediary answers a replayed session with the answer it gave: nothing moves.
    assert checked.step(net.network.send, "bank-a", "card-session", session) == instruction
    assert alice.online == net.money(400 * SEK) and alice.shadow == net.money(100 * SEK)


def test_weakness_2_payer_and_payee_syncing_at_once_settle_the_payment_once(
    net: OfflineNetwork, checked: Checked
):
    """Bob's intermediary asks Alice's to debit her payment at the very moment Alice's own
    sync settles it: the payment id is the primary key at every step, so it settles once."""
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    bob = net.add_user("Bob", "bank-b")
    checked.top_up(alice, 100 * SEK)
    checked.p2p(alice, bob, 40 * SEK)
    interleaved = []

    def at_the_same_instant(to: str, kind: str, data: bytes) -> bytes:
        if kind == "debit-request" and not interleaved:
            interleaved.append(True)
            alice.phone.sync(alice.pin)  # Alice's sync runs between Bob's request and its answer
        return data

    net.network.taps.append(at_the_same_instant)
    checked.sync(bob)
    assert interleaved
    assert net.central.notarised_count() == 1
    assert (alice.shadow, bob.shadow) == (net.money(60 * SEK), net.money(40 * SEK))
    checked.sync(alice, bob)
    assert (alice.card_balance, bob.card_balance) == (net.money(60 * SEK), net.money(40 * SEK))


def test_weakness_3_instructions_to_cards_are_signed_by_the_intermediary(
    net: OfflineNetwork, checked: Checked
):
    """An instruction signed by anyone but the card's own intermediary is refused."""
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    client = CardClient(alice.card.process)
    client.verify_pin(alice.pin)
    session = client.begin_online(engine_id("bank-a"), Operation.SYNC, net.money(0))
    genuine = decode(
        Signed.from_bytes(net.network.send("bank-a", "card-session", session)).payload,
        CardInstruction,
    )
    richer = dataclasses.replace(genuine, balance=net.money(2_000 * SEK))
    other_bank = sign(richer, net.banks["bank-b"].credential).to_bytes()
    checked.refused("crypto.bad_certificate", client.apply_instruction, other_bank)
    unsigned = Signed(Signed.from_bytes(other_bank).payload, b"", ()).to_bytes()
    checked.refused("crypto.bad_certificate", client.apply_instruction, unsigned)
    assert alice.card_balance == net.money(0)


def test_weakness_4_a_recipient_can_refuse_and_a_shop_that_never_got_the_payment_is_not_paid(
    net: OfflineNetwork, checked: Checked
):
    """Played by `offpay attack payment-never-reached-shop`: the card pays, the payment never
    reaches the shop, the shop gives up on the request; the customer synchronises first, as in
    the report: the shop is not paid, and the customer gets the money back. A person refuses a
    payment the same way (tests/test_refusal.py)."""
    report = play_in_process("payment-never-reached-shop", checked)
    alice, shop = net.users["Alice"], net.merchants["Shop"]
    assert [(f.party, f.code) for f in report.findings] == [
        ("the shop's module", "device.declined")
    ]
    assert shop.wallet == net.money(0)
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)


def test_weakness_5_limits_are_a_signed_policy_not_hard_coded(
    net: OfflineNetwork, checked: Checked
):
    """The intermediary changes a limit by publishing a newer signed policy; cards take it at
    their next sync and refuse an older or foreign one."""
    alice = net.add_user("Alice", "bank-a", online=5_000 * SEK)
    bank = net.banks["bank-a"]
    newer = dataclasses.replace(default_policy("bank-a", 2), card_max_balance=net.money(500 * SEK))
    bank.publish_policy(newer)
    checked.sync(alice)
    assert alice.card.state.policy.version == 2
    checked.refused("limit.card_max_balance", alice.phone.top_up, alice.pin, net.money(501 * SEK))
    checked.top_up(alice, 500 * SEK)


def test_weakness_6_terminal_key_is_protected_and_requests_are_signed(
    net: OfflineNetwork, checked: Checked
):
    """The terminal's key lives in its secure module (the PoS app never holds it) and the
    module signs every request; a request the app made up is refused by the card."""
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    assert not any("signer" in name for name in vars(shop.pos))
    identity = CardClient(alice.card.process).identity()
    request = checked.step(shop.module.request_payment, identity, net.money(10 * SEK))
    envelope = Signed.from_bytes(request)
    forged = Signed(
        envelope.payload.replace(b"\x19\x03\xe8", b"\x19\x03\xe9"),
        envelope.signature,
        envelope.chain,
    )
    client = CardClient(alice.card.process)
    client.verify_pin(alice.pin)
    checked.refused("crypto.bad_signature", client.pay, forged.to_bytes())


def test_weakness_7_counter_drift_is_told_apart_from_tampering(
    net: OfflineNetwork, checked: Checked
):
    """A card whose counters disagree with its intermediary's proves its history with the
    last instruction it applied; the intermediary recovers instead of leaving it unusable.
    (Tampering, which cannot prove it, is blocked: tests/test_containment.py.)"""
    from sqlalchemy import update

    from offpay.store import schema

    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    checked.top_up(alice, 100 * SEK)
    bank = net.banks["bank-a"]
    with bank.db.begin() as conn:
        conn.execute(
            update(schema.devices).where(schema.devices.c.id == alice.card_id).values(issued_no=0)
        )
    checked.sync(alice)
    assert bank.device(alice.card_id).status == "active"
    assert any(kind == "counter_recovered" for kind, _, _ in bank.anomalies())
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)


def test_weakness_8_liquidity_chains_settle_in_any_order():
    """Report §3.7's Alice → Bob → Charlie: see tests/test_liquidity.py, which plays it under
    each liquidity policy and a five-payment chain in every order of syncs. Here, the queue:
    Charlie syncs first, and his SEK 50 settles by itself when Alice synchronises."""
    from tests.test_liquidity import Liquidity, network, report_parties

    net, checked, _ = network(Liquidity.QUEUE)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie)
    assert charlie.shadow == net.money(0)
    checked.sync(alice)
    assert charlie.shadow == net.money(50 * SEK)
