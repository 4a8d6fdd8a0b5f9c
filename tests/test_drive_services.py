"""Issue 16, points 1 and 3 against services: the driving commands with ``--network DIR``
reach a network served over HTTP (uvicorn on loopback ports in threads of this process, as in
``test_services.py``), and the back office's new routes answer behind the admin token."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import client_of, network_running, serve_party
from offpay.cli import app
from offpay.service.app import create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network, load_network
from offpay.service.serve import build


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkConfig]:
    config = init_network(
        tmp_path_factory.mktemp("served"), ("bank-a", "bank-b"), limits={"max_receipts": 4}
    )
    with contextlib.ExitStack() as stack:
        for name in config.urls:
            built = build(config, name, retry_every=-1)
            application = create_app(built.service, background=built.background)
            stack.enter_context(serve_party(config, name, application))
        yield config


def drive(config: NetworkConfig, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--network", str(config.folder)])
    assert result.exit_code == 0, result.output
    assert "conserved: issued" in result.output or args[0] in ("books", "payment")
    return result.output


def refused(config: NetworkConfig, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--network", str(config.folder)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def books(config: NetworkConfig, *party: str) -> dict:  # type: ignore[type-arg]
    extra = ["--party", party[0]] if party else []
    result = CliRunner().invoke(app, ["books", "--json", *extra, "--network", str(config.folder)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["conservation"]["balanced"], record["conservation"]
    return record  # type: ignore[no-any-return]


def wallets(record: dict, name: str) -> dict[str, int]:  # type: ignore[type-arg]
    for bank in record["banks"].values():
        for customer in bank["customers"]:
            if customer["name"] == name:
                return customer["wallets"]  # type: ignore[no-any-return]
    raise AssertionError(name)


def test_a_shop_payment_a_p2p_payment_across_banks_and_syncs_through_the_cli(
    network: NetworkConfig,
) -> None:
    drive(network, "issue", "bank-a", "SEK 10000")
    drive(network, "issue", "bank-b", "SEK 10000")
    drive(network, "customer", "open", "alice", "--bank", "bank-a")
    drive(network, "customer", "open", "bob", "--bank", "bank-b")
    drive(network, "customer", "open", "shop1", "--bank", "bank-b", "--merchant")
    drive(network, "card", "issue", "alice")
    drive(network, "card", "issue", "bob")
    drive(network, "terminal", "issue", "shop1")
    drive(network, "fund", "alice", "SEK 500")
    assert "it holds SEK 200.00" in drive(network, "top-up", "alice", "SEK 200")
    drive(network, "pay-shop", "alice", "shop1", "SEK 25")
    paid = drive(network, "pay", "alice", "bob", "SEK 10")
    assert "code" in paid
    record = books(network)
    assert record["devices"]["alice"]["balance"] == 165_00
    assert record["devices"]["alice"]["unsynced"] == 2
    assert record["devices"]["bob"]["balance"] == 10_00
    assert wallets(record, "shop1")["merchant"] == 0  # nothing settled before a sync

    drive(network, "sync", "shop1")
    drive(network, "sync", "bob")
    drive(network, "sync", "alice")
    record = books(network)
    assert wallets(record, "shop1")["merchant"] == 25_00
    assert wallets(record, "alice") == {"online": 300_00, "shadow": 165_00}
    assert wallets(record, "bob") == {"online": 0, "shadow": 10_00}
    assert record["devices"]["alice"]["unsynced"] == 0
    assert record["central_bank"]["notarised"] == 2

    only = books(network, "alice")
    assert list(only["banks"]) == ["bank-a"]
    assert [c["name"] for c in only["banks"]["bank-a"]["customers"]] == ["alice"]


def test_refusals_come_back_with_their_code_over_http(network: NetworkConfig) -> None:
    drive(network, "customer", "open", "carol", "--bank", "bank-a")
    drive(network, "card", "issue", "carol")
    out = refused(network, "top-up", "carol", "SEK 50")
    assert "[funds.insufficient]" in out or "insufficient" in out
    drive(network, "lost", "carol")
    assert "refused" in refused(network, "sync", "carol")
    record = books(network, "carol")
    [customer] = record["banks"]["bank-a"]["customers"]
    assert customer["devices"][0]["status"] == "blocked"
    assert any(a["kind"] == "blocked" for a in record["banks"]["bank-a"]["anomalies"])


def test_policy_publish_and_payment_records_over_http(network: NetworkConfig) -> None:
    url = network.urls["bank-a"]
    token = network.admin_token("bank-a")
    with client_of(network) as http:
        body = {"card_max_balance": 500_00}
        unauth = http.post(f"{url}/v1/admin/policy", json=body, headers={"Idempotency-Key": "k1"})
        assert unauth.status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        answer = http.post(
            f"{url}/v1/admin/policy", json=body, headers={**auth, "Idempotency-Key": "k-policy"}
        )
        assert answer.status_code == 200, answer.text
        policy = answer.json()["policy"]
        assert policy["card_max_balance"] == 500_00
        assert policy["max_receipts"] == 4  # the network's first limits stay
        assert policy["version"] >= 2
        again = http.post(
            f"{url}/v1/admin/policy",
            json={"version": 1, "max_receipts": 2},
            headers={**auth, "Idempotency-Key": "k-old"},
        )
        assert again.status_code >= 400
        assert again.json()["code"] == "policy.downgrade"
        bad = http.post(
            f"{url}/v1/admin/policy",
            json={"card_max_balance": -1},
            headers={**auth, "Idempotency-Key": "k-bad"},
        )
        assert bad.status_code == 400
        assert "card_max_balance" in bad.text
        current = http.get(f"{url}/v1/admin/books", headers=auth).json()["policy"]
        assert current["card_max_balance"] == 500_00
        # every limit of offpay.policy.LIMITS is a field of the body; "lift" removes one
        raised = http.post(
            f"{url}/v1/admin/policy",
            json={"payment_max": 200_00, "max_offline_hours": 72},
            headers={**auth, "Idempotency-Key": "k-new"},
        ).json()["policy"]
        assert (raised["payment_max"], raised["max_offline_hours"]) == (200_00, 72)
        lifted = http.post(
            f"{url}/v1/admin/policy",
            json={"lift": ["payment_max"]},
            headers={**auth, "Idempotency-Key": "k-lift"},
        ).json()["policy"]
        assert lifted["payment_max"] is None and lifted["max_offline_hours"] == 72
        not_optional = http.post(
            f"{url}/v1/admin/policy",
            json={"lift": ["card_max_balance"]},
            headers={**auth, "Idempotency-Key": "k-lift-bad"},
        )
        assert not_optional.status_code >= 400
        assert not_optional.json()["code"] == "policy.bad_limit"
        http.post(  # lifted again, so that the card below meets only the balance limit
            f"{url}/v1/admin/policy",
            json={"lift": ["max_offline_hours"]},
            headers={**auth, "Idempotency-Key": "k-lift-hours"},
        )

    # A card takes the new policy at its next sync and is refused a top-up above it.
    drive(network, "customer", "open", "dave", "--bank", "bank-a")
    drive(network, "card", "issue", "dave")
    drive(network, "fund", "dave", "SEK 900")
    drive(network, "sync", "dave")
    assert "card_max_balance" in refused(network, "top-up", "dave", "SEK 600")
    out = drive(network, "policy", "publish", "bank-a", "--card-max-balance", "SEK 3000")
    assert "published limits policy version" in out

    # Settlement records by payment id: the pending queue's and the ledgers' tx ids.
    drive(network, "customer", "open", "erin", "--bank", "bank-b")
    drive(network, "card", "issue", "erin")
    drive(network, "sync", "dave")
    drive(network, "top-up", "dave", "SEK 100")
    paid = drive(network, "pay", "dave", "erin", "SEK 7")
    tx_id = re.search(r"payment ([0-9a-f]{32})", paid).group(1)  # type: ignore[union-attr]
    drive(network, "sync", "erin")
    records = json.loads(drive(network, "payment", tx_id))
    pseudonym = records["bank-a"]["debit"]["pseudonym"]
    with client_of(network, CENTRAL) as http:
        auth = {"Authorization": f"Bearer {network.admin_token('bank-a')}"}
        assert http.get(f"{url}/v1/admin/payments/{tx_id}").status_code == 401
        assert http.get(f"{url}/v1/admin/payments/zz", headers=auth).status_code == 400
        central_auth = {"Authorization": f"Bearer {network.admin_token(CENTRAL)}"}
        notary = f"{network.urls[CENTRAL]}/v1/admin/payments"
        central = http.get(f"{notary}/{pseudonym}", headers=central_auth).json()
        # The notary knows the payment by its pseudonym only, never by its id.
        assert http.get(f"{notary}/{tx_id}", headers=central_auth).json()["notary"] is None
    assert central["notary"]["amount"] == 7_00
    assert records["central-bank"] == central
    assert records["central-bank"]["notary"]["payer_institution"] == "bank-a"
    assert records["central-bank"]["notary"]["payee_institution"] == "bank-b"
    assert records["bank-a"]["debit"]["amount"] == 7_00
    assert records["bank-a"]["debit"]["credited"] is True
    assert records["bank-b"]["credit"]["amount"] == 7_00
    assert records["bank-a"]["credit"] is None and records["bank-b"]["debit"] is None
    times = [
        dt.datetime.fromisoformat(r["recorded_at"])
        for r in (
            records["central-bank"]["notary"],
            records["bank-a"]["debit"],
            records["bank-b"]["credit"],
        )
    ]
    assert all(t.tzinfo is not None for t in times)
    assert max(times) - min(times) < dt.timedelta(hours=1)  # written during this test


def test_play_against_the_running_network(network: NetworkConfig, tmp_path: Path) -> None:
    script = tmp_path / "served.toml"
    script.write_text(
        "[[steps]]\n"
        'do = "customer-open"\nname = "fay"\nbank = "bank-a"\n'
        "[[steps]]\n"
        'do = "card-issue"\nname = "fay"\n'
        "[[steps]]\n"
        'do = "customer-open"\nname = "shop9"\nbank = "bank-b"\nmerchant = true\n'
        "[[steps]]\n"
        'do = "terminal-issue"\nname = "shop9"\n'
        "[[steps]]\n"
        'do = "pay-shop"\npayer = "fay"\nshop = "shop9"\namount = "SEK 5"\n'
        'expect = "funds.insufficient"\n'
        "[[steps]]\n"
        'do = "fund"\nname = "fay"\namount = "SEK 50"\n'
        "[[steps]]\n"
        'do = "top-up"\nname = "fay"\namount = "SEK 20"\n'
        "[[steps]]\n"
        'do = "pay-shop"\npayer = "fay"\nshop = "shop9"\namount = "SEK 5"\n'
        "[[steps]]\n"
        'do = "sync"\nname = "shop9"\n'
    )
    result = CliRunner().invoke(app, ["play", str(script), "--network", str(network.folder)])
    assert result.exit_code == 0, result.output
    assert "9 of 9 steps matched" in result.output
    assert wallets(books(network, "shop9"), "shop9") == {"merchant": 5_00}


def test_a_network_configured_by_a_file_served_by_network_run_and_driven(
    tmp_path: Path,
) -> None:
    """The whole story with real processes: a settings file, `offpay network run`, and the
    driving commands against it; the limits of the file are the services' policy."""
    config = tmp_path / "network.toml"
    config.write_text('liquidity = "restrict"\n[limits]\ncard_max_offline_transactions = 1\n')
    data = tmp_path / "net"
    made = CliRunner().invoke(
        app, ["network", "init", "--data", str(data), "--config", str(config)]
    )
    assert made.exit_code == 0, made.output
    log_path = tmp_path / "run.log"
    with network_running(data, log_path) as runner:
        served = load_network(data)
        drive(served, "issue", "bank-a", "SEK 1000")
        drive(served, "customer", "open", "alice", "--bank", "bank-a")
        drive(served, "customer", "open", "bob", "--bank", "bank-b")
        drive(served, "customer", "open", "shop1", "--bank", "bank-b", "--merchant")
        drive(served, "card", "issue", "alice")
        drive(served, "card", "issue", "bob")
        drive(served, "terminal", "issue", "shop1")
        drive(served, "fund", "alice", "SEK 100")
        drive(served, "top-up", "alice", "SEK 50")
        drive(served, "pay-shop", "alice", "shop1", "SEK 5")
        out = refused(served, "pay", "alice", "bob", "SEK 5")
        assert "[limit.card_max_offline_transactions]" in out
        drive(served, "sync", "alice")
        drive(served, "pay", "alice", "bob", "SEK 5")
        drive(served, "sync", "shop1")
        drive(served, "sync", "bob")
        record = books(served)
        assert record["banks"]["bank-a"]["policy"]["liquidity"] == "restrict"
        assert record["banks"]["bank-b"]["policy"]["card_max_offline_transactions"] == 1
        assert wallets(record, "shop1") == {"merchant": 5_00}
        assert wallets(record, "bob") == {"online": 0, "shadow": 5_00}
        assert record["central_bank"]["notarised"] == 2
    assert runner.returncode == 0
