"""Crash (issue 5, point 7): an intermediary process is killed (SIGKILL) in the middle of a
sync, restarted from the same database and keys, and the phone sends the same session again:
the books are consistent at every point and the sync completes, settling the payment once.

The kill lands at a chosen point: a relay in front of the central bank forwards bank-a's
notarisation and holds the answer, so the central bank has recorded the payment and bank-a
has debited its payer, but bank-a never learns that the notary did its part.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import client_of
from offpay.bank.engine import engine_id
from offpay.device.reader import CardClient
from offpay.errors import OffpayError
from offpay.service.datadir import CENTRAL, NetworkConfig, free_port, init_network
from offpay.service.process import running, service_process
from offpay.service.remote import RemoteNetwork, RemoteUser
from offpay.service.tls import TlsFiles, server_context
from offpay.wire.messages import Operation

FORWARDED = ("content-type", "idempotency-key", "authorization")


class Relay:
    """Forwards every request to ``target``; once armed, the answer to the next notarisation
    is held back (the connection is left hanging) until released."""

    def __init__(self, port: int, target: str, network: NetworkConfig) -> None:
        self.target = target
        self.armed = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        # On the path over TLS: the central bank's certificate towards its clients, and a
        # party's own towards the central bank, which serves no client without one.
        self.client = client_of(network, CENTRAL)
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
                answer = relay.client.request(
                    self.command, relay.target + self.path, content=body, headers=headers
                )
                if self.path.endswith("/notarise") and relay.armed.is_set():
                    relay.armed.clear()
                    relay.holding.set()
                    relay.release.wait(60)
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name in ("content-type", "idempotent-replayed"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        tls = server_context(TlsFiles.of(network, CENTRAL), require_client=True)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


@pytest.fixture
def relay_port() -> Iterator[int]:
    yield free_port()


def test_an_intermediary_killed_in_mid_sync_restarts_and_the_sync_completes(
    tmp_path: Path, relay_port: int
) -> None:
    central_port = free_port()
    network = init_network(
        tmp_path / "net", ("bank-a", "bank-b"), urls={CENTRAL: f"https://127.0.0.1:{relay_port}"}
    )
    relay = Relay(relay_port, f"https://127.0.0.1:{central_port}", network)
    with running(network, retry_every=-1, ports={CENTRAL: central_port}) as processes:
        net = RemoteNetwork(network, retries=0)
        try:
            for bank in network.banks:
                net.issue(bank, 100_000_00)
            alice = net.add_user("Alice", "bank-a", online=1_000_00)
            bob = net.add_user("Bob", "bank-b")
            alice.phone.top_up(alice.pin, net.money(300_00))
            request = bob.phone.ask(alice.phone.show_identity(), net.money(120_00))
            bob.phone.accept(bob.pin, alice.phone.pay(alice.pin, request))
            session = _begin_sync(alice)

            # Alice's sync: bank-a debits her shadow wallet, the notary records the payment,
            # and bank-a dies before it hears back.
            relay.armed.set()
            failed: list[OffpayError] = []
            phone = threading.Thread(target=_send, args=(net, session, failed))
            phone.start()
            assert relay.holding.wait(60), "bank-a never asked the notary"
            processes["bank-a"].kill()
            phone.join(60)
            relay.release.set()
            assert [e.code for e in failed] == ["network.cut"]

            processes["bank-a"] = service_process(network, "bank-a", retry_every=-1).start()
            # Consistent before anything is retried: the payment is in transit, once.
            audit = net.check_conservation()
            assert audit.in_transit == net.money(120_00)
            assert net.central.notarised_count() == 1
            assert alice.shadow == net.money(180_00) and bob.shadow == net.money(0)

            # The phone sends the very same session again: the sync completes.
            instruction = net.transport.send("bank-a", "card-session", session)
            confirmation = CardClient(alice.card.process).apply_instruction(instruction)
            net.transport.send("bank-a", "card-confirmation", confirmation)
            assert alice.card_balance == alice.shadow == net.money(180_00)
            assert bob.shadow == net.money(120_00)
            bob.phone.sync(bob.pin)
            assert bob.card_balance == net.money(120_00)
            ledger = net.banks["bank-a"].ledger()
            assert (ledger["debited"], ledger["in_transit"], ledger["uncredited"]) == (12000, 0, {})
            assert net.banks["bank-b"].ledger()["credited"] == 120_00
            assert net.central.notarised_count() == 1
            audit = net.check_conservation()
            assert audit.in_transit == net.money(0) and audit.balanced
        finally:
            net.close()
            relay.close()


def _begin_sync(user: RemoteUser) -> bytes:
    client = CardClient(user.card.process)
    client.verify_pin(user.pin)
    return client.begin_online(engine_id(user.bank.name), Operation.SYNC, user.bank.money(0))


def _send(net: RemoteNetwork, session: bytes, failed: list[OffpayError]) -> None:
    try:
        net.transport.send("bank-a", "card-session", session)
    except OffpayError as exc:
        failed.append(exc)
