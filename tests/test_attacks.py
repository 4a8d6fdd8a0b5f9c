"""The attack suite (issue 3, point 6): one test per attack, named after it.

Threat model: cards and terminal secure modules are tamper-resistant but a well-funded attacker
can break or clone one (the tests play that by copying a device's key and state); phones, PoS
apps and the network are hostile and may drop, replay, reorder, delay or alter any message;
intermediaries are trusted but audited by the central bank.

Every test asserts that the attack is prevented (a typed error with a stable code that leaves
every wallet and device as it was) or detected and attributed (an anomaly that names the
device), and that money is conserved: the ``checked`` fixture asserts issued == held, and that
each intermediary's wallets agree with the central bank's record, after every step.
docs/threats.md lists every attack, its outcome and the test that shows it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from conftest import ISSUED_PER_BANK, Checked, card_snapshot
from offpay.bank.engine import Intermediary, engine_id
from offpay.crypto.keys import Algorithm, Signer
from offpay.crypto.pki import Authority, Credential, Role, TrustStore
from offpay.device.card import Card
from offpay.device.reader import CardClient
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.relay.phone import PhoneApp, confirmation_code
from offpay.sim.liquidity import SimClock
from offpay.sim.network import ConservationError, Merchant, OfflineNetwork, User
from offpay.store import schema
from offpay.wire.codec import Message, decode, encode
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    CardInstruction,
    CardSession,
    CreditRequest,
    DebitRequest,
    OfflinePayment,
    Operation,
    PaymentRequest,
    SettlementResult,
)

SEK = 100  # minor units per krona


# --- the attacker's tools ---------------------------------------------------------------------


def client(user: User) -> CardClient:
    return CardClient(user.card.process)


def funded(
    net: OfflineNetwork, checked: Checked, name: str, bank: str, minor: int, *, spare: int = 0
) -> User:
    """A user whose card was topped up with ``minor``, keeping ``spare`` in the online wallet."""
    user = net.add_user(name, bank, online=minor + spare)
    checked.top_up(user, minor)
    return user


def begin(user: User, operation: Operation = Operation.SYNC, minor: int = 0) -> bytes:
    """The phone's first half of an online session: PIN, then the card's signed session."""
    c = client(user)
    c.verify_pin(user.pin)
    return c.begin_online(engine_id(user.bank.name), operation, Money(minor, user.bank.currency))


def session_and_answer(
    net: OfflineNetwork, user: User, operation: Operation = Operation.SYNC, minor: int = 0
) -> tuple[bytes, bytes]:
    """Open a session on ``user``'s card and fetch its intermediary's signed instruction, which
    the relay keeps instead of delivering."""
    session = begin(user, operation, minor)
    return session, net.network.send(user.bank.name, "card-session", session)


def terminal_upload_and_reset(net: OfflineNetwork, shop: Merchant) -> tuple[bytes, bytes]:
    """The PoS app's sync, with the terminal's upload and the engine's signed reset kept."""
    upload = shop.module.begin_sync(engine_id(shop.bank.name), shop.pos.records)
    return upload, net.network.send(shop.bank.name, "terminal-upload", upload)


def altered(data: bytes, cls: type[Message], **changes: object) -> bytes:
    """The relay changes fields of a signed message and keeps the original signature."""
    env = Signed.from_bytes(data)
    msg = dataclasses.replace(decode(env.payload, cls), **changes)  # type: ignore[type-var]
    return dataclasses.replace(env, payload=encode(msg)).to_bytes()


def resigned(data: bytes, cls: type[Message], credential: Credential, **changes: object) -> bytes:
    """The same message, perhaps changed, signed by ``credential``."""
    msg = dataclasses.replace(decode(Signed.from_bytes(data).payload, cls), **changes)  # type: ignore[type-var]
    return sign(msg, credential).to_bytes()


def payload(data: bytes, cls: type[Any]) -> Any:
    """What a signed message says (read by the attacker, not verified)."""
    return decode(Signed.from_bytes(data).payload, cls)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rogue(institution: str, subject: str, role: Role) -> Credential:
    """A credential from a CA that calls itself ``institution`` under the attacker's own root."""
    ca = Authority.root(now()).intermediary(institution, now())
    return ca.credential_for(subject, role, now(), Algorithm.ED25519)


def stolen_chain(chain: tuple[bytes, ...]) -> Credential:
    """A genuine certificate chain with the attacker's own key: the key does not match."""
    return Credential(Signer.generate(Algorithm.ED25519), chain)


def broken_card_key(user: User) -> Credential:
    """SIMULATED HARDWARE BREAK: the key and chain extracted from ``user``'s card."""
    return Credential(user.card._signer, user.card.state.chain)


def clone_of(card: Card) -> Card:
    """SIMULATED HARDWARE BREAK: a second card with the same key and a copy of the state."""
    assert card._trust is not None
    twin = Card(card._signer)
    twin._trust = TrustStore(card._trust.root_der)
    twin._state = card._state
    return twin


