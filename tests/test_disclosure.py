"""Disclosure in a dispute (issue 19, point 2; docs/notary-privacy.md): the evidence stays with
the intermediary that notarised a payment; the central bank gets it only by a request signed
by its notary, addressed to that intermediary, logged, and answered at most once."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import Checked, client_of, serve_party
from offpay.attacks.tools import card_copy
from offpay.bank.books import bank_books
from offpay.central.bank import NOTARY_ID
from offpay.central.disclosure import ask_disclosure, check_disclosure, disclosure_request
from offpay.cli import app as cli
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.service.app import create_app
from offpay.service.client import HttpNetwork
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network, open_central
from offpay.service.remote import RemoteNetwork
from offpay.service.serve import build
from offpay.sim.network import OfflineNetwork
from offpay.store import schema
from offpay.wire.envelope import Signed, payload_of, sign
from offpay.wire.messages import Disclosure, DisclosureRequest, OfflinePayment
from test_attacks import funded

SEK = 100


def settled_payment(net: OfflineNetwork, checked: Checked, minor: int = 10 * SEK) -> bytes:
    """Alice (bank-a) pays a shop of bank-b; the shop synchronises. Returns the payment's id."""
    alice = net.users.get("Alice") or funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.merchants.get("Shop") or net.add_merchant("Shop", "bank-b")
    signed = Signed.from_bytes(checked.charge(shop, alice, minor))
    checked.sync(shop)
    return payload_of(signed, OfflinePayment).tx_id


def log_of(net: OfflineNetwork, bank: str) -> list[tuple[str, bytes, str, bool]]:
    t = schema.disclosures
    with net.banks[bank].db.connect() as conn:
        rows = conn.execute(select(t).order_by(t.c.asked_at)).all()
    return [(r.asked_by, bytes(r.pseudonym), r.reason, bool(r.disclosed)) for r in rows]


def refused(code: str, fn: object, *args: object) -> None:
    with pytest.raises(OffpayError) as exc:
        fn(*args)  # type: ignore[operator]
    assert exc.value.code == code, exc.value


def test_a_disclosure_round_trip_is_checked_and_logged(
    net: OfflineNetwork, checked: Checked
) -> None:
    tx = settled_payment(net, checked)
    a = net.banks["bank-a"]
    name = a.pseudonym(tx)
    reason = "dispute D-17: shop says unpaid"
    disclosed = ask_disclosure(net.central, net.network.send, name, reason)
    assert (disclosed.institution, disclosed.refund) == ("bank-a", False)
    assert disclosed.payment.tx_id == tx and disclosed.payment.amount == net.money(10 * SEK)
    assert disclosed.payment.sender == net.users["Alice"].card_id
    assert log_of(net, "bank-a") == [(NOTARY_ID, name, reason, True)]
    assert log_of(net, "bank-b") == []
    [shown] = bank_books(a)["disclosures"]  # the books show the log
    assert (shown["asked_by"], shown["pseudonym"], shown["reason"]) == (
        NOTARY_ID,
        name.hex(),
        reason,
    )


def test_requests_not_from_the_central_bank_for_another_party_or_replayed_are_refused(
    net: OfflineNetwork, checked: Checked
) -> None:
    tx = settled_payment(net, checked)
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    name = a.pseudonym(tx)
    # Signed by an intermediary, not by the central bank's notary.
    forged = DisclosureRequest(NOTARY_ID, a.id, os.urandom(16), name, "curious")
    data = sign(forged, b.credential).to_bytes()
    refused("crypto.bad_certificate", a.handle, "disclosure-request", data)
    # Signed by the notary, but addressed to bank-b.
    _, request, _ = disclosure_request(net.central, name, "dispute")
    elsewhere = dataclasses.replace(request, receiver=b.id)
    data = sign(elsewhere, net.central.notary).to_bytes()
    refused("wire.wrong_receiver", a.handle, "disclosure-request", data)
    # Genuine, then replayed: answered once, the replay refused and not answered.
    _, request, data = disclosure_request(net.central, name, "dispute D-18")
    answer = a.handle("disclosure-request", data)
    assert check_disclosure(net.central, request, answer).payment.tx_id == tx
    refused("bank.disclosure_replayed", a.handle, "disclosure-request", data)
    # A pseudonym bank-a never recorded: refused, and the question is logged all the same.
    unknown = DisclosureRequest(NOTARY_ID, a.id, os.urandom(16), bytes(16), "fishing")
    data = sign(unknown, net.central.notary).to_bytes()
    refused("bank.disclosure_unknown", a.handle, "disclosure-request", data)
    assert [(who, reason, done) for who, _, reason, done in log_of(net, "bank-a")] == [
        (NOTARY_ID, "dispute D-18", True),
        (NOTARY_ID, "fishing", False),
    ]
    # The central bank asks only about what its notary recorded, and says why.
    refused("central.no_such_payment", disclosure_request, net.central, bytes(16), "why not")
    refused("central.disclosure_reason", disclosure_request, net.central, name, "  ")


