"""Issue 17, point 2 over HTTP: a payment the plain demo made through the phone and PoS apps
(no workbench, so no copy of it anywhere but in the parties' books) shows its trail with the
signed evidence decoded, read from the payee's intermediary; the devices show when they last
synchronised."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import select

from conftest import serve_party
from offpay.console.app import create_console
from offpay.service.app import create_app
from offpay.service.client import AdminClient
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.remote import RemoteNetwork
from offpay.service.serve import build
from offpay.service.tls import network_client
from offpay.sim.demo import Demo
from offpay.store import schema
from offpay.store.database import open_database
from offpay.wire.envelope import Signed


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkConfig]:
    """Three services in threads of this process, after the balance demo played against them."""
    folder = tmp_path_factory.mktemp("trail")
    network = init_network(folder / "net", ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        for name in network.urls:
            built = build(network, name, retry_every=-1)
            app = create_app(built.service, background=built.background)
            stack.enter_context(serve_party(network, name, app))
        remote = RemoteNetwork(network, retries=1)
        stack.callback(remote.close)
        quiet = Console(file=io.StringIO(), width=120)
        assert Demo(quiet, folder, network.algorithm, net=remote).run()
        yield network


def admin_get(config: NetworkConfig, party: str, path: str) -> dict:  # type: ignore[type-arg]
    client = AdminClient(
        config.urls[party],
        config.admin_token(party),
        client=network_client(config, party),
    )
    try:
        return dict(client.get(path))
    finally:
        client.close()


def credited_as(config: NetworkConfig, bank: str, pseudonym: bytes) -> bytes:
    """The id of the payment ``bank`` credited under the notary's ``pseudonym``: its books
    join the notary's by the pseudonym."""
    engine = open_database(config.database(bank), schema.bank)
    try:
        with engine.connect() as conn:
            c = schema.credits
            return bytes(conn.execute(select(c.c.tx_id).where(c.c.pseudonym == pseudonym)).one()[0])
    finally:
        engine.dispose()


def test_a_demo_payment_shows_its_signed_evidence_decoded(played: NetworkConfig) -> None:
    assert not (played.folder / "drive").exists()  # nobody kept a copy: the books must
    recent = admin_get(played, CENTRAL, "/v1/admin/books")["recent_notary"]
    shop = next(r for r in recent if r["payee_institution"] == "bank-b")
    assert "tx_id" not in shop  # the notary knows a payment by its pseudonym only
    tx = credited_as(played, "bank-b", bytes.fromhex(shop["pseudonym"])).hex()
    credit = admin_get(played, "bank-b", f"/v1/admin/payments/{tx}")["credit"]
    kept = Signed.from_bytes(base64.b64decode(credit["signed_payment"]))
    assert kept.digest.hex() == credit["evidence"]
    with TestClient(create_console(played)) as console:
        page = console.get("/payment", params={"tx": tx})
        assert page.status_code == 200
        html = page.text
        assert "as an intermediary settled it" in html and "matches the books" in html
        assert "&#34;message&#34;: &#34;offline-payment&#34;" in html
        assert "&#34;message&#34;: &#34;payment-request&#34;" in html  # the payee's signed half
        assert kept.digest.hex() in html
        # A payment nobody made: its records are empty and nothing is decoded.
        none = console.get("/payment", params={"tx": "0" * 32}).text
        assert "No intermediary has settled this payment yet" in none
        assert "offline-payment" not in none


def test_devices_show_the_time_of_their_last_sync(played: NetworkConfig) -> None:
    books = admin_get(played, "bank-b", "/v1/admin/books")
    devices = [d for c in books["customers"] for d in c["devices"]]
    synced = [d for d in devices if d["last_sync"] is not None]
    assert synced, devices
    now = dt.datetime.now(dt.UTC)
    for d in synced:
        at = dt.datetime.fromisoformat(d["last_sync"])
        assert at.tzinfo is not None and at <= now
    with TestClient(create_console(played)) as console:
        html = console.get("/parts/bank/bank-b").text
    for d in synced:
        shown = d["last_sync"][:19].replace("T", " ")
        assert f"last sync {shown} UTC" in html
