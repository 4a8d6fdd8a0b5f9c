"""Forged, altered and counterfeit messages: signatures and certificates the receiving party
checks against the network's one root of trust."""

from __future__ import annotations

import dataclasses

from offpay.attacks.checked import expect
from offpay.attacks.play import Play
from offpay.attacks.tools import (
    SEK,
    altered,
    begin,
    begin_signed,
    broken_card_key,
    card_copy,
    client,
    funded,
    now,
    payload,
    resigned,
    rogue,
    session_and_answer,
    spoiled_seal,
    stolen_chain,
    wire,
)
from offpay.bank.engine import engine_id
from offpay.crypto.keys import Algorithm, Signer
from offpay.crypto.pki import Credential, Role
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    CardInstruction,
    CardSession,
    OfflinePayment,
    Operation,
    PaymentRequest,
)


def forged_balance_instruction(play: Play) -> None:
    """Balance instructions that the card's own intermediary did not sign: altered by the relay,
    signed by a look-alike engine of another root, by another intermediary's genuine engine, by
    a broken card, or with the engine's certificate and another key. The card refuses each and
    still applies its intermediary's genuine instruction afterwards."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    mallory = funded(checked, "Mallory", "bank-a", 1 * SEK)
    _, genuine = checked.step(session_and_answer, net.network, alice)
    rich = net.money(2_900 * SEK)  # within the card's limit: only the signer is wrong
    bank_a, bank_b = net.banks["bank-a"], net.banks["bank-b"]
    play.tried("the relay turns bank-a's instruction for Alice's card into one for SEK 2 900")
    forgeries = [
        (
            "crypto.bad_signature",
            "altered, bank-a's signature kept",
            altered(genuine, CardInstruction, balance=rich),
        ),
        (
            "crypto.bad_signature",
            "bank-a's certificate with the forger's key",
            resigned(genuine, CardInstruction, stolen_chain(bank_a.credential.chain), balance=rich),
        ),
        (
            "crypto.bad_certificate",
            "signed by a look-alike bank-a under another root",
            resigned(
                genuine,
                CardInstruction,
                rogue("bank-a", engine_id("bank-a"), Role.ENGINE),
                balance=rich,
            ),
        ),
        (
            "crypto.bad_certificate",
            "signed by bank-b's genuine engine",
            resigned(genuine, CardInstruction, bank_b.credential, sender=bank_b.id, balance=rich),
        ),
        (
            "crypto.bad_certificate",
            "signed with the key of Mallory's broken card",
            resigned(
                genuine,
                CardInstruction,
                broken_card_key(mallory),
                sender=mallory.card_id,
                balance=rich,
            ),
        ),
    ]
    for code, how, forged in forgeries:
        play.refused(
            code, "Alice's card", f"an instruction {how}", client(alice).apply_instruction, forged
        )
    expect(alice.card_balance == net.money(100 * SEK), "a forged instruction changed the card")
    checked.step(client(alice).apply_instruction, genuine)


def instruction_to_another_card(play: Play) -> None:
    """The relay delivers Carol's genuine top-up instruction (SEK 500) to Alice's card, which has
    a session open with the same intermediary; then re-addresses it to Alice. Alice's card
    refuses both; Carol's card still takes its own instruction."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 10 * SEK)
    carol = net.add_user("Carol", "bank-a", online=500 * SEK)
    play.tried("the relay keeps Carol's SEK 500 top-up instruction and delivers it to Alice's card")
    _, for_carol = checked.step(session_and_answer, wire(net), carol, Operation.TOP_UP, 500 * SEK)
    begin(alice)
    play.refused(
        "wire.wrong_receiver",
        "Alice's card",
        "Carol's instruction",
        client(alice).apply_instruction,
        for_carol,
    )
    play.tried("the relay rewrites the instruction's receiver to Alice's card")
    readdressed = altered(for_carol, CardInstruction, receiver=alice.card_id)
    play.refused(
        "crypto.bad_signature",
        "Alice's card",
        "Carol's instruction re-addressed",
        client(alice).apply_instruction,
        readdressed,
    )
    expect(alice.card_balance == net.money(10 * SEK), "Alice's card took Carol's money")
    checked.step(client(carol).apply_instruction, for_carol)


