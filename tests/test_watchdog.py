"""Issue 18, point 3: the watchdog in every service. A row changed behind the party's back (a
test writes to the database directly: that is the fault) trips it at the next money-moving
request; money moves stop with a retryable 503 ``watchdog.halted`` while reads go on; the
alarm shows in /metrics and the admin books, survives a restart, and clears only once the
books agree again (or forced, with a reason). The incremental check equals a full recount for
any honest sequence of batches (Hypothesis)."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from typer.testing import CliRunner

from conftest import client_of, serve_party
from offpay.cli import app as cli
from offpay.errors import OffpayError
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.remote import RemoteNetwork
from offpay.service.serve import Built, build
from offpay.service.watchdog import Watchdog
from offpay.service.watchdog_checks import BankBooksCheck
from offpay.sim.network import OfflineNetwork
from offpay.wire.messages import Operation
from test_services import problem, session_bytes

CBOR = "application/cbor"


@dataclass
class Net:
    network: NetworkConfig
    remote: RemoteNetwork
    built: dict[str, Built]
    http: httpx.Client

    def admin(self, party: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.network.admin_token(party)}"}

    def get(self, party: str, path: str) -> httpx.Response:
        return self.http.get(f"{self.network.urls[party]}{path}", headers=self.admin(party))

    def clear(self, party: str, **body: object) -> httpx.Response:
        headers = {**self.admin(party), "Idempotency-Key": secrets.token_hex(16)}
        return self.http.post(
            f"{self.network.urls[party]}/v1/admin/watchdog/clear", json=body, headers=headers
        )

    def sql(self, party: str, statement: str) -> None:
        """The fault: a row changed behind the party's back."""
        with self.built[party].service.party.db.begin() as conn:
            conn.execute(text(statement))

    def halted(self, party: str) -> bool:
        return bool(self.get(party, "/v1/admin/watchdog").json()["halted"])

    def metric(self, party: str) -> str:
        return next(
            line
            for line in self.http.get(f"{self.network.urls[party]}/metrics").text.splitlines()
            if line.startswith("offpay_watchdog_halted ")
        )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    network = init_network(tmp_path_factory.mktemp("net"), ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        built = {}
        from offpay.service.app import create_app

        for name in network.urls:
            built[name] = build(network, name, retry_every=-1)
            app = create_app(built[name].service, background=built[name].background)
            stack.enter_context(serve_party(network, name, app))
        remote = RemoteNetwork(network, retries=1)
        stack.callback(remote.close)
        http = stack.enter_context(client_of(network, CENTRAL))
        for bank in network.banks:
            remote.issue(bank, 1_000_000_00)
        yield Net(network, remote, built, http)


def test_honest_traffic_never_trips_any_watchdog(net: Net) -> None:
    alice = net.remote.add_user("alice", "bank-a", online=50_00)
    shop = net.remote.add_merchant("shop", "bank-b")
    alice.phone.top_up(alice.pin, net.remote.money(30_00))
    shop.pos.charge(alice.card.process, alice.pin, net.remote.money(12_00))
    shop.pos.sync()
    alice.phone.sync(alice.pin)
    assert shop.wallet == net.remote.money(12_00)
    for party in net.network.urls:
        state = net.get(party, "/v1/admin/watchdog").json()
        assert state["halted"] is False and state["alarm"] is None, (party, state)
        assert net.metric(party) == "offpay_watchdog_halted 0.0"
    assert net.get("bank-a", "/v1/admin/watchdog").json()["checks"] >= 2
    assert net.get(CENTRAL, "/v1/admin/watchdog").json()["checks"] >= 1


def test_concurrent_settlements_never_look_like_a_fault(net: Net) -> None:
    """Requests committing while the watchdog reads (many at once, at two intermediaries and
    the central bank) are confirmed in one snapshot, never raised as an alarm."""
    from concurrent.futures import ThreadPoolExecutor

    users = [net.remote.add_user(f"c{i}", "bank-a", online=30_00) for i in range(6)]
    # A shop's reader takes one card at a time: one shop per customer, all at once.
    shops = [net.remote.add_merchant(f"s{i}", "bank-b") for i in range(6)]

    def play(i: int) -> None:
        user = users[i]
        user.phone.top_up(user.pin, net.remote.money(20_00))
        shops[i].pos.charge(user.card.process, user.pin, net.remote.money(1_00 + i))
        user.phone.sync(user.pin)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(play, range(6)))
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda shop: shop.pos.sync(), shops))
    for party in net.network.urls:
        assert not net.halted(party), net.get(party, "/v1/admin/watchdog").json()
    assert sum(shop.wallet.minor for shop in shops) == sum(1_00 + i for i in range(6))


