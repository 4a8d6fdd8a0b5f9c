"""`offpay attack --network DIR` against a running network (`offpay network run`): the
attacks the served network can be played over HTTP are played against its services, and
what the intermediaries did about them is read from their back offices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import client_of, network_running
from offpay.attacks.registry import ATTACKS
from offpay.cli import app
from offpay.service.datadir import load_network


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A network started by `offpay network run`, in its own process group."""
    folder = tmp_path_factory.mktemp("attack-network")
    data, log_path = folder / "net", folder / "run.log"
    with network_running(data, log_path):
        yield data


def test_every_attack_that_plays_over_http_against_a_running_network(running: Path) -> None:
    result = CliRunner().invoke(app, ["attack", "all", "--network", str(running), "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    reports = {r["name"]: r for r in json.loads(result.output)}
    assert set(reports) == {a.name for a in ATTACKS if a.over_http}
    assert len(reports) == 17
    for report in reports.values():
        assert report["where"] == f"over HTTP: {running}"
        assert report["conservation"]["conserved"] and report["within_bound"]

    replay = reports["replayed-top-up"]
    assert replay["outcome"] == "prevented" and replay["loss"] == replay["bound"] == 0
    assert [f["code"] for f in replay["findings"]] == ["wire.replay"] * 3

    clone = reports["cloned-card"]
    assert clone["outcome"] == "detected"
    assert [(f["party"], f["kind"], f["code"]) for f in clone["findings"]] == [
        ("bank-a", "detected", "conflicting_payment"),
        ("bank-a", "blocked", "blocked"),
        ("bank-a", "refused", "crypto.revoked"),
        ("bank-a", "refused", "crypto.revoked"),
    ]
    assert (clone["loss"], clone["bound"]) == (100_00, 3_000_00)

    counterfeit = reports["counterfeit-upload"]
    assert ("bank-a", "detected", "invalid_entry") in [
        (f["party"], f["kind"], f["code"]) for f in counterfeit["findings"]
    ]
    pins = reports["pin-brute-force"]
    assert [f["code"] for f in pins["findings"]][:3] == ["pin.wrong", "pin.wrong", "pin.blocked"]

    rollback = reports["rolled-back-card"]
    assert ("bank-a", "refused", "device.rolled_back") in [
        (f["party"], f["kind"], f["code"]) for f in rollback["findings"]
    ]
    assert (rollback["loss"], rollback["bound"]) == (100_00, 3_000_00)

    left = reports["card-left-after-pin"]
    assert left["outcome"] == "prevented"
    assert [(f["party"], f["code"]) for f in left["findings"]] == [
        ("Alice's card", "wire.replay"),
        ("Alice's card", "pin.required"),
    ]
    queued = reports["queued-double-spend"]
    assert [(f["party"], f["kind"], f["code"]) for f in queued["findings"]] == [
        ("bank-a", "detected", "conflicting_payment"),
        ("bank-a", "blocked", "blocked"),
    ]
    assert (queued["loss"], queued["bound"]) == (10_00, 3_000_00)
    before_sync = reports["clone-paid-before-sync"]
    assert [f["kind"] for f in before_sync["findings"]].count("blocked") == 2  # both orders
    assert before_sync["within_bound"]


def test_one_attack_printed_against_a_running_network(running: Path) -> None:
    result = CliRunner().invoke(app, ["attack", "cloned-card", "--network", str(running)])
    assert result.exit_code == 0, result.output[-3000:]
    assert "cloned-card (balance scheme, over HTTP:" in result.output
    assert "conflicting_payment" in result.output
    assert "outcome: detected; loss SEK 100.00, bound SEK 3 000.00 (within the bound)" in (
        result.output
    )


def test_the_incidents_route_refuses_an_unknown_device_and_a_missing_token(running: Path) -> None:
    """The back-office route the attacks read: a device of no intermediary is a 404 with a
    code; without the admin token nothing is answered."""
    network = load_network(running)
    url = f"{network.urls['bank-a']}/v1/admin/incidents"
    token = {"Authorization": f"Bearer {network.admin_token('bank-a')}"}
    with client_of(network, "central-bank") as client:
        unknown = client.get(url, params={"device_id": "card:bank-a:nobody"}, headers=token)
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "not_found"
        assert client.get(url, params={"device_id": "card:bank-a:nobody"}).status_code == 401
        revoked = f"{network.urls['central-bank']}/v1/admin/revoked"
        assert client.get(revoked).status_code == 401
