"""The parties as HTTP services (issue 5): every flow over the wire, idempotent retries,
authentication at the door, refusals as {code, message}.

The services run in threads of the test process (uvicorn on loopback ports, file SQLite), so
every request takes the real HTTP path; the process-level tests (race, crash) live in
``test_services_race.py`` and ``test_services_crash.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from rich.console import Console
from sqlalchemy import text

from conftest import client_of, serve_party
from offpay.bank.engine import engine_id
from offpay.central.bank import NOTARY_ID, utc_now
from offpay.crypto.pki import Authority, Credential, Role
from offpay.device.reader import CardClient
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.service.app import BANK_KINDS, CENTRAL_KINDS, create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.keystore import load_credential
from offpay.service.remote import RemoteNetwork, RemoteUser
from offpay.service.serve import Built, build
from offpay.service.tls import client_context
from offpay.sim.demo import Demo
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    BatchResult,
    CardConfirmation,
    NotariseBatch,
    NotariseItem,
    Operation,
    ReserveTransfer,
    SettlementStatus,
)

CBOR = "application/cbor"


@dataclass
class Served:
    network: NetworkConfig
    remote: RemoteNetwork
    built: dict[str, Built]
    http: httpx.Client

    def url(self, party: str, kind: str) -> str:
        return f"{self.network.urls[party]}/v1/messages/{kind}"

    def post(
        self, party: str, kind: str, body: bytes, key: str | None, media: str = CBOR
    ) -> httpx.Response:
        headers = {"Content-Type": media}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.http.post(self.url(party, kind), content=body, headers=headers)

    def books(self) -> tuple[object, ...]:
        """Every balance the network records, at the central bank and at every intermediary."""
        r = self.remote
        return (r.central.ledger(), *(b.ledger() for b in r.banks.values()))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    network = init_network(tmp_path_factory.mktemp("net"), ("bank-a", "bank-b", "bank-c"))
    with contextlib.ExitStack() as stack:
        built = {}
        for name in network.urls:
            built[name] = build(network, name, retry_every=-1)
            app = create_app(built[name].service, background=built[name].background)
            stack.enter_context(serve_party(network, name, app))
        remote = RemoteNetwork(network, retries=1)
        stack.callback(remote.close)
        # A client with a party's certificate (the central bank serves no other): the central
        # bank's own, as a test revokes bank-c, whose connections the TLS layer then refuses.
        http = stack.enter_context(client_of(network, CENTRAL))
        for bank in network.banks:
            remote.issue(bank, 1_000_000_00)
        yield Served(network, remote, built, http)


def problem(response: httpx.Response, status: int, code: str) -> str:
    """The refusal's message, after checking its status, code and RFC 9457 form."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "code", "message"}, body
    assert body["code"] == code and body["status"] == status, body
    assert body["type"] == "about:blank" and body["title"] == HTTPStatus(status).phrase, body
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    assert body["message"] == body["detail"]
    return str(body["detail"])


def session_bytes(user: RemoteUser, operation: Operation, minor: int) -> bytes:
    client = CardClient(user.card.process)
    client.verify_pin(user.pin)
    return client.begin_online(
        engine_id(user.bank.name), operation, Money(minor, user.bank.currency)
    )


def in_clear(served: Served, bank: str, data: bytes) -> bytes:
    """What a device sealed to ``bank``, opened as the bank's service opens it (issue 19)."""
    return served.built[bank].service.party.intake.open(data)  # type: ignore[attr-defined,no-any-return]


def finish(served: Served, user: RemoteUser, instruction: bytes) -> None:
    confirmation = CardClient(user.card.process).apply_instruction(instruction)
    served.remote.transport.send(user.bank.name, "card-confirmation", confirmation)


# -- the services and their description ---------------------------------------------------------


def test_openapi_lists_every_kind_with_its_idempotency_key(served: Served) -> None:
    for party, kinds in ((CENTRAL, CENTRAL_KINDS), ("bank-a", BANK_KINDS)):
        spec = served.http.get(f"{served.network.urls[party]}/openapi.json").json()
        for kind in kinds:
            operation = spec["paths"][f"/v1/messages/{kind.name}"]["post"]
            assert CBOR in operation["requestBody"]["content"]
            required = {p["name"] for p in operation.get("parameters", ()) if p["required"]}
            assert ("Idempotency-Key" in required) == kind.mutating, kind
            assert {"400", "401", "403", "422"} <= set(operation["responses"])


