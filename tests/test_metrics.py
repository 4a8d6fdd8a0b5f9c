"""Issue 17, point 5: each service's ``/metrics`` in the Prometheus exposition format, scraped
over HTTP from services that took real traffic (the demo, a refused message, a cloned card),
parsed with prometheus_client's own parser; and the Grafana dashboard queries only metrics a
real scrape has."""

from __future__ import annotations

import contextlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rich.console import Console
from sqlalchemy import text

from conftest import client_of, serve_party
from offpay.attacks.over_http import play_over_http
from offpay.money import Money
from offpay.service.app import BANK_KINDS, CENTRAL_KINDS, TOKEN_KINDS, create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.observe import SETTLING
from offpay.service.remote import RemoteNetwork
from offpay.service.serve import Built, build
from offpay.sim.demo import Demo

DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana" / "offpay.json"


@dataclass
class Served:
    network: NetworkConfig
    http: httpx.Client

    def scrape(self, party: str) -> list[Sample]:
        answer = self.http.get(f"{self.network.urls[party]}/metrics")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain; version=")
        return [s for f in text_string_to_metric_families(answer.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels``; 0 if there is none."""
    found = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, found
    return found[0].value if found else 0.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Three services in threads of this process, after the balance demo played against them."""
    folder = tmp_path_factory.mktemp("metrics")
    network = init_network(folder / "net", ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        for name in network.urls:
            built = build(network, name, retry_every=-1)
            stack.enter_context(
                serve_party(network, name, create_app(built.service, background=built.background))
            )
        remote = RemoteNetwork(network, retries=1)
        stack.callback(remote.close)
        console = Console(file=io.StringIO(), width=120)
        assert Demo(console, folder, network.algorithm, net=remote).run()
        yield Served(network, stack.enter_context(client_of(network, CENTRAL)))


def test_requests_are_counted_by_route_template_and_status(served: Served) -> None:
    before = served.scrape("bank-a")
    tx = uuid.uuid4().hex
    admin = {"Authorization": f"Bearer {served.network.admin_token('bank-a')}"}
    url = served.network.urls["bank-a"]
    assert served.http.get(f"{url}/v1/admin/payments/{tx}", headers=admin).status_code == 200
    assert served.http.get(f"{url}/v1/admin/payments/{tx}").status_code == 401
    assert served.http.get(f"{url}/no/such/{tx}").status_code == 404
    after = served.scrape("bank-a")
    route = "/v1/admin/payments/{tx_id}"
    for status in ("200", "401"):
        key = {"route": route, "method": "GET", "status": status}
        assert value(after, "offpay_http_requests_total", **key) == (
            value(before, "offpay_http_requests_total", **key) + 1
        )
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "offpay_http_requests_total", **unmatched) == (
        value(before, "offpay_http_requests_total", **unmatched) + 1
    )
    # Bounded cardinality: no label carries a raw path or an id.
    assert not any(tx in str(s.labels) for s in after)
    # The demo's traffic is there: card sessions answered, each one timed.
    session = {"route": "/v1/messages/card-session", "method": "POST", "status": "200"}
    sessions = value(after, "offpay_http_requests_total", **session)
    assert sessions >= 4
    timed = value(
        after,
        "offpay_http_request_duration_seconds_count",
        route="/v1/messages/card-session",
        method="POST",
    )
    assert timed >= sessions


def test_settlements_and_their_latency(served: Served) -> None:
    payer, payee = served.scrape("bank-a"), served.scrape("bank-b")
    central = served.scrape(CENTRAL)
    for samples, kind in (
        (payee, "terminal-upload"),  # the demo's shop banks with bank-b
        (payer, "card-session"),
        (payer, "debit-batch"),
        (central, "notarise"),
    ):
        settled = value(samples, "offpay_settlements_total", kind=kind)
        assert settled >= 1, kind
        # One latency observation per settlement, in cumulative buckets.
        assert value(samples, "offpay_settlement_duration_seconds_count", kind=kind) == settled
        assert value(samples, "offpay_settlement_duration_seconds_sum", kind=kind) > 0
        assert (
            value(samples, "offpay_settlement_duration_seconds_bucket", kind=kind, le="+Inf")
            == settled
        )
    # Reading the revocation list moves no money: not a settlement.
    assert value(central, "offpay_settlements_total", kind="revocation-list") == 0


def test_a_refused_message_is_counted_by_its_code(served: Served) -> None:
    before = served.scrape(CENTRAL)
    answer = served.http.post(
        f"{served.network.urls[CENTRAL]}/v1/messages/notarise",
        content=b"\xa0",
        headers={"Content-Type": "application/cbor", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status_code == 400
    code = answer.json()["code"]
    after = served.scrape(CENTRAL)
    key = {"kind": "notarise", "code": code}
    assert (
        value(after, "offpay_refusals_total", **key)
        == value(before, "offpay_refusals_total", **key) + 1
    )
    assert value(after, "offpay_settlements_total", kind="notarise") == value(
        before, "offpay_settlements_total", kind="notarise"
    )


def test_the_central_banks_books_and_the_conservation_status(served: Served) -> None:
    samples = served.scrape(CENTRAL)
    ledger = served.http.get(
        f"{served.network.urls[CENTRAL]}/v1/admin/ledger",
        headers={"Authorization": f"Bearer {served.network.admin_token(CENTRAL)}"},
    ).json()
    assert value(samples, "offpay_books_up") == 1
    assert value(samples, "offpay_issued_minor", currency="SEK") == ledger["issued"] > 0
    for name, position in ledger["positions"].items():
        assert value(samples, "offpay_reserve_minor", institution=name) == position["reserve"]
        assert value(samples, "offpay_holdings_minor", institution=name) == position["holdings"]
    assert value(samples, "offpay_notarised_payments") == ledger["notarised"] > 0
    assert value(samples, "offpay_conservation_balanced") == 1
    assert value(samples, "offpay_conservation_difference_minor", currency="SEK") == 0
    assert value(samples, "offpay_pool_outstanding_minor", currency="SEK") == 0
    info = [s for s in samples if s.name == "offpay_service_info"]
    assert [s.labels["party"] for s in info] == [CENTRAL]


def test_an_intermediarys_books_queue_and_anomalies(served: Served) -> None:
    """A cloned card spending at two shops: the anomaly and the blocked card show up in the
    payer's intermediary's metrics, and its wallets agree with its ledger."""
    before = served.scrape("bank-a")
    report = play_over_http("cloned-card", served.network)
    assert report.findings
    after = served.scrape("bank-a")
    gained = {
        s.labels["kind"]: s.value - value(before, "offpay_anomalies", kind=s.labels["kind"])
        for s in after
        if s.name == "offpay_anomalies"
    }
    assert sum(gained.values()) >= 1, gained
    # The event counter saw the same new anomalies as the books hold.
    for kind, count in gained.items():
        logged = value(after, "offpay_anomaly_events_total", kind=kind) - value(
            before, "offpay_anomaly_events_total", kind=kind
        )
        assert logged == count, kind
    assert value(after, "offpay_devices", kind="card", status="blocked") >= 1
    ledger = served.http.get(
        f"{served.network.urls['bank-a']}/v1/admin/ledger",
        headers={"Authorization": f"Bearer {served.network.admin_token('bank-a')}"},
    ).json()
    wallets = sum(s.value for s in after if s.name == "offpay_wallets_minor")
    assert wallets == ledger["held"]
    for direction in ("out", "in"):
        assert value(after, "offpay_pending_payments", direction=direction) >= 0
        assert value(after, "offpay_pending_oldest_age_seconds", direction=direction) >= 0
    assert value(after, "offpay_loss_bound_minor") >= value(after, "offpay_losses_minor")
    assert value(after, "offpay_ledger_balanced") == 1
    assert value(served.scrape(CENTRAL), "offpay_conservation_balanced") == 1


def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(served: Served) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = {s.name for party in served.network.urls for s in served.scrape(party)}
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", ())]
    for expr in exprs:
        promql_parser.parse(expr)  # valid PromQL, or ValueError naming the fault
    queried = {name for expr in exprs for name in re.findall(r"\boffpay_[a-z_]+", expr)}
    assert len(queried) >= 15
    assert queried <= names, sorted(queried - names)
    # Importable: the datasource is a variable, every panel uses it.
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${" + datasource["name"] + "}", panel["title"]


def test_the_settling_kinds_are_request_kinds_the_services_route() -> None:
    """A kind renamed in the services and not here would silently stop being counted."""
    routed = {k.name for k in (*CENTRAL_KINDS, *BANK_KINDS, *TOKEN_KINDS)}
    assert routed >= SETTLING
    assert "revocation-list" not in SETTLING and "card-confirmation" not in SETTLING


def test_a_scrape_survives_books_it_cannot_read(tmp_path: Path) -> None:
    """A database that fails: /metrics still answers, says so, and serves no stale books."""
    network = init_network(tmp_path / "net", ("bank-a",))
    built = build(network, CENTRAL, retry_every=-1)
    registry = built.service.observer.metrics.registry

    def scrape() -> dict[str, float]:
        return {s.name: s.value for m in registry.collect() for s in m.samples}

    assert scrape()["offpay_books_up"] == 1 and "offpay_issued_minor" in scrape()
    built.service.party.db.dispose()
    (tmp_path / "net" / CENTRAL).rename(tmp_path / "gone")  # the database file with it
    samples = scrape()
    assert samples["offpay_books_up"] == 0
    assert "offpay_issued_minor" not in samples
    assert samples["offpay_service_info"] == 1  # the rest of the registry still answers


def test_a_gap_in_the_books_turns_the_status_red_with_the_difference(tmp_path: Path) -> None:
    """Money created or lost behind the engines' backs (a manual UPDATE here) shows at once:
    at the central bank as issued against held, at an intermediary as wallets against their
    journal, each with the difference in minor units."""
    network = init_network(tmp_path / "net", ("bank-a",))
    central = build(network, CENTRAL, retry_every=-1)
    bank = build(network, "bank-a", retry_every=-1)

    def figures(built: Built) -> dict[str, float]:
        registry = built.service.observer.metrics.registry
        return {s.name: s.value for m in registry.collect() for s in m.samples}

    central.service.party.issue("bank-a", Money(500_00, "SEK"))
    customer = bank.service.party.open_customer("Ann")
    assert figures(central)["offpay_conservation_balanced"] == 1
    assert figures(bank)["offpay_ledger_balanced"] == 1
    with central.service.party.db.begin() as conn:
        conn.execute(text("UPDATE institutions SET reserve = reserve - 7"))
    with bank.service.party.db.begin() as conn:
        conn.execute(
            text("UPDATE accounts SET balance = balance + 5 WHERE id = :id"),
            {"id": f"{customer}/online"},
        )
    c, b = figures(central), figures(bank)
    assert c["offpay_conservation_balanced"] == 0
    assert c["offpay_conservation_difference_minor"] == 7  # issued 7 more than is held
    assert b["offpay_ledger_balanced"] == 0
    assert b["offpay_ledger_difference_minor"] == 5