def anomalies_of(bank: Intermediary, device: str) -> list[str]:
    """The kinds of anomaly ``bank`` recorded against ``device``."""
    return [kind for kind, who, _ in bank.anomalies() if who == device]


def payment_to_shop(user: User, shop: Merchant, minor: int) -> bytes:
    """A card's signed payment answering the shop module's request, not yet at the module."""
    request = shop.module.request_payment(client(user).identity(), Money(minor, shop.bank.currency))
    client(user).verify_pin(user.pin)
    return client(user).pay(request)


# --- replays ----------------------------------------------------------------------------------


def test_replayed_top_up(net: OfflineNetwork, checked: Checked) -> None:
    """The relay keeps a top-up's session and signed instruction (card balance SEK 100) and
    replays them after the card was defunded to zero: the card refuses the instruction (it
    answers no open session and is not the next number), the engine answers the replayed
    session with the same instruction and moves nothing."""
    alice = net.add_user("Alice", "bank-a", online=500 * SEK)
    session, instruction = checked.step(session_and_answer, net, alice, Operation.TOP_UP, 100 * SEK)
    confirmation = checked.step(client(alice).apply_instruction, instruction)
    checked.step(net.network.send, "bank-a", "card-confirmation", confirmation)
    checked.defund(alice, 100 * SEK)
    assert (alice.online, alice.shadow, alice.card_balance) == (
        net.money(500 * SEK),
        net.money(0),
        net.money(0),
    )

    checked.refused("wire.replay", client(alice).apply_instruction, instruction)
    begin(alice)  # a session is open when the replay arrives
    checked.refused("wire.replay", client(alice).apply_instruction, instruction)

    before = checked.snapshot()
    assert checked.step(net.network.send, "bank-a", "card-session", session) == instruction
    assert checked.snapshot() == before
    checked.refused("wire.replay", client(alice).apply_instruction, instruction)
    assert (alice.online, alice.shadow, alice.card_balance) == (
        net.money(500 * SEK),
        net.money(0),
        net.money(0),
    )


def test_replayed_reset(net: OfflineNetwork, checked: Checked) -> None:
    """A terminal's signed reset, and a card's signed sync instruction, replayed by the relay
    once the device holds a new unsettled payment: the device refuses it and keeps the payment,
    the engine answers the replayed upload or session as before, and each payment is paid once.
    """
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    carol = funded(net, checked, "Carol", "bank-a", 100 * SEK)

    # the terminal's reset
    checked.charge(shop, alice, 30 * SEK)
    upload, reset = checked.step(terminal_upload_and_reset, net, shop)
    checked.step(shop.module.apply_instruction, reset)
    shop.pos.records.clear()
    checked.charge(shop, carol, 20 * SEK)
    checked.refused("wire.replay", shop.module.apply_instruction, reset)
    shop.module.begin_sync(engine_id("bank-b"), shop.pos.records)  # a sync is open
    checked.refused("wire.replay", shop.module.apply_instruction, reset)
    assert shop.module.state.offline_payments == 1
    before = checked.snapshot()
    assert checked.step(net.network.send, "bank-b", "terminal-upload", upload) == reset
    assert checked.snapshot() == before

    # the card's sync instruction
    checked.charge(shop, alice, 10 * SEK)
    _, sync_instruction = checked.step(session_and_answer, net, alice)
    checked.step(client(alice).apply_instruction, sync_instruction)
    checked.charge(shop, alice, 5 * SEK)
    begin(alice)
    checked.refused("wire.replay", client(alice).apply_instruction, sync_instruction)
    assert alice.card.state.offline_transactions == 1

    checked.sync(shop, alice, carol)
    assert shop.wallet == net.money(65 * SEK)
    assert (alice.shadow, alice.card_balance) == (net.money(55 * SEK), net.money(55 * SEK))
    assert carol.shadow == net.money(80 * SEK)


# --- instructions to cards --------------------------------------------------------------------


