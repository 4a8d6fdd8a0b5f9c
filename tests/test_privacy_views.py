"""Who learns what (issue 19, points 1 and 3): every message each party receives across the
flows of both schemes is recorded at the transport edge and held to docs/privacy.md's table
(``offpay.privacy.LEARNS``)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

import test_flows as flows
import test_tokens as token_flows
from conftest import PIN, Checked
from offpay.attacks.checked import Checked as Referee
from offpay.crypto.keys import Signer
from offpay.crypto.pki import Authority, Role, identity_of, load_certificate
from offpay.device.card import key_fingerprint
from offpay.money import Money
from offpay.privacy import (
    AUDITOR_READS,
    AUDITOR_TABLES,
    DEVICE,
    IN_A_DISPUTE,
    LEARNS,
    NOTARY_TARGET,
    Party,
    not_granted,
)
from offpay.sim import network as sim_network
from offpay.sim.recording import PartyView, RecordedNetwork, Recording
from offpay.wire.codec import encode
from offpay.wire.envelope import Signed
from offpay.wire.exposure import Kind, Seen, exposed
from offpay.wire.messages import CardSession, Liquidity, Operation

SEK = 100
NOW = dt.datetime.now(dt.UTC)
ISSUED = 1_000_000 * SEK

Flow = Callable[..., Any]

# The flow tests, each replayed on a recorded network: top-up and defund, terminal payments
# and resubmission, person to person within and across intermediaries, shortfalls, lost
# instructions, settlement by debit and credit requests; token withdraw, deposit, renewal.
FLOWS: list[tuple[Flow, dict[str, str]]] = [
    (flows.test_top_up_moves_money_online_to_shadow_to_card, {}),
    (flows.test_defund_after_an_offline_payment_settles_it_first, {}),
    (flows.test_pay_at_a_terminal_then_sync, {"shop_bank": "bank-a"}),
    (flows.test_pay_at_a_terminal_then_sync, {"shop_bank": "bank-b"}),
    (flows.test_resubmit_a_payment_the_terminal_missed, {}),
    (flows.test_person_to_person_then_both_sync, {"bob_bank": "bank-b", "first": "payee"}),
    (flows.test_across_banks_settles_by_debit_request, {"first": "payer"}),
    (flows.test_terminal_and_cards_of_two_banks, {}),
    (flows.test_alice_bob_charlie_shortfall_example, {}),
    (flows.test_lost_defund_confirmation_completes_once_at_next_sync, {}),
    (token_flows.test_withdraw_mints_a_token_and_debits_the_online_wallet, {}),
    (token_flows.test_deposit_redeems_tokens_and_credits_the_online_wallet, {}),
    (token_flows.test_offline_transfer_between_banks_needs_no_network, {}),
    (token_flows.test_the_next_online_moment_renews_a_long_history, {"moment": "deposit"}),
]


def recorded(**options: Any) -> RecordedNetwork:
    net = RecordedNetwork(**options)
    for name in net.banks:
        net.issue(name, ISSUED)
    return net


def liquidity_and_tokens(net: RecordedNetwork, checked: Checked) -> None:
    """Flows the replayed tests do not cover with a recorder on every hop: funding receipts,
    token transfers relayed phone to phone, a split, a token deposited at another bank."""
    alice = net.add_user("Alice Andersson", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob Bergström", "bank-b")
    carl = net.add_user("Carl Carlsson", "bank-a")
    shop = net.add_merchant("Corner Shop Ltd", "bank-b")
    checked.top_up(alice, 300 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, carl, 50 * SEK)  # carries Alice's payment as its funding (receipts)
    checked.charge(shop, carl, 20 * SEK)
    checked.sync(shop)
    checked.sync(carl, bob, alice)
    checked.step(alice.phone.defund, PIN, net.money(10 * SEK))

    ann = net.add_token_user("Ann-Marie Lind", "bank-a", online=1000 * SEK)
    ben = net.add_token_user("Benjamin Holm", "bank-b")
    checked.step(ann.app.withdraw, net.money(300 * SEK))
    checked.step(net.transfer_tokens, ann, ben, 120 * SEK)  # a split, then a transfer
    checked.step(net.transfer_tokens, ben, ann, 20 * SEK)
    checked.step(ben.app.deposit, net.money(100 * SEK))
    checked.step(ann.app.deposit, net.money(200 * SEK))


def pool_loan(net: RecordedNetwork, checked: Checked) -> None:
    """Liquidity policy ``pool``: the payee syncs before the payer, the gap is lent by the
    central bank's pool and repaid when the payer syncs. The pool is money the central bank
    issued on top of the fixtures', so the plain referee holds the count."""
    checked = Referee(net)  # type: ignore[assignment]
    alice = net.add_user("Alice Andersson", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob Bergström", "bank-b")
    carl = net.add_user("Carl Carlsson", "bank-a")
    checked.top_up(alice, 100 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, carl, 50 * SEK)
    checked.sync(carl, bob, alice)
    assert net.central.pool_status().outstanding == net.money(0)


def controls(net: RecordedNetwork, checked: Checked) -> None:
    """Issue 18's and 19's controls: an intermediary publishes its liabilities (asking the
    central bank for a statement of its holdings), a phone checks its inclusion proof, and the
    central bank asks for a payment's evidence in a dispute."""
    from offpay.central.disclosure import ask_disclosure
    from offpay.liabilities.publish import publish

    alice = net.add_user("Alice Andersson", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob Bergström", "bank-b")
    checked.top_up(alice, 100 * SEK)
    checked.p2p(alice, bob, 30 * SEK)
    checked.sync(bob, alice)
    publish(net.banks["bank-a"])
    alice.phone.check_liabilities(PIN, net.central.trust, alice.customer_id)
    [pseudonym] = [bytes(r.pseudonym) for r in net.central.db.connect().execute(notary_rows())]
    # the central bank's own handle on the network, recorded apart: what it receives in a
    # dispute is held to the dispute's row (IN_A_DISPUTE), not to its everyday one
    dispute = Recording()
    central = PartyView(net.network, Party.CENTRAL_BANK, dispute, relays=False)
    ask_disclosure(net.central, central.send, pseudonym, "dispute D-1")
    DISPUTES.append(dispute)


DISPUTES: list[Recording] = []  # the central bank's view of each dispute played


def notary_rows() -> Any:
    from sqlalchemy import select

    from offpay.store import schema

    return select(schema.notary.c.pseudonym)


@pytest.fixture(scope="module")
def views() -> Recording:
    """Every flow on its own recorded network; the views merged per party."""
    merged = Recording()
    runs: list[tuple[Flow, dict[str, Any], dict[str, Any]]] = [
        (flow, kwargs, {}) for flow, kwargs in FLOWS
    ]
    runs.append((liquidity_and_tokens, {}, {"liquidity": Liquidity.RECEIPTS}))
    runs.append((pool_loan, {}, {"liquidity": Liquidity.POOL, "pool": 1000 * SEK}))
    runs.append((controls, {}, {}))
    for flow, kwargs, options in runs:
        net = recorded(**options)
        flow(net=net, checked=Checked(net), **kwargs)
        net.check_conservation()
        for party, seen in net.recording.seen.items():
            merged.seen[party] |= seen
            merged.messages[party] += net.recording.messages[party]
    return merged


def names(seen: set[Seen]) -> set[str]:
    return {str(s) for s in seen}


def test_the_recorder_sees_every_hop_of_both_schemes(views: Recording):
    """The recording is not blind: each party's view holds the messages that party must get,
    so a field that should not be there would be seen too."""
    expect = {
        Party.CENTRAL_BANK: {
            "reserve-transfer.amount",
            "pool-request.loan_id",
            "mint-request.address",
            "redeem-request.token",
            "token.owner",
        },
        Party.INTERMEDIARY: {
            "card-session.log",
            "terminal-upload.payments",
            "debit-request.payment",
            "credit-request.notary_receipt",
            "offline-payment.funding",
            "withdraw-request.address",
            "deposit-request.token",
            "settlement-result.notary_receipt",
        },
        Party.PHONE_APP: {"card-identity.chain", "card-instruction.balance", "token-sealed.sealed"},
        Party.POS_APP: {"card-identity.card", "terminal-instruction.clear_through_seq"},
        Party.RELAY: {"sealed-payment.sealed", "token-sealed.sealed", "enciphered-pin.sealed"},
    }
    assert any(
        s.tag == "notarise-request" or s.tag == "notarise-item"
        for s in views.seen[Party.CENTRAL_BANK]
    )
    for party, wanted in expect.items():
        assert wanted <= names(views.seen[party]), party
        assert views.messages[party] > 0


@pytest.mark.parametrize(
    "party", [Party.INTERMEDIARY, Party.PHONE_APP, Party.POS_APP, Party.RELAY], ids=str
)
def test_each_party_receives_only_what_the_table_grants(views: Recording, party: Party):
    assert not_granted(party, views.seen[party]) == []


def test_the_central_bank_receives_only_what_the_table_grants(views: Recording):
    assert not_granted(Party.CENTRAL_BANK, views.seen[Party.CENTRAL_BANK]) == []


def test_in_a_dispute_the_central_bank_receives_one_payments_evidence(views: Recording):
    """Issue 19, point 2: the evidence reaches the central bank only in a dispute, by its
    signed and logged request; then it sees that payment's devices (IN_A_DISPUTE)."""
    assert DISPUTES
    seen = {str(s) for d in DISPUTES for s in d.seen[Party.CENTRAL_BANK]}
    assert {"disclosure.payment", f"offline-payment.sender={DEVICE}"} <= seen  # not blind
    assert seen - (LEARNS[Party.CENTRAL_BANK] | IN_A_DISPUTE) == set()
    assert not (IN_A_DISPUTE - {"disclosure.nonce"}) <= LEARNS[Party.CENTRAL_BANK]


def test_the_central_bank_sees_no_card_terminal_or_person_in_the_balance_scheme(
    views: Recording,
):
    """Apart from a device it is asked to revoke and the token scheme's endorsements (every
    token names its owners' elements), nothing the central bank receives names a device."""
    token_tags = {"endorsement", "token", "token-body", "token-address"}
    named = {
        s
        for s in views.seen[Party.CENTRAL_BANK]
        if s.kind is not Kind.PLAIN and s.kind is not Kind.INSTITUTION_CERTIFICATE
    }
    assert {s for s in named if s.tag not in token_tags and s.tag != "revoke-request"} == set()
    tags = {s.tag for s in views.seen[Party.CENTRAL_BANK]}
    assert not tags & {"offline-payment", "payment-request", "card-session", "log-entry"}


def test_the_central_bank_row_keeps_what_the_notary_needs_and_no_payment_id():
    """The target row: amounts, institutions, pseudonym and commitment; no payment id derived
    from a device, no evidence."""
    row = LEARNS[Party.CENTRAL_BANK]
    assert {"notarise-item.pseudonym", "notarise-item.commitment", "notarise-item.amount"} <= row
    assert row >= NOTARY_TARGET
    for forbidden in ("tx_id", "evidence"):
        assert not any(n.startswith("notarise") and f".{forbidden}" in n for n in row)
    assert not any(n.startswith(("offline-payment.", "card-session.")) for n in row)


@pytest.mark.parametrize("party", list(Party), ids=str)
def test_no_party_receives_a_customer_name_or_id(views: Recording, party: Party):
    """Point 3: devices are pseudonyms; no message, certificate or token names the person
    (the recorder looks for every customer's name and id in every value). The one exception:
    a phone's own customer's id in the inclusion proof it asked for with its card (issue 18),
    over TLS to its own intermediary; no other party sees it."""
    own = {"inclusion-proof.customer_id=customer"} if party is Party.PHONE_APP else set()
    assert {str(s) for s in views.seen[party] if s.kind is Kind.CUSTOMER} - own == set()


def test_the_relay_learns_nothing_only_an_online_party_needs(views: Recording):
    """An eavesdropper on an offline hop sees no instruction to a terminal, no upload and no
    minting answer (those travel over TLS); the table says so and the recording agrees."""
    relay = names(views.seen[Party.RELAY])
    for online in ("terminal-upload.", "terminal-instruction.", "mint-result.", "vault-address."):
        assert not any(n.startswith(online) for n in relay)
        assert not any(n.startswith(online) for n in LEARNS[Party.RELAY])


def test_a_field_outside_a_row_is_reported():
    """The check can fail: a PoS app handed a card's online session, a phone handed a name."""
    session = CardSession(
        sender="card:bank-a:0123456789ab",
        receiver="bank-a/engine",
        nonce=b"n" * 16,
        seq=1,
        balance=Money(5 * SEK, "SEK"),
        instruction_no=0,
        policy_version=1,
        revocation_version=0,
        session_no=1,
        operation=Operation.SYNC,
        amount=Money(0, "SEK"),
        log=(),
        last_instruction=None,
    )
    seen = exposed(encode(session), people={"bank-a:Alice Andersson"})
    assert "card-session.log" in not_granted(Party.POS_APP, seen)
    assert "card-session.sender=device-id" in not_granted(Party.CENTRAL_BANK, seen)
    assert not_granted(Party.INTERMEDIARY, seen) == []
    named = exposed(encode(session), people={"0123456789ab"})
    assert "card-session.sender=customer" in not_granted(Party.INTERMEDIARY, named)


def test_exposure_reads_certificates_and_names_inside_them():
    root = Authority.root(NOW)
    ca = root.intermediary("bank-a", NOW)
    chain = ca.issue("card:bank-a:0123456789ab", Role.CARD, Signer.generate().public_key, NOW)
    found = exposed(encode(Signed(payload=b"", signature=b"", chain=chain)), {"0123456789ab"})
    assert Seen("signed", "chain", Kind.DEVICE_CERTIFICATE) in found
    assert Seen("signed", "chain", Kind.INSTITUTION_CERTIFICATE) in found
    assert Seen("signed", "chain", Kind.CUSTOMER) in found
    assert exposed(b"\x00not a message") == frozenset()
    assert exposed(b"\xa1\x61t\x63new") == frozenset()  # a map, but no known message


PSEUDONYM = re.compile(r"(card|terminal|element):(bank-[ab]):([0-9a-f]{12})")


def test_every_device_is_certified_under_a_pseudonym_of_its_key():
    """Point 3: a card's, terminal's and element's certificate names the role, the issuing
    institution and the key's fingerprint, nothing else: no customer, no merchant, no place."""
    net = recorded(liquidity=Liquidity.RECEIPTS)
    liquidity_and_tokens(net, Checked(net))
    chains = [u.card.state.chain for u in net.users.values()]
    chains += [m.module.state.chain for m in net.merchants.values()]
    chains += [t.element.credential.chain for t in net.token_users.values()]
    assert len(chains) == 6
    for chain in chains:
        cert = load_certificate(chain[0])
        ident = identity_of(cert)
        match = PSEUDONYM.fullmatch(ident.id)
        assert match is not None, ident.id
        assert (match[1], match[2]) == (ident.role.value, ident.institution)
        assert match[3] == key_fingerprint(ident.public_key)[:12]
        assert len(cert.subject) == 3  # common name, role, institution
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        for person in net.recording.people:
            assert person not in cert.subject.rfc4514_string()


def test_the_auditor_reads_only_the_tables_the_table_names(tmp_path: Path) -> None:
    """`offpay audit` (issue 18) reads each party's books read-only: every table it reads is
    one docs/privacy.md names (``AUDITOR_TABLES``), and never the customers' table."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from tests.test_audit_auditor import build

    from offpay.liabilities.publish import publish

    audited = build(lambda name: f"sqlite:///{tmp_path}/{name}.db", tmp_path)
    publish(audited.net.banks["bank-a"])
    read: set[str] = set()

    def grab(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        # The listener hears every engine of the process: count only this test's databases,
        # not a background thread an earlier test left running (a service's CRL writer).
        if str(tmp_path) in str(conn.engine.url):
            read.update(re.findall(r'(?:FROM|JOIN)\s+"?(\w+)"?', statement))

    event.listen(Engine, "before_cursor_execute", grab)
    try:
        assert audited.run().findings == []
    finally:
        event.remove(Engine, "before_cursor_execute", grab)
    assert {"debits", "credits", "notary", "seen_requests"} <= read  # not blind
    assert read <= AUDITOR_TABLES, read - AUDITOR_TABLES
    assert "customers" not in read


def test_the_conservation_audit_reads_aggregates_per_institution_only(
    monkeypatch: pytest.MonkeyPatch,
):
    """The network's conservation audit (`offpay books`) gathers totals per institution, with no
    account, device or person in it."""
    captured: list[sim_network.Books] = []
    original = sim_network.audit_books

    def capture(books: sim_network.Books, zero: Any) -> Any:
        captured.append(books)
        return original(books, zero)

    monkeypatch.setattr(sim_network, "audit_books", capture)
    net = recorded(liquidity=Liquidity.RECEIPTS)
    liquidity_and_tokens(net, Checked(net))
    assert captured
    people = net.recording.people
    for books in captured:
        assert {f for f in vars(books)} == AUDITOR_READS
        words = _strings(books.positions) | set(books.flows) | set(books.totals) | set(books.moves)
        assert words <= set(net.banks) | {"SEK"}, words - set(net.banks)
        assert not words & people


def _strings(values: list[Any]) -> set[str]:
    return {v for value in values for v in vars(value).values() if isinstance(v, str)}