def test_every_kind_a_party_handles_has_its_route(served: Served) -> None:
    """The routes follow the parties' own handler tables: a request kind added to the engine
    or the central bank and forgotten here would reach no service."""
    for party, built in served.built.items():
        handled = set(built.service.party.handlers())
        spec = served.http.get(f"{served.network.urls[party]}/openapi.json").json()
        routed = {p.rsplit("/", 1)[1] for p in spec["paths"] if p.startswith("/v1/messages/")}
        assert routed == handled, party


def test_the_demo_plays_against_the_services(served: Served) -> None:
    """Every flow of report §3.4–3.7: top-up, limits, shop payment, resubmission, payment
    across intermediaries, terminal and card syncs, defund, the liquidity example — with the
    phones and the PoS app reaching their intermediaries over HTTP and the conservation audit
    read from every service's books after each step."""
    remote = RemoteNetwork(served.network, retries=1)
    out = io.StringIO()
    try:
        ok = Demo(Console(file=out, width=120), Path(), served.network.algorithm, net=remote).run()
    finally:
        remote.close()
    text = out.getvalue()
    assert ok, text[-3000:]
    assert "[limit.card_max_balance]" in text  # the refusal the demo shows, carried over HTTP
    assert "every card equals its shadow wallet" in text


# -- idempotent retries -------------------------------------------------------------------------