def altered_amount(play: Play) -> None:
    """The relay changes the amount of a payment request on its way to the payer card and of a
    signed payment on its way to the payee (terminal or card). Every change breaks a signature;
    the genuine messages still go through and settle once."""
    net, checked = play.net, play.checked
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    bob = net.add_user("Bob", "bank-b")

    play.tried("at a shop: the PoS app lowers the SEK 30 request, then raises the payment to 90")
    request = shop.module.request_payment(client(alice).identity(), net.money(30 * SEK))
    client(alice).verify_pin(alice.pin)
    cheaper = altered(request, PaymentRequest, amount=net.money(1))
    play.refused(
        "crypto.bad_signature",
        "Alice's card",
        "a request lowered to SEK 0.01",
        client(alice).pay,
        cheaper,
    )
    payment = checked.step(client(alice).pay, request)
    play.refused(
        "crypto.bad_seal",
        "the shop's module",
        "the payment, sealed to the module, with one byte changed",
        shop.pos.receive,
        spoiled_seal(payment),
    )
    dearer = altered(card_copy(alice), OfflinePayment, amount=net.money(90 * SEK))
    play.refused(
        "crypto.bad_signature",
        "the shop's module",
        "the payment in clear (as a card made before sealing hands it over) raised to SEK 90",
        shop.pos.receive,
        dearer,
    )
    checked.step(shop.pos.receive, payment)

    play.tried(
        "person to person: Bob asks SEK 20; the relay lowers the request, raises the payment"
    )
    ask = checked.step(bob.phone.ask, alice.phone.show_identity(), net.money(20 * SEK))
    play.refused(
        "crypto.bad_signature",
        "Alice's card",
        "Bob's request lowered to SEK 2",
        alice.phone.pay,
        alice.pin,
        altered(ask, PaymentRequest, amount=net.money(2 * SEK)),
    )
    paid = checked.step(alice.phone.pay, alice.pin, ask)
    play.refused(
        "crypto.bad_seal",
        "Bob's card",
        "Alice's payment, sealed to Bob's card, with one byte changed",
        bob.phone.accept,
        bob.pin,
        spoiled_seal(paid),
    )
    inflated = altered(card_copy(alice), OfflinePayment, amount=net.money(50 * SEK))
    play.refused(
        "crypto.bad_signature",
        "Bob's card",
        "Alice's payment in clear raised to SEK 50",
        bob.phone.accept,
        bob.pin,
        inflated,
    )
    checked.step(bob.phone.accept, bob.pin, paid)
    checked.sync(alice, shop, bob)


def forged_terminal_request(play: Play) -> None:
    """The PoS app, which holds no key, forges the terminal's payment request for SEK 90: with
    the terminal's certificate and its own key, signed by a broken card claiming the terminal's
    name, or signed by the intermediary's engine (not a payee). The card refuses each; the
    module's own request is paid."""
    net, checked = play.net, play.checked
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    mallory = funded(checked, "Mallory", "bank-b", 1 * SEK)
    genuine = shop.module.request_payment(client(alice).identity(), net.money(10 * SEK))
    dear = net.money(90 * SEK)
    bank_b = net.banks["bank-b"]
    play.tried("the PoS app turns the terminal's SEK 10 request into a forged one for SEK 90")
    forgeries = [
        (
            "crypto.bad_signature",
            "with the terminal's certificate and another key",
            resigned(genuine, PaymentRequest, stolen_chain(shop.module.state.chain), amount=dear),
        ),
        (
            "crypto.bad_signature",
            "signed by Mallory's broken card",
            resigned(genuine, PaymentRequest, broken_card_key(mallory), amount=dear),
        ),
        (
            "crypto.bad_certificate",
            "signed by bank-b's engine",
            resigned(genuine, PaymentRequest, bank_b.credential, sender=bank_b.id, amount=dear),
        ),
    ]
    client(alice).verify_pin(alice.pin)
    for code, how, forged in forgeries:
        play.refused(code, "Alice's card", f"a request {how}", client(alice).pay, forged)
    checked.step(shop.pos.receive, checked.step(client(alice).pay, genuine))
    checked.sync(shop)