def test_forged_balance_instruction(net: OfflineNetwork, checked: Checked) -> None:
    """Balance instructions that the card's own intermediary did not sign: altered by the relay,
    signed by a look-alike engine of another root, by another intermediary's genuine engine, by
    a broken card, or with the engine's certificate and another key. The card refuses each and
    still applies its intermediary's genuine instruction afterwards."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    mallory = funded(net, checked, "Mallory", "bank-a", 1 * SEK)
    _, genuine = checked.step(session_and_answer, net, alice)
    rich = net.money(2_900 * SEK)  # within the card's limit: only the signer is wrong
    bank_a, bank_b = net.banks["bank-a"], net.banks["bank-b"]
    forgeries = {
        "crypto.bad_signature": [
            altered(genuine, CardInstruction, balance=rich),
            resigned(genuine, CardInstruction, stolen_chain(bank_a.credential.chain), balance=rich),
        ],
        "crypto.bad_certificate": [
            resigned(
                genuine,
                CardInstruction,
                rogue("bank-a", engine_id("bank-a"), Role.ENGINE),
                balance=rich,
            ),
            resigned(genuine, CardInstruction, bank_b.credential, sender=bank_b.id, balance=rich),
            resigned(
                genuine,
                CardInstruction,
                broken_card_key(mallory),
                sender=mallory.card_id,
                balance=rich,
            ),
        ],
    }
    for code, instructions in forgeries.items():
        for forged in instructions:
            checked.refused(code, client(alice).apply_instruction, forged)
    assert alice.card_balance == net.money(100 * SEK)
    checked.step(client(alice).apply_instruction, genuine)
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)


def test_instruction_addressed_to_another_card(net: OfflineNetwork, checked: Checked) -> None:
    """The relay delivers Carol's genuine top-up instruction (SEK 500) to Alice's card, which has
    a session open with the same intermediary; then re-addresses it to Alice. Alice's card
    refuses both; Carol's card still takes its own instruction."""
    alice = funded(net, checked, "Alice", "bank-a", 10 * SEK)
    carol = net.add_user("Carol", "bank-a", online=500 * SEK)
    _, for_carol = checked.step(session_and_answer, net, carol, Operation.TOP_UP, 500 * SEK)
    begin(alice)
    checked.refused("wire.wrong_receiver", client(alice).apply_instruction, for_carol)
    readdressed = altered(for_carol, CardInstruction, receiver=alice.card_id)
    checked.refused("crypto.bad_signature", client(alice).apply_instruction, readdressed)
    assert alice.card_balance == net.money(10 * SEK)
    checked.step(client(carol).apply_instruction, for_carol)
    assert carol.card_balance == carol.shadow == net.money(500 * SEK)


# --- offline payments -------------------------------------------------------------------------


def test_altered_amount(net: OfflineNetwork, checked: Checked) -> None:
    """The relay changes the amount of a payment request on its way to the payer card and of a
    signed payment on its way to the payee (terminal or card). Every change breaks a signature;
    the genuine messages still go through and settle once."""
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")

    # at a terminal: a cheaper request for the card, a dearer payment for the module
    request = shop.module.request_payment(client(alice).identity(), net.money(30 * SEK))
    client(alice).verify_pin(alice.pin)
    cheaper = altered(request, PaymentRequest, amount=net.money(1))
    checked.refused("crypto.bad_signature", client(alice).pay, cheaper)
    payment = checked.step(client(alice).pay, request)
    dearer = altered(payment, OfflinePayment, amount=net.money(90 * SEK))
    checked.refused("crypto.bad_signature", shop.pos.receive, dearer)
    checked.step(shop.pos.receive, payment)

    # person to person
    ask = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(20 * SEK))
    checked.refused(
        "crypto.bad_signature",
        alice.phone.pay,
        alice.pin,
        altered(ask, PaymentRequest, amount=net.money(2 * SEK)),
    )
    paid = checked.step(alice.phone.pay, alice.pin, ask)
    inflated = altered(paid, OfflinePayment, amount=net.money(50 * SEK))
    checked.refused("crypto.bad_signature", bob.phone.accept, bob.pin, inflated)
    checked.step(bob.phone.accept, bob.pin, paid)

    checked.sync(alice, shop, bob)
    assert (shop.wallet, bob.shadow) == (net.money(30 * SEK), net.money(20 * SEK))
    assert alice.shadow == alice.card_balance == net.money(50 * SEK)


def test_forged_terminal_request(net: OfflineNetwork, checked: Checked) -> None:
    """The PoS app, which holds no key, forges the terminal's payment request for SEK 90: with
    the terminal's certificate and its own key, signed by a broken card claiming the terminal's
    name, or signed by the intermediary's engine (not a payee). The card refuses each; the
    module's own request is paid."""
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    mallory = funded(net, checked, "Mallory", "bank-b", 1 * SEK)
    genuine = shop.module.request_payment(client(alice).identity(), net.money(10 * SEK))
    dear = net.money(90 * SEK)
    bank_b = net.banks["bank-b"]
    forgeries = {
        "crypto.bad_signature": [
            resigned(genuine, PaymentRequest, stolen_chain(shop.module.state.chain), amount=dear),
            resigned(genuine, PaymentRequest, broken_card_key(mallory), amount=dear),
        ],
        "crypto.bad_certificate": [
            resigned(genuine, PaymentRequest, bank_b.credential, sender=bank_b.id, amount=dear),
        ],
    }
    client(alice).verify_pin(alice.pin)
    for code, requests in forgeries.items():
        for forged in requests:
            checked.refused(code, client(alice).pay, forged)
    checked.step(shop.pos.receive, checked.step(client(alice).pay, genuine))
    checked.sync(shop)
    assert shop.wallet == net.money(10 * SEK)
    assert alice.shadow == net.money(90 * SEK)