def test_an_answer_that_is_not_the_recorded_payment_is_refused(
    net: OfflineNetwork, checked: Checked
) -> None:
    """bank-a answers a request about one payment with another of its payments (or as if it
    were a refund): the commitment does not match, and the central bank refuses it."""
    first = settled_payment(net, checked, 10 * SEK)
    second = settled_payment(net, checked, 20 * SEK)
    a = net.banks["bank-a"]
    _, request, data = disclosure_request(net.central, a.pseudonym(first), "dispute")
    genuine = payload_of(Signed.from_bytes(a.handle("disclosure-request", data)), Disclosure)
    _, other, data = disclosure_request(net.central, a.pseudonym(second), "dispute")
    swapped = payload_of(Signed.from_bytes(a.handle("disclosure-request", data)), Disclosure)
    lie = dataclasses.replace(genuine, payment=swapped.payment)
    refused("central.disclosure_mismatch", check_disclosure, net.central, request,
            sign(lie, a.credential).to_bytes())  # fmt: skip
    as_refund = dataclasses.replace(genuine, refund=True)
    refused("central.disclosure_mismatch", check_disclosure, net.central, request,
            sign(as_refund, a.credential).to_bytes())  # fmt: skip
    # The genuine answer to another request is no answer to this one.
    refused("wire.replay", check_disclosure, net.central, other,
            sign(genuine, a.credential).to_bytes())  # fmt: skip


# ---- over HTTP: the central bank's TLS certificate, and the operator's command ---------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NetworkConfig, bytes]]:
    """A served network where a customer of bank-a paid a shop of bank-b; yields the network
    and the payment's pseudonym at the notary."""
    network = init_network(tmp_path_factory.mktemp("net"), ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        built = {}
        for name in network.urls:
            built[name] = build(network, name, retry_every=-1)
            app = create_app(built[name].service, background=built[name].background)
            stack.enter_context(serve_party(network, name, app))
        remote = RemoteNetwork(network, retries=1)
        stack.callback(remote.close)
        for bank in network.banks:
            remote.issue(bank, 1_000_00)
        ann = remote.add_user("Ann", "bank-a", online=100_00)
        ann.phone.top_up(ann.pin, Money(50_00, "SEK"))
        shop = remote.add_merchant("Shop", "bank-b")
        shop.pos.charge(ann.card.process, ann.pin, Money(7_00, "SEK"))
        signed = Signed.from_bytes(card_copy(ann))  # the relay carried it sealed
        shop.pos.sync()
        tx = payload_of(signed, OfflinePayment).tx_id
        d = schema.debits
        bank_a = built["bank-a"].service.party
        with bank_a.db.connect() as conn:
            name = conn.execute(select(d.c.pseudonym).where(d.c.tx_id == tx)).scalar_one()
        yield network, bytes(name)


def post_disclosure(network: NetworkConfig, party: str | None, data: bytes) -> object:
    with client_of(network, party) as http:
        return http.post(
            f"{network.urls['bank-a']}/v1/messages/disclosure-request",
            content=data,
            headers={"Content-Type": "application/cbor", "Idempotency-Key": os.urandom(8).hex()},
        )


def test_over_http_only_the_central_bank_s_certificate_gets_in(
    served: tuple[NetworkConfig, bytes],
) -> None:
    network, name = served
    central = open_central(network)
    try:
        _, request, data = disclosure_request(central, name, "dispute over HTTP")
        for party, code in (
            ("bank-b", "auth.wrong_client_certificate"),  # another party's certificate
            (None, "auth.client_certificate_required"),  # a phone's connection: none
        ):
            answer = post_disclosure(network, party, data)
            assert answer.status_code == 401 and answer.json()["code"] == code  # type: ignore[attr-defined]
        banks = {n: u for n, u in network.urls.items() if n != CENTRAL}
        transport = HttpNetwork(banks, client=client_of(network, CENTRAL))
        try:
            answer = transport.send("bank-a", "disclosure-request", data)
            assert check_disclosure(central, request, answer).payment.amount.minor == 7_00
            replay = post_disclosure(network, CENTRAL, data)  # same bytes, a new key
            assert replay.json()["code"] == "bank.disclosure_replayed"  # type: ignore[attr-defined]
        finally:
            transport.close()
    finally:
        central.db.dispose()


def test_the_operator_s_command_discloses_and_refuses_bad_input(
    served: tuple[NetworkConfig, bytes],
) -> None:
    network, name = served
    runner = CliRunner()
    base = ["network", "disclose", "--data", str(network.folder)]
    done = runner.invoke(cli, [*base, "--payment", name.hex(), "--reason", "dispute D-20"])
    assert done.exit_code == 0, done.output
    shown = json.loads(done.output)
    assert (shown["disclosed_by"], shown["amount"], shown["refund"]) == ("bank-a", 7_00, False)
    for payment, reason, words in (
        ("xyz", "dispute", "32 hex digits"),
        ("00" * 16, "dispute", "recorded nothing"),
        (name.hex(), " ", "say why"),
    ):
        bad = runner.invoke(cli, [*base, "--payment", payment, "--reason", reason])
        assert bad.exit_code == 2 and words in bad.output, bad.output
        assert "Traceback" not in bad.output