def impostor_terminal(play: Play) -> None:
    """Payees whose certificate no intermediary issued (a whole look-alike PKI for a terminal or
    a card, or a terminal certificate signed by the central bank's root directly), and one that
    shows a genuine terminal's certificate without its key. The payer card refuses to pay any
    of them and pays the genuine terminal."""
    net, checked = play.net, play.checked
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
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
    play.tried("impostor payees ask Alice's card for SEK 40")
    impostors = [
        (
            "crypto.bad_certificate",
            "a terminal of a look-alike PKI",
            resigned(
                genuine,
                PaymentRequest,
                rogue("bank-b", fake_terminal, Role.TERMINAL),
                sender=fake_terminal,
            ),
        ),
        (
            "crypto.bad_certificate",
            "a card of a look-alike PKI",
            resigned(
                genuine, PaymentRequest, rogue("bank-b", fake_card, Role.CARD), sender=fake_card
            ),
        ),
        (
            "crypto.bad_certificate",
            "a terminal certified by the root, not an intermediary",
            resigned(genuine, PaymentRequest, root_only, sender=fake_terminal),
        ),
        (
            "crypto.bad_signature",
            "a genuine terminal's certificate without its key",
            resigned(genuine, PaymentRequest, stolen_chain(shop.module.state.chain)),
        ),
    ]
    client(alice).verify_pin(alice.pin)
    for code, who, request in impostors:
        play.refused(code, "Alice's card", f"a request from {who}", client(alice).pay, request)
    expect(alice.card_balance == net.money(100 * SEK), "Alice's card paid an impostor")
    checked.step(shop.pos.receive, checked.step(client(alice).pay, genuine))


def counterfeit_upload(play: Play) -> None:
    """Mallory breaks her own card and uploads, in a session her card's key signs, a payment
    from Alice that she altered from SEK 10 to SEK 90. Alice's signature does not cover it: the
    entry is refused and recorded against Mallory's card, and nothing of it settles; the
    genuine payment settles once, when Alice synchronises."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    mallory = net.add_user("Mallory", "bank-a")
    ask = checked.step(mallory.phone.ask, alice.phone.show_identity(), net.money(10 * SEK))
    payment = checked.step(alice.phone.pay, alice.pin, ask)
    checked.step(mallory.phone.accept, mallory.pin, payment)

    play.tried(
        "Mallory raises Alice's SEK 10 payment to SEK 90 in her card's log and signs "
        "the session with the key read out of her broken card"
    )
    session = payload(begin_signed(mallory), CardSession)
    (entry,) = session.log
    counterfeit = altered(entry.payment.to_bytes(), OfflinePayment, amount=net.money(90 * SEK))
    log = (dataclasses.replace(entry, payment=Signed.from_bytes(counterfeit)),)
    forged = sign(dataclasses.replace(session, log=log), broken_card_key(mallory)).to_bytes()
    before = checked.snapshot()
    checked.step(wire(net).send, "bank-a", "card-session", forged)
    play.detected("bank-a", mallory.card_id, "invalid_entry", "a counterfeit payment in a log")
    expect(checked.snapshot() == before, "the counterfeit payment moved money")
    # An honest card never signs an invalid payment into its session: the card is tampered
    # with, so it is blocked and revoked.
    play.blocked("bank-a", mallory.card_id)
    checked.sync(alice)  # the genuine payment settles once
    play.refused(
        "crypto.revoked",
        "bank-a",
        "a sync of Mallory's blocked card",
        mallory.phone.sync,
        mallory.pin,
    )