def test_payment_to_an_impostor_terminal(net: OfflineNetwork, checked: Checked) -> None:
    """Payees whose certificate no intermediary issued (a whole look-alike PKI for a terminal or
    a card, or a terminal certificate signed by the central bank's root directly), and one that
    shows a genuine terminal's certificate without its key. The payer card refuses to pay any
    of them and pays the genuine terminal."""
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    genuine = shop.module.request_payment(client(alice).identity(), net.money(40 * SEK))
    fake_terminal = "terminal:bank-b:impostor"
    fake_card = "card:bank-b:impostor"
    impostor_key = Signer.generate(Algorithm.ED25519)
    root_only = Credential(
        impostor_key,
        net.central.root.issue(
            fake_terminal, Role.TERMINAL, impostor_key.public_key, now(), institution="bank-b"
        ),
    )
    impostors = {
        "crypto.bad_certificate": [
            resigned(
                genuine,
                PaymentRequest,
                rogue("bank-b", fake_terminal, Role.TERMINAL),
                sender=fake_terminal,
            ),
            resigned(
                genuine, PaymentRequest, rogue("bank-b", fake_card, Role.CARD), sender=fake_card
            ),
            resigned(genuine, PaymentRequest, root_only, sender=fake_terminal),
        ],
        "crypto.bad_signature": [
            resigned(genuine, PaymentRequest, stolen_chain(shop.module.state.chain)),
        ],
    }
    client(alice).verify_pin(alice.pin)
    for code, requests in impostors.items():
        for request in requests:
            checked.refused(code, client(alice).pay, request)
    assert alice.card_balance == net.money(100 * SEK)
    checked.step(shop.pos.receive, checked.step(client(alice).pay, genuine))
    assert alice.card_balance == net.money(60 * SEK)


def test_hostile_relay_swapping_the_payee(net: OfflineNetwork, checked: Checked) -> None:
    """Hostile phones and PoS apps try to turn a payment to Bob (or to a shop) into one to
    Mallory (or another shop): by delivering the signed payment to another payee, rewriting the
    payee in the request, or substituting a request that Mallory's card signed for an earlier
    challenge or for another payer. Each is refused; the genuine payments settle to the payees
    that asked for them and Mallory gets nothing."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    carol = funded(net, checked, "Carol", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")
    mallory = net.add_user("Mallory", "bank-b")
    shop = net.add_merchant("Shop", "bank-b")
    other_shop = net.add_merchant("Other shop", "bank-b")

    # requests Mallory's card signed earlier: for an old challenge of Alice's, and for Carol
    stale = checked.step(mallory.phone.ask, alice.phone.show_identity(), net.money(20 * SEK))
    for_carol = checked.step(mallory.phone.ask, carol.phone.show_identity(), net.money(20 * SEK))

    to_bob = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(20 * SEK))
    to_mallory = altered(to_bob, PaymentRequest, sender=mallory.card_id)
    checked.refused("crypto.bad_signature", alice.phone.pay, alice.pin, to_mallory)
    checked.refused("wire.replay", alice.phone.pay, alice.pin, stale)
    checked.refused("wire.wrong_receiver", alice.phone.pay, alice.pin, for_carol)
    payment = checked.step(alice.phone.pay, alice.pin, to_bob)
    checked.refused("wire.wrong_receiver", mallory.phone.accept, mallory.pin, payment)
    checked.step(bob.phone.accept, bob.pin, payment)

    at_shop = payment_to_shop(alice, shop, 30 * SEK)
    checked.conserved()
    checked.refused("wire.wrong_receiver", other_shop.pos.receive, at_shop)
    checked.step(shop.pos.receive, at_shop)

    checked.sync(alice, bob, mallory, shop, other_shop)
    assert (bob.shadow, shop.wallet) == (net.money(20 * SEK), net.money(30 * SEK))
    assert (mallory.shadow, other_shop.wallet) == (net.money(0), net.money(0))
    assert alice.shadow == net.money(50 * SEK)


def test_hostile_relay_substituting_a_live_request_of_another_payee(
    net: OfflineNetwork, checked: Checked
) -> None:
    """The relay hands Alice's identity and fresh challenge to Mallory's card and brings back
    Mallory's request, signed for that challenge. The two people compare the code their phones
    show: Alice's phone refuses the substitute before her card is touched; with the genuine
    request the codes match and the payment goes through."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")
    mallory = net.add_user("Mallory", "bank-b")
    identity = alice.phone.show_identity()
    to_bob = checked.step(bob.phone.ask, identity, net.money(20 * SEK))
    to_mallory = checked.step(mallory.phone.ask, identity, net.money(20 * SEK))  # the relay's
    shown_by_bob = confirmation_code(to_bob)
    assert confirmation_code(to_mallory) != shown_by_bob
    card = card_snapshot(alice)
    checked.refused(
        "payment.code_mismatch",
        functools.partial(alice.phone.pay, code=shown_by_bob),
        alice.pin,
        to_mallory,
    )
    assert card_snapshot(alice) == card
    payment = checked.step(alice.phone.pay, alice.pin, to_bob, code=shown_by_bob)
    checked.step(bob.phone.accept, bob.pin, payment)
    checked.sync(alice, bob, mallory)
    assert (bob.shadow, mallory.shadow, alice.shadow) == (
        net.money(20 * SEK),
        net.money(0),
        net.money(80 * SEK),
    )