def test_a_tampered_wallet_halts_money_moves_until_the_books_agree_again(net: Net) -> None:
    bob = net.remote.add_user("bob", "bank-a", online=40_00)
    wallet = f"{bob.customer_id}/online"
    fund = f"{net.network.urls['bank-a']}/v1/admin/fund"
    first_key = secrets.token_hex(16)
    funding = {"customer_id": bob.customer_id, "amount": 1_00}
    headers = {**net.admin("bank-a"), "Idempotency-Key": first_key}
    assert net.http.post(fund, json=funding, headers=headers).status_code == 200
    net.sql("bank-a", f"UPDATE accounts SET balance = balance + 500 WHERE id = '{wallet}'")
    # The next settlement touching the wallet commits, and its check trips the watchdog.
    bob.phone.top_up(bob.pin, net.remote.money(10_00))
    assert net.halted("bank-a")
    state = net.get("bank-a", "/v1/admin/watchdog").json()
    assert state["alarm"]["invariant"] == "wallets" and wallet in state["alarm"]["records"]
    # Money moves are refused, retryably, with the code and a Retry-After.
    answer = net.http.post(
        f"{net.network.urls['bank-a']}/v1/messages/card-session",
        content=session_bytes(bob, Operation.SYNC, 0),
        headers={"Content-Type": CBOR, "Idempotency-Key": secrets.token_hex(16)},
    )
    assert "retry later" in problem(answer, 503, "watchdog.halted")
    assert int(answer.headers["Retry-After"]) >= 1
    with pytest.raises(OffpayError) as refused:
        net.remote.banks["bank-a"].fund(bob.customer_id, net.remote.money(1_00))
    assert refused.value.code == "watchdog.halted"
    # A retry of a request answered before still gets its first answer; it moves nothing.
    again = net.http.post(fund, json=funding, headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    # Nor does it publish a liabilities commitment over books it found wrong.
    publication = net.http.post(
        f"{net.network.urls['bank-a']}/v1/admin/liabilities/publish",
        headers={**net.admin("bank-a"), "Idempotency-Key": secrets.token_hex(16)},
    )
    problem(publication, 503, "watchdog.halted")
    # Reads go on: the books (with the alarm), one wallet, the metrics.
    books = net.get("bank-a", "/v1/admin/books")
    assert books.status_code == 200 and books.json()["watchdog"]["halted"] is True
    assert net.remote.banks["bank-a"].balance(wallet) == net.remote.money(31_00 + 5_00)
    assert net.metric("bank-a") == "offpay_watchdog_halted 1.0"
    # Another party is not halted by it.
    assert not net.halted("bank-b") and not net.halted(CENTRAL)
    # The alarm is in the database: a restarted service starts halted.
    party = net.built["bank-a"].service.party
    assert Watchdog("bank-a", party).alarm is not None
    # Clearing re-runs the full check and refuses while the wallet still disagrees: over the
    # back office, and from the command line (one line, exit 2).
    refusal = net.clear("bank-a", reason="looked at it")
    assert wallet in problem(refusal, 422, "watchdog.books_disagree")
    command = ["network", "watchdog-clear", "--data", str(net.network.folder), "--party"]
    result = CliRunner().invoke(cli, [*command, "bank-a", "--reason", "looked again"])
    assert result.exit_code == 2, result.output
    assert "still disagree" in result.output and "Traceback" not in result.output
    assert net.halted("bank-a")
    # Fixed: the clear goes through and money moves again.
    net.sql("bank-a", f"UPDATE accounts SET balance = balance - 500 WHERE id = '{wallet}'")
    result = CliRunner().invoke(
        cli, [*command, "bank-a", "--reason", "the row was restored from the journal"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["cleared"] == state["alarm"]["id"]
    assert not net.halted("bank-a") and net.metric("bank-a") == "offpay_watchdog_halted 0.0"
    assert net.http.post(fund, json=funding, headers=headers).status_code == 200  # replayed
    net.remote.banks["bank-a"].fund(bob.customer_id, net.remote.money(1_00))
    assert bob.online == net.remote.money(32_00)
    bob.phone.top_up(bob.pin, net.remote.money(5_00))
    assert bob.shadow == net.remote.money(15_00)
    assert not net.halted("bank-a")
    history = net.get("bank-a", "/v1/admin/watchdog").json()["alarms"]
    assert history[0]["clear_reason"] == "the row was restored from the journal"
    assert history[0]["forced"] is False


def test_a_tampered_debit_record_trips_the_settlement_check(net: Net) -> None:
    carol = net.remote.add_user("carol", "bank-a", online=40_00)
    shop = net.remote.add_merchant("corner", "bank-b")
    carol.phone.top_up(carol.pin, net.remote.money(20_00))
    shop.pos.charge(carol.card.process, carol.pin, net.remote.money(3_00))
    net.sql("bank-a", "UPDATE debits SET amount = amount + 1")  # a past record altered
    # The full check before a clear names it, even with no alarm open.
    with pytest.raises(OffpayError):
        net.built["bank-a"].service.watchdog.clear("")
    net.sql("bank-a", "UPDATE debits SET amount = amount - 1")
    assert net.built["bank-a"].service.watchdog.clear("")["cleared"] is None


def test_the_central_bank_halts_on_a_tampered_position_and_a_forced_clear_is_logged(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    net.sql(CENTRAL, "UPDATE institutions SET holdings = holdings + 100 WHERE name = 'bank-b'")
    net.remote.issue("bank-a", 1_00)  # a money move at the central bank: checked after
    assert net.halted(CENTRAL)
    state = net.get(CENTRAL, "/v1/admin/watchdog").json()
    assert state["alarm"]["invariant"] == "issuance"
    with pytest.raises(OffpayError) as refused:
        net.remote.issue("bank-a", 1_00)
    assert refused.value.code == "watchdog.halted"
    books = net.get(CENTRAL, "/v1/admin/books")
    assert books.status_code == 200 and books.json()["watchdog"]["halted"] is True
    problem(net.clear(CENTRAL), 422, "watchdog.books_disagree")
    problem(net.clear(CENTRAL, force=True), 422, "watchdog.bad_clear")  # no reason
    with caplog.at_level("WARNING", logger="offpay.events"):
        forced = net.clear(CENTRAL, force=True, reason="holdings corrected by a later entry")
    assert forced.status_code == 200 and forced.json()["disagreements"] == 1
    assert any(getattr(r, "forced", False) for r in caplog.records)
    # The accepted difference is not raised again; a new one would be.
    net.remote.issue("bank-a", 1_00)
    assert not net.halted(CENTRAL)
    assert net.get(CENTRAL, "/v1/admin/watchdog").json()["alarms"][0]["forced"] is True
    net.sql(CENTRAL, "UPDATE institutions SET holdings = holdings - 100 WHERE name = 'bank-b'")
    assert net.built[CENTRAL].service.watchdog.clear("")["disagreements"] == 0


# -- the incremental check equals the full recount ------------------------------------------

STEPS = st.lists(
    st.tuples(st.sampled_from(["top-up", "pay", "sync", "defund"]), st.integers(1, 9_00)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_the_incremental_check_equals_the_full_recount_for_honest_batches(
    steps: list[tuple[str, int]],
) -> None:
    """For any honest sequence, the quick check after each step finds nothing, and its running
    sums equal the full recount of every wallet it touched."""
    net = OfflineNetwork()
    net.issue("bank-a", 1_000_000_00)
    net.issue("bank-b", 1_000_000_00)
    user = net.add_user("u", "bank-a", online=50_00)
    shop = net.add_merchant("m", "bank-b")
    checks = [BankBooksCheck(bank) for bank in net.banks.values()]  # payer's and payee's
    assert all(check.full() == [] for check in checks)
    for step, minor in steps:
        with contextlib.suppress(OffpayError):  # a refusal (funds, limits) moves nothing
            if step == "top-up":
                user.phone.top_up(user.pin, net.money(minor))
            elif step == "pay":
                shop.pos.charge(user.card.process, user.pin, net.money(minor))
                shop.pos.sync()
            elif step == "sync":
                user.phone.sync(user.pin)
            else:
                user.phone.defund(user.pin, net.money(minor))
        for check in checks:
            assert check.incremental(step) == []
            for wallet, running in check.base.items():
                assert running == check.bank.balance(wallet).minor, wallet
    assert all(check.full() == [] for check in checks)


def test_the_demo_s_flows_leave_every_party_s_books_agreeing(tmp_path: object) -> None:
    """Every flow the demo plays (top-ups, limits, shop and person-to-person payments,
    resubmission, payments across intermediaries, defund, the liquidity example): afterwards
    the full check of every party finds nothing, and the quick check after each party's
    moves agrees with it."""
    import io
    from pathlib import Path

    from rich.console import Console

    from offpay.crypto.keys import Algorithm
    from offpay.service.watchdog_checks import CentralBooksCheck
    from offpay.sim.demo import Demo

    demo = Demo(Console(file=io.StringIO()), Path(str(tmp_path)), Algorithm.ED25519)
    net = demo.net
    assert isinstance(net, OfflineNetwork)
    checks = {name: BankBooksCheck(bank) for name, bank in net.banks.items()}
    central = CentralBooksCheck(net.central)
    for check in (*checks.values(), central):
        assert check.full() == []
    assert demo.run()
    for name, check in checks.items():
        assert check.incremental("card-session") == [], name
        assert check.full() == [], name
    assert central.incremental("notarise") == [] and central.full() == []