def test_a_retry_gets_the_first_answer_byte_for_byte_and_moves_nothing(served: Served) -> None:
    remote = served.remote
    user = remote.add_user("Ida", "bank-a", online=1_000_00)
    session = session_bytes(user, Operation.TOP_UP, 200_00)
    key = os.urandom(8).hex()

    first = served.post("bank-a", "card-session", session, key)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    books = served.books()
    again = served.post("bank-a", "card-session", session, key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    # The same bytes under another key: the engine remembers the session's nonce.
    other_key = served.post("bank-a", "card-session", session, os.urandom(8).hex())
    assert other_key.content == first.content
    assert served.books() == books
    assert user.shadow == remote.money(200_00) and user.online == remote.money(800_00)

    # The key belongs to that request: other bytes under it are refused, and change nothing.
    finish(served, user, first.content)
    books = served.books()
    sync = session_bytes(user, Operation.SYNC, 0)
    problem(served.post("bank-a", "card-session", sync, key), 422, "http.idempotency_key_reused")
    assert served.books() == books
    finish(served, user, served.post("bank-a", "card-session", sync, "fresh-" + key).content)
    assert user.card_balance == user.shadow == remote.money(200_00)


def test_a_refusal_is_the_first_answer_too(served: Served) -> None:
    """A top-up refused for want of funds stays refused under its key, even once the funds
    are there: a retry never turns into a different request."""
    remote = served.remote
    user = remote.add_user("Jon", "bank-a", online=100_00)
    session = session_bytes(user, Operation.TOP_UP, 300_00)
    first = served.post("bank-a", "card-session", session, "jon-1")
    problem(first, 422, "funds.insufficient")
    user.bank.fund(user.customer_id, remote.money(500_00))
    books = served.books()
    again = served.post("bank-a", "card-session", session, "jon-1")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert served.books() == books


def test_back_office_changes_happen_once_per_key(served: Served) -> None:
    bank = served.remote.banks["bank-b"]
    customer = bank.open_customer("Kim")
    for _ in range(3):
        bank.fund(customer, served.remote.money(70_00), reference="kim-funding-1")
    assert bank.balance(f"{customer}/online") == served.remote.money(70_00)
    with pytest.raises(OffpayError) as refused:
        bank.admin.post(
            "/v1/admin/fund", {"customer_id": customer, "amount": 1}, key="kim-funding-1"
        )
    assert refused.value.code == "http.idempotency_key_reused"


def test_every_mutating_request_needs_a_key(served: Served) -> None:
    user = served.remote.add_user("Liv", "bank-b")
    session = session_bytes(user, Operation.SYNC, 0)
    books = served.books()
    problem(
        served.post("bank-b", "card-session", session, None), 400, "http.idempotency_key_missing"
    )
    problem(
        served.post("bank-b", "card-session", session, "not a key!"), 400, "http.invalid_request"
    )
    assert served.books() == books
    response = served.http.post(
        f"{served.network.urls['bank-b']}/v1/admin/fund",
        json={"customer_id": user.customer_id, "amount": 5},
        headers={"Authorization": f"Bearer {served.network.admin_token('bank-b')}"},
    )
    problem(response, 400, "http.idempotency_key_missing")
    assert served.books() == books


# -- who may speak --------------------------------------------------------------------------------


def _reserve_transfer(credential: Credential, minor: int) -> bytes:
    request = ReserveTransfer(
        credential.identity.id, NOTARY_ID, os.urandom(16), Money(minor, "SEK")
    )
    return sign(request, credential).to_bytes()


def test_a_party_the_root_never_certified_is_refused(served: Served) -> None:
    now = utc_now()
    stranger = Authority.root(now).intermediary("bank-a", now)
    engine = stranger.credential_for("bank-a/engine", Role.ENGINE, now, served.network.algorithm)
    books = served.books()
    message = problem(
        served.post(CENTRAL, "reserve-transfer", _reserve_transfer(engine, 1_000_00), "x1"),
        401,
        "crypto.bad_certificate",
    )
    assert "trusted authority" in message
    assert served.books() == books


def test_a_revoked_party_is_refused(served: Served) -> None:
    """A second engine of bank-c is admitted, then revoked by the central bank: its next
    request is refused at the door and nothing moves, even on a connection the TLS layer let
    through. (Revoking bank-c's own engine, ``bank-c/engine``, would revoke the party, whose
    connections TLS then refuses: tests/test_tls.py.)"""
    now = utc_now()
    ca = Authority(load_credential(served.network.folder / "bank-c", "ca"))
    engine = ca.credential_for("bank-c/engine-2", Role.ENGINE, now, served.network.algorithm)
    accepted = served.post(CENTRAL, "reserve-transfer", _reserve_transfer(engine, 10_00), "c1")
    assert accepted.status_code == 200
    served.remote.central.revoke("bank-c/engine-2", "admitted by mistake")
    books = served.books()
    refused = served.post(CENTRAL, "reserve-transfer", _reserve_transfer(engine, 10_00), "c2")
    problem(refused, 403, "crypto.revoked")
    assert served.books() == books


def test_a_message_for_another_party_is_refused(served: Served) -> None:
    user = served.remote.add_user("Mia", "bank-a")
    session = session_bytes(user, Operation.SYNC, 0)
    books = served.books()
    # sealed to bank-a: bank-b cannot open it; in clear, bank-b did not issue the card
    problem(served.post("bank-b", "card-session", session, "m1"), 400, "wire.wrong_receiver")
    opened = in_clear(served, "bank-a", session)
    problem(served.post("bank-b", "card-session", opened, "m2"), 401, "crypto.bad_certificate")
    assert served.books() == books


# -- bad input, by hand (the generated cases are in test_services_openapi.py) --------------------


def test_malformed_requests_get_a_code_and_a_message(served: Served) -> None:
    problem(served.post("bank-a", "card-session", b"\xa1junk", "b1"), 400, "wire.malformed")
    problem(
        served.post("bank-a", "card-session", b"{}", "b2", "application/json"),
        415,
        "http.unsupported_media_type",
    )
    huge = b"\x00" * (1 << 20 | 1)
    problem(served.post("bank-a", "card-session", huge, "b3"), 413, "http.too_large")
    problem(served.http.get(served.url("bank-a", "card-session")), 405, "http.method_not_allowed")
    problem(served.http.get(f"{served.network.urls['bank-a']}/v1/nowhere"), 404, "http.not_found")
    problem(
        served.http.get(f"{served.network.urls['bank-a']}/v1/admin/ledger"), 401, "auth.required"
    )


@pytest.mark.parametrize("seq", [2**31, 2**63, 2**70, -1])
def test_a_card_counter_outside_the_databases_range_is_a_refusal(served: Served, seq: int) -> None:
    """A confirmation signed by a genuine card whose counter no database column can hold got
    HTTP 500; it is a 4xx refusal with a code, and nothing changes."""
    user = served.remote.add_user(f"Ola {seq}", "bank-a")
    session = session_bytes(user, Operation.SYNC, 0)
    instruction = served.post("bank-a", "card-session", session, f"ola-{seq}").content
    good = CardClient(user.card.process).apply_instruction(instruction)
    confirmation = decode(
        Signed.from_bytes(in_clear(served, "bank-a", good)).payload, CardConfirmation
    )
    card = user.card._credential  # the card's own key: a genuine card that misbehaves
    forged = sign(dataclasses.replace(confirmation, seq=seq), card).to_bytes()
    books = served.books()
    answer = served.post("bank-a", "card-confirmation", forged, f"ola-conf-{seq}")
    problem(answer, 422, "device.counter_out_of_range")
    assert served.books() == books
    assert served.post("bank-a", "card-confirmation", good, f"ola-good-{seq}").status_code == 200


def test_a_malformed_content_length_gets_the_json_refusal(served: Served) -> None:
    """Every refusal is an RFC 9457 problem with a code and a message, including one the HTTP
    server itself makes before any route runs."""
    address = urlsplit(served.network.urls["bank-a"])
    tls = client_context(served.network)
    for length in ("abc", "-1", "1, 2"):
        with (
            socket.create_connection((address.hostname, address.port), timeout=10) as raw_conn,
            tls.wrap_socket(raw_conn, server_hostname=address.hostname) as conn,
        ):
            conn.sendall(
                b"POST /v1/messages/card-session HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/cbor\r\nIdempotency-Key: k1\r\n"
                b"Content-Length: " + length.encode() + b"\r\n\r\n"
            )
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), raw
        assert b"content-type: application/problem+json" in head.lower(), raw
        answer = json.loads(body)
        assert answer["code"] == "http.malformed" and answer["status"] == 400, answer
        assert len(answer["detail"]) > 10, answer


