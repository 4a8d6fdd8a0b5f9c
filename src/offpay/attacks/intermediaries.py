"""Attacks between intermediaries, and by one: forged settlement requests, and an
intermediary that loads a card beyond what its customer holds."""

from __future__ import annotations

import os

from sqlalchemy import update

from offpay.attacks.checked import DefenceFailed, expect
from offpay.attacks.play import Play
from offpay.attacks.tools import (
    SEK,
    altered,
    begin_signed,
    broken_card_key,
    client,
    funded,
    payload,
    payment_to_shop,
    resigned,
    rogue,
    session_and_answer,
    stolen_chain,
)
from offpay.crypto.pki import Role
from offpay.sim.network import ConservationError
from offpay.store import schema
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    CardInstruction,
    CardSession,
    CreditRequest,
    DebitRequest,
    OfflinePayment,
    SettlementResult,
)


def forged_interbank_request(play: Play) -> None:
    """Debit requests to the payer's intermediary signed by a broken card, by a look-alike
    engine of another root, or with bank-b's engine certificate and another key; credit
    requests to the payee's intermediary from a look-alike bank-a, or from bank-a itself with a
    notary receipt it signed, with the receipt of another payment, or with none. All are
    refused and move nothing; the genuine settlement pays the shop once."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    carol = funded(checked, "Carol", "bank-a", 100 * SEK)
    mallory = funded(checked, "Mallory", "bank-b", 1 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    a, b = net.banks["bank-a"], net.banks["bank-b"]

    credits: list[bytes] = []

    def keep_credits(_to: str, kind: str, data: bytes) -> bytes:
        if kind == "credit-request":
            credits.append(data)
        return data

    play.tried("the network keeps a genuine credit request (and its notary receipt)")
    net.network.taps.append(keep_credits)
    try:
        checked.charge(shop, carol, 1 * SEK)
        checked.sync(carol)  # bank-a debits, notarises and credits bank-b: a genuine receipt
    finally:
        net.network.taps.remove(keep_credits)
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
    play.tried("forged debit requests for Alice's SEK 30 payment reach bank-a")
    forged_debits = [
        (
            "crypto.bad_certificate",
            "signed by Mallory's broken card",
            resigned(debit, DebitRequest, broken_card_key(mallory), sender=mallory.card_id),
        ),
        (
            "crypto.bad_certificate",
            "from a look-alike bank-b",
            resigned(debit, DebitRequest, rogue("bank-b", b.id, Role.ENGINE)),
        ),
        (
            "crypto.bad_signature",
            "with bank-b's certificate and another key",
            resigned(debit, DebitRequest, stolen_chain(b.credential.chain)),
        ),
    ]
    for code, how, request in forged_debits:
        play.refused(code, "bank-a", f"a debit request {how}", a.handle, "debit-request", request)
    play.tried("forged credit requests for the same payment reach bank-b")
    forged_credits = [
        (
            "crypto.bad_certificate",
            "from a look-alike bank-a",
            resigned(credit, CreditRequest, rogue("bank-a", a.id, Role.ENGINE)),
        ),
        (
            "crypto.bad_certificate",
            "with a receipt bank-a signed itself",
            resigned(credit, CreditRequest, a.credential, notary_receipt=own_receipt),
        ),
        ("bank.no_receipt", "with the notary's receipt of another payment", credit),
        (
            "wire.malformed",
            "with no receipt",
            resigned(credit, CreditRequest, a.credential, notary_receipt=b""),
        ),
    ]
    for code, how, request in forged_credits:
        play.refused(code, "bank-b", f"a credit request {how}", b.handle, "credit-request", request)
    expect(shop.wallet == net.money(1 * SEK), "a forged request paid the shop")
    checked.sync(shop, alice)


def intermediary_beyond_the_shadow_wallet(play: Play) -> None:
    """Report §3.4: a card's balance must be backed by its shadow wallet. The engine answers a
    broken card that claims SEK 2 000 with what the shadow wallet holds. An intermediary that
    signs a SEK 2 000 balance for a card whose shadow wallet holds SEK 100 creates no money:
    the card's payment of SEK 1 500 waits in the queue, recorded against the card, and the shop
    is not paid. If the intermediary credits the shadow wallet to cover it, the central bank's
    audit names the intermediary (and the play puts the ledger back)."""
    net, checked = play.net, play.checked
    alice = funded(checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    bank = alice.bank

    play.tried("Alice's broken card claims SEK 2 000 in a session signed with its own key")
    claimed = altered(begin_signed(alice), CardSession, balance=net.money(2_000 * SEK))
    claim = resigned(claimed, CardSession, broken_card_key(alice))
    instruction = checked.step(net.network.send, "bank-a", "card-session", claim)
    expect(
        payload(instruction, CardInstruction).balance == net.money(100 * SEK),
        "bank-a signed the balance the card claimed",
    )
    checked.step(client(alice).apply_instruction, instruction)

    play.tried("bank-a signs a SEK 2 000 balance for a SEK 100 shadow wallet; she spends 1 500")
    _, honest = checked.step(session_and_answer, net.network, alice)
    inflated = resigned(honest, CardInstruction, bank.credential, balance=net.money(2_000 * SEK))
    checked.step(client(alice).apply_instruction, inflated)  # the card cannot know
    checked.charge(shop, alice, 1_500 * SEK)
    checked.sync(shop)
    play.detected("bank-a", alice.card_id, "shortfall", "a payment beyond the shadow wallet")
    expect(shop.wallet == net.money(0), "the shop was paid money nobody held")

    play.tried("bank-a makes up SEK 1 900 in Alice's shadow wallet to cover it")
    shadow = schema.accounts
    made_up = 1_900 * SEK
    with bank.db.begin() as conn:
        conn.execute(
            update(shadow)
            .where(shadow.c.id == f"{alice.customer_id}/shadow")
            .values(balance=shadow.c.balance + made_up)
        )
    try:
        net.check_conservation()
    except ConservationError:
        mismatches = net.holdings_mismatches()
        expect(
            len(mismatches) == 1 and mismatches[0].startswith("bank-a:"),
            f"the audit named {mismatches}, not bank-a alone",
        )
        play.audit_named("bank-a", "audit.conservation", "money made up in bank-a's ledger")
    else:
        raise DefenceFailed("the central bank's audit missed money bank-a made up")
    finally:
        with bank.db.begin() as conn:
            conn.execute(
                update(shadow)
                .where(shadow.c.id == f"{alice.customer_id}/shadow")
                .values(balance=shadow.c.balance - made_up)
            )
    checked.conserved()