# --- broken and cloned cards ------------------------------------------------------------------


def test_cloned_card_at_two_terminals(net: OfflineNetwork, checked: Checked) -> None:
    """Alice's card is cloned (its key and state copied into a second card) and both spend the
    same SEK 100 at two terminals. The two payments carry the same card counter, so the second
    to reach Alice's intermediary is refused and recorded as a conflicting payment; the card is
    blocked and revoked network-wide, the refused payment is a recorded loss with the bound the
    policy puts on it, and Alice's shadow wallet is debited once."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    other_shop = net.add_merchant("Other shop", "bank-a")
    clone = clone_of(alice.card)
    checked.charge(shop, alice, 100 * SEK)
    checked.step(other_shop.pos.charge, clone.process, alice.pin, net.money(100 * SEK))
    assert anomalies_of(alice.bank, alice.card_id) == []

    checked.sync(shop, other_shop)
    assert shop.wallet == net.money(100 * SEK)
    assert other_shop.wallet == net.money(0)
    assert other_shop.module.state.offline_payments == 0  # refused, not left waiting
    assert alice.shadow == net.money(0)
    assert "conflicting_payment" in anomalies_of(alice.bank, alice.card_id)
    assert alice.bank.device(alice.card_id).status == "blocked"
    assert alice.card_id in net.central.revoked_devices()
    assert [(loss.device, loss.amount) for loss in alice.bank.losses()] == [
        (alice.card_id, net.money(100 * SEK))
    ]
    checked.refused("crypto.revoked", alice.phone.sync, alice.pin)
    checked.refused(
        "crypto.revoked", PhoneApp(clone.process, "bank-a", net.network).sync, alice.pin
    )


def test_rolled_back_card(net: OfflineNetwork, checked: Checked) -> None:
    """Alice saves her card's state (SEK 100), pays SEK 100, synchronises, restores the saved
    state and pays SEK 100 again at a terminal that cannot know. At its next sync the restored
    card shows a counter below one it showed before: it is refused, blocked and revoked. The
    second payment reuses the first one's counter: when the terminal synchronises it is refused
    and recorded as a loss. Nobody is paid twice."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    other_shop = net.add_merchant("Other shop", "bank-b")
    saved = alice.card._state
    checked.charge(shop, alice, 100 * SEK)
    checked.sync(alice)
    assert alice.card_balance == alice.shadow == net.money(0)

    alice.card._state = saved
    assert alice.card_balance == net.money(100 * SEK)
    checked.charge(other_shop, alice, 100 * SEK)
    checked.refused("device.rolled_back", alice.phone.sync, alice.pin)
    assert "rolled_back" in anomalies_of(alice.bank, alice.card_id)
    assert alice.bank.device(alice.card_id).status == "blocked"
    assert alice.card_id in net.central.revoked_devices()

    checked.sync(shop, other_shop)
    assert shop.wallet == net.money(100 * SEK)
    assert other_shop.wallet == net.money(0)
    assert alice.shadow == net.money(0)
    assert "conflicting_payment" in anomalies_of(alice.bank, alice.card_id)
    assert [loss.amount for loss in alice.bank.losses()] == [net.money(100 * SEK)]