def test_a_notarisation_that_keeps_conflicting_is_retryable_not_a_final_refusal(
    served: Served,
) -> None:
    """Overlapping notarise-batch requests under load could spend the notary's attempts; the
    answer was a final 422 central.conflict, kept under the request's key, so the same bytes
    were refused for ever. It is now 409 service.conflict, not kept: the resend settles.
    Here every insert into the notary fails as a lost race does (an IntegrityError, raised by a
    trigger in the central bank's real database) until the trigger is dropped."""
    served.remote.add_user("Pia", "bank-a", online=10_00)  # bank-a's customers hold money
    central = served.built[CENTRAL].service.party.db
    bank = served.built["bank-a"].service.party
    item = NotariseItem(os.urandom(16), os.urandom(32), "bank-a", "bank-b", Money(1_00, "SEK"))
    request = NotariseBatch(bank.id, NOTARY_ID, os.urandom(16), (item,))
    body = sign(request, bank.credential).to_bytes()
    books = served.books()
    with central.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER lose_every_race BEFORE INSERT ON notary "
                "BEGIN SELECT RAISE(ABORT, 'a racing request got there first'); END"
            )
        )
    try:
        first = served.post(CENTRAL, "notarise-batch", body, "race-1")
        assert "send the same request again" in problem(first, 409, "service.conflict")
        assert served.books() == books
    finally:
        with central.begin() as conn:
            conn.execute(text("DROP TRIGGER lose_every_race"))
    again = served.post(CENTRAL, "notarise-batch", body, "race-1")
    assert again.status_code == 200, again.text
    assert "idempotent-replayed" not in again.headers
    result = decode(Signed.from_bytes(again.content).payload, BatchResult)
    assert [i.status for i in result.items] == [SettlementStatus.DONE]
    replayed = served.post(CENTRAL, "notarise-batch", body, "race-1")
    assert replayed.content == again.content and replayed.headers["idempotent-replayed"] == "true"


def test_a_second_process_of_a_party_is_refused(served: Served) -> None:
    """Two processes serving one intermediary would each trust their own memory of it."""
    with pytest.raises(OffpayError) as refused:
        build(served.network, "bank-a", retry_every=-1)
    assert refused.value.code == "service.data_dir"
    assert "already running" in refused.value.message


def test_a_network_folder_keeps_its_secrets_owner_only(served: Served) -> None:
    """Keys, admin tokens and party.json (whose database URL may carry a password) are readable
    by their owner alone; the certificates and network.json are public."""
    folder = served.network.folder
    secrets = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix == ".key" or p.name in ("admin-token", "party.json"))
    )
    names = {p.relative_to(folder).as_posix() for p in secrets}
    assert {"central-bank/root.key", "central-bank/mint.key", "bank-a/ca.key"} <= names
    assert {f"{party}/party.json" for party in served.network.urls} <= names
    assert {f"{party}/admin-token" for party in served.network.urls} <= names
    for path in secrets:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