def test_rolled_back_card_restored_to_before_a_defund(net: OfflineNetwork, checked: Checked):
    """A broken card's core writes back the state it had before a defund (SEK 100 on the card)
    and spends it offline. The card had confirmed the defund's instruction: when it later says
    it never applied it, that is a rollback, not a lost message. The card is blocked and
    revoked, and the shop's payment is never paid out of money that went online."""
    mallory = funded(net, checked, "Mallory", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    saved = mallory.card._state
    checked.defund(mallory, 100 * SEK)
    assert mallory.online == net.money(100 * SEK) and mallory.shadow == net.money(0)
    mallory.card._state = saved  # the broken core restores the old state, SEK 100
    checked.charge(shop, mallory, 100 * SEK)
    # The payment's counter is one the card had passed when it confirmed the defund, and no
    # upload ever showed it: proof of a rollback when the shop synchronises.
    checked.sync(shop)
    assert mallory.bank.device(mallory.card_id).status == "blocked"
    assert "rolled_back" in anomalies_of(mallory.bank, mallory.card_id)
    assert [loss.amount for loss in mallory.bank.losses()] == [net.money(100 * SEK)]
    checked.refused("crypto.revoked", mallory.phone.sync, mallory.pin)
    assert mallory.card_id in net.central.revoked_devices()
    assert shop.wallet == net.money(0) and mallory.online == net.money(100 * SEK)


def test_counterfeit_payment_uploaded_by_a_broken_card(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Mallory breaks her own card and uploads, in a session her card's key signs, a payment
    from Alice that she altered from SEK 10 to SEK 90. Alice's signature does not cover it: the
    entry is refused and recorded against Mallory's card, and nothing of it settles; the
    genuine payment settles once, when Alice synchronises."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    mallory = net.add_user("Mallory", "bank-a")
    ask = checked.step(mallory.phone.ask, alice.phone.show_identity(), net.money(10 * SEK))
    payment = checked.step(alice.phone.pay, alice.pin, ask)
    checked.step(mallory.phone.accept, mallory.pin, payment)

    session = payload(begin(mallory), CardSession)
    (entry,) = session.log
    counterfeit = altered(payment, OfflinePayment, amount=net.money(90 * SEK))
    log = (dataclasses.replace(entry, payment=Signed.from_bytes(counterfeit)),)
    forged = sign(dataclasses.replace(session, log=log), broken_card_key(mallory)).to_bytes()
    before = checked.snapshot()
    checked.step(net.network.send, "bank-a", "card-session", forged)
    assert "invalid_entry" in anomalies_of(mallory.bank, mallory.card_id)
    assert checked.snapshot() == before  # nothing settled, no wallet moved
    # An honest card never signs an invalid payment into its session: the card is tampered
    # with, so it is blocked and revoked.
    assert mallory.bank.device(mallory.card_id).status == "blocked"
    assert mallory.card_id in net.central.revoked_devices()

    checked.sync(alice)  # the genuine payment settles once
    assert mallory.shadow == net.money(10 * SEK)
    assert alice.shadow == alice.card_balance == net.money(90 * SEK)
    checked.refused("crypto.revoked", mallory.phone.sync, mallory.pin)


def test_pin_brute_force(net: OfflineNetwork, checked: Checked) -> None:
    """A thief with Alice's card guesses PINs at a shop. The third wrong guess blocks the PIN;
    after that the right PIN is refused too, and the card pays nothing and cannot go online."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    bob = net.add_user("Bob", "bank-b")
    codes: list[str] = []
    for guess in ("0000", "1111", "2222"):
        with pytest.raises(OffpayError) as exc:
            checked.step(shop.pos.charge, alice.card.process, guess, net.money(50 * SEK))
        codes.append(exc.value.code)
    assert codes == ["pin.wrong", "pin.wrong", "pin.blocked"]
    assert shop.module.state.open_requests == ()

    checked.refused("pin.blocked", shop.pos.charge, alice.card.process, alice.pin, net.money(1))
    ask = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(5 * SEK))
    checked.refused("pin.blocked", alice.phone.pay, alice.pin, ask)
    checked.refused("pin.blocked", alice.phone.sync, alice.pin)
    checked.refused("pin.blocked", alice.phone.defund, alice.pin, net.money(100 * SEK))
    assert client(alice).status().pin_tries_left == 0
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)
    assert shop.wallet == net.money(0)


# --- revoked devices --------------------------------------------------------------------------


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def clocked(clock: SimClock) -> Checked:
    """A two-bank network on a clock the test moves by hand, checked like ``checked``."""
    network = OfflineNetwork(clock=clock)
    for name in network.banks:
        network.issue(name, ISSUED_PER_BANK)
    c = Checked(network)
    c.conserved()
    return c


def test_revoked_card_paying(clocked: Checked, clock: SimClock) -> None:
    """Mallory's intermediary blocks her card, which revokes it network-wide. A terminal and a
    card that synchronised since refuse it offline; the card itself cannot go online. A
    terminal that has not synchronised cannot know and accepts a payment; when that payment
    reaches the intermediary after the policy's window it is refused and recorded against the
    card."""
    net, checked = clocked.net, clocked
    mallory = funded(net, checked, "Mallory", "bank-a", 300 * SEK, spare=100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    unsynced = net.add_merchant("Unsynced shop", "bank-a")
    bob = net.add_user("Bob", "bank-b")
    checked.step(mallory.bank.block_device, mallory.card_id, "suspected clone")
    assert mallory.card_id in net.central.revoked_devices()

    checked.sync(shop, bob)
    checked.refused("crypto.revoked", checked.charge, shop, mallory, 10 * SEK)
    checked.refused("crypto.revoked", bob.phone.ask, mallory.phone.show_identity(), net.money(1))
    checked.refused("crypto.revoked", mallory.phone.sync, mallory.pin)
    checked.refused("crypto.revoked", mallory.phone.top_up, mallory.pin, net.money(50 * SEK))

    checked.charge(unsynced, mallory, 40 * SEK)  # it has no list that names the card
    window = mallory.bank._policy()[1].blocked_window_hours
    clock.advance(60 * (window + 1))
    checked.sync(unsynced)
    assert unsynced.wallet == net.money(0)
    assert "late_payment" in anomalies_of(mallory.bank, mallory.card_id)
    assert (shop.wallet, bob.shadow) == (net.money(0), net.money(0))
    assert mallory.shadow + mallory.online == net.money(400 * SEK)  # she spent nothing


def test_revoked_terminal_receiving(net: OfflineNetwork, checked: Checked) -> None:
    """The shop's intermediary blocks its terminal (stolen), which revokes it network-wide. A
    card that synchronised since refuses to pay it, and the terminal's own sync is refused, so
    nothing it collects afterwards is uploaded from it."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.step(shop.bank.block_device, shop.terminal_id, "stolen terminal")
    assert shop.terminal_id in net.central.revoked_devices()

    checked.sync(alice)
    assert shop.terminal_id in alice.card.state.revoked
    checked.refused("crypto.revoked", checked.charge, shop, alice, 10 * SEK)
    checked.refused("crypto.revoked", shop.pos.sync)
    assert "blocked" in anomalies_of(shop.bank, shop.terminal_id)
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)
    assert shop.wallet == net.money(0)


# --- between intermediaries -------------------------------------------------------------------


class Rendezvous:
    """A network tap that holds the next message to each armed (party, kind) until all of them
    arrived, then lets them through together: the requests reach their handlers at the same
    instant, each on its own thread."""

    def __init__(self, *points: tuple[str, str]) -> None:
        self._points = frozenset(points)
        self._armed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(len(points))

    def arm(self) -> None:
        with self._lock:
            self._armed = set(self._points)

    def __call__(self, to: str, kind: str, data: bytes) -> bytes:
        with self._lock:
            hit = (to, kind) in self._armed
            self._armed.discard((to, kind))
        if hit:
            self._barrier.wait(timeout=60)  # a guard against a hang, not a measurement
        return data


def run_together(*calls: Callable[[], Any]) -> list[BaseException]:
    """Run each call on its own thread; the exceptions they raised."""
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


ROUNDS = 20


def test_both_parties_syncing_concurrently_through_two_intermediaries(tmp_path: Path) -> None:
    """Alice (bank-a) pays Bob (bank-b) offline; then, on two threads, her card synchronises at
    bank-a while his synchronises at bank-b, and bank-b's debit request reaches bank-a at the
    same instant as her session. Twenty times. Each payment is debited, notarised and credited
    exactly once, and money is conserved after every round.

    The engines use file-backed SQLite: with the default in-memory SQLite every engine has one
    connection shared by all threads, so concurrent requests interleave their transactions and
    this test fails in its first round (a step happens twice: money is lost or created)."""
    net = OfflineNetwork(url_for=lambda name: f"sqlite+pysqlite:///{tmp_path}/{name}.db")
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    checked = Checked(net)
    alice = funded(net, checked, "Alice", "bank-a", ROUNDS * SEK)
    bob = net.add_user("Bob", "bank-b")
    together = Rendezvous(("bank-a", "card-session"), ("bank-a", "debit-request"))
    net.network.taps.append(together)
    for done in range(1, ROUNDS + 1):
        checked.p2p(alice, bob, 1 * SEK)
        together.arm()
        errors = run_together(lambda: alice.phone.sync(alice.pin), lambda: bob.phone.sync(bob.pin))
        assert errors == [], errors
        checked.conserved()
        assert net.central.notarised_count() == done
        assert alice.shadow == alice.card_balance == net.money((ROUNDS - done) * SEK)
        assert bob.shadow == net.money(done * SEK)
        assert all(bank.in_transit() == net.money(0) for bank in net.banks.values())
        # Bob's card may have been answered before the credit from Alice's sync reached his
        # shadow wallet (the two syncs run at once): his next sync brings it.
        checked.sync(bob)
        assert bob.card_balance == bob.shadow


def test_forged_payment_request_between_intermediaries(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Debit requests to the payer's intermediary signed by a broken card, by a look-alike
    engine of another root, or with bank-b's engine certificate and another key; credit
    requests to the payee's intermediary from a look-alike bank-a, or from bank-a itself with a
    notary receipt it signed, with the receipt of another payment, or with none. All are
    refused and move nothing; the genuine settlement pays the shop once."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    carol = funded(net, checked, "Carol", "bank-a", 100 * SEK)
    mallory = funded(net, checked, "Mallory", "bank-b", 1 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    a, b = net.banks["bank-a"], net.banks["bank-b"]

    credits: list[bytes] = []

    def keep_credits(to: str, kind: str, data: bytes) -> bytes:
        if kind == "credit-request":
            credits.append(data)
        return data

    net.network.taps.append(keep_credits)
    checked.charge(shop, carol, 1 * SEK)
    checked.sync(carol)  # bank-a debits, notarises and credits bank-b: a genuine receipt
    (carols_credit,) = credits
    other_receipt = payload(carols_credit, CreditRequest).notary_receipt

    payment = Signed.from_bytes(payment_to_shop(alice, shop, 30 * SEK))
    checked.step(shop.pos.receive, payment.to_bytes())
    debit = sign(DebitRequest(b.id, a.id, os.urandom(16), payment), b.credential).to_bytes()
    credit = sign(
        CreditRequest(a.id, b.id, os.urandom(16), payment, other_receipt), a.credential
    ).to_bytes()
    own_receipt = resigned(  # a receipt for this very payment, signed by bank-a's engine
        other_receipt,
        SettlementResult,
        a.credential,
        sender=a.id,
        tx_id=payload(payment.to_bytes(), OfflinePayment).tx_id,
        evidence=payment.digest,
        amount=net.money(30 * SEK),
    )
    forged_debits = {
        "crypto.bad_certificate": [
            resigned(debit, DebitRequest, broken_card_key(mallory), sender=mallory.card_id),
            resigned(debit, DebitRequest, rogue("bank-b", b.id, Role.ENGINE)),
        ],
        "crypto.bad_signature": [resigned(debit, DebitRequest, stolen_chain(b.credential.chain))],
    }
    for code, requests in forged_debits.items():
        for request in requests:
            checked.refused(code, a.handle, "debit-request", request)
    forged_credits = {
        "crypto.bad_certificate": [
            resigned(credit, CreditRequest, rogue("bank-a", a.id, Role.ENGINE)),
            resigned(credit, CreditRequest, a.credential, notary_receipt=own_receipt),
        ],
        "bank.no_receipt": [credit],
        "wire.malformed": [resigned(credit, CreditRequest, a.credential, notary_receipt=b"")],
    }
    for code, requests in forged_credits.items():
        for request in requests:
            checked.refused(code, b.handle, "credit-request", request)
    assert shop.wallet == net.money(1 * SEK)

    checked.sync(shop, alice)
    assert shop.wallet == net.money(31 * SEK)
    assert alice.shadow == alice.card_balance == net.money(70 * SEK)


def test_intermediary_loading_a_card_beyond_its_shadow_wallet(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Report §3.4: a card's balance must be backed by its shadow wallet. The engine answers a
    broken card that claims SEK 2 000 with what the shadow wallet holds. An intermediary that
    signs a SEK 2 000 balance for a card whose shadow wallet holds SEK 100 creates no money:
    the card's payment of SEK 1 500 waits in the queue, recorded against the card, and the shop
    is not paid. If the intermediary credits the shadow wallet to cover it, the central bank's
    audit names the intermediary."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    bank = alice.bank

    claimed = altered(begin(alice), CardSession, balance=net.money(2_000 * SEK))
    claim = resigned(claimed, CardSession, broken_card_key(alice))
    instruction = checked.step(net.network.send, "bank-a", "card-session", claim)
    assert payload(instruction, CardInstruction).balance == net.money(100 * SEK)
    checked.step(client(alice).apply_instruction, instruction)
    assert alice.card_balance == alice.shadow == net.money(100 * SEK)

    _, honest = checked.step(session_and_answer, net, alice)
    inflated = resigned(honest, CardInstruction, bank.credential, balance=net.money(2_000 * SEK))
    checked.step(client(alice).apply_instruction, inflated)  # the card cannot know
    assert alice.card_balance == net.money(2_000 * SEK)
    checked.charge(shop, alice, 1_500 * SEK)
    checked.sync(shop)
    assert shop.wallet == net.money(0)
    assert alice.shadow == net.money(100 * SEK)
    assert "shortfall" in anomalies_of(bank, alice.card_id)
    assert [p.amount for p in shop.bank.pending(shop.terminal_id)] == [net.money(1_500 * SEK)]

    shadow = schema.accounts
    with bank.db.begin() as conn:  # the intermediary makes money up in its own ledger
        conn.execute(
            update(shadow)
            .where(shadow.c.id == f"{alice.customer_id}/shadow")
            .values(balance=shadow.c.balance + 1_900 * SEK)
        )
    with pytest.raises(ConservationError):
        net.check_conservation()
    (mismatch,) = net.holdings_mismatches()
    assert mismatch.startswith("bank-a:")
    with bank.db.begin() as conn:
        conn.execute(
            update(shadow)
            .where(shadow.c.id == f"{alice.customer_id}/shadow")
            .values(balance=shadow.c.balance - 1_900 * SEK)
        )
    checked.conserved()
