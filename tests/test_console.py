"""Issue 17, points 1-3 without a browser: `offpay network run` serves the console with its
own assets, the generic limits form, waiting times, evidence decoding that never raises, and
the lab's offline switch."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import typing
from pathlib import Path

import httpx
import pytest
from fastapi.templating import Jinja2Templates
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import network_running
from offpay.cli import app
from offpay.console.app import HERE
from offpay.console.desk import ConsoleError, policy_change, policy_fields, waiting
from offpay.console.evidence import decoded, plain
from offpay.console.lab import Lab
from offpay.console.serve import console_url
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.service.datadir import free_port, init_network
from offpay.wire.messages import LimitsPolicy


def test_network_run_serves_the_console_with_its_own_assets(tmp_path: Path) -> None:
    network = init_network(tmp_path / "net", ("bank-a", "bank-b"))
    port = free_port()
    while any(url.endswith(f":{port}") for url in network.urls.values()):
        port = free_port()  # not a port the network's parties will listen on
    log_path = tmp_path / "run.log"
    url = console_url("127.0.0.1", port)
    options = ("--console-port", f"{port}")
    with network_running(tmp_path / "net", log_path, *options) as runner:
        assert f"operator console and device lab: {url}" in log_path.read_text()
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            assert client.get("/v1/health").json()["service"] == "console"
            for path in ("/", "/lab"):
                page = client.get(path)
                assert page.status_code == 200
                # Every script and style comes from the console itself: no CDN.
                assert 'src="/static/htmx.min.js"' in page.text
                # Links go only to the network's own services (their API docs).
                linked = set(re.findall(r"https?://[^/\"']+", page.text))
                assert linked <= {u.rstrip("/") for u in network.urls.values()}, linked
                assert "cdn" not in page.text.lower()
            script = client.get("/static/htmx.min.js")
            assert script.status_code == 200 and "htmx" in script.text
            banner = client.get("/parts/conservation").text
            assert 'data-balanced="yes"' in banner and "issued SEK 0.00" in banner
    assert runner.returncode == 0
    assert "the network has stopped" in log_path.read_text()


def test_the_limits_form_has_every_count_and_amount_of_the_policy() -> None:
    hints = typing.get_type_hints(LimitsPolicy)
    shown = {f.name: f.money for f in policy_fields()}
    for field in dataclasses.fields(LimitsPolicy):
        if field.name in ("issuer", "version", "currency"):
            assert field.name not in shown
        elif hints[field.name] in (Money, Money | None):
            assert shown[field.name] is True
        elif hints[field.name] in (int, int | None):
            assert shown[field.name] is False
    assert "card_max_balance" in shown and "card_max_offline_transactions" in shown
    assert "payment_max" in shown and "max_offline_hours" in shown  # the optional limits too


def test_a_policy_form_lifts_an_optional_limit_typed_none() -> None:
    change = policy_change({"payment_max": "none", "max_offline_hours": "72"}, "SEK")
    assert change == {"lift": ["payment_max"], "max_offline_hours": 72}
    with pytest.raises(OffpayError):
        policy_change({"card_max_balance": "none"}, "SEK")  # a required limit is not lifted


def test_a_policy_form_changes_only_what_is_filled_in() -> None:
    change = policy_change(
        {
            "card_max_balance": "SEK 2 500",
            "card_max_offline_transactions": " 9 ",
            "max_receipts": "",
        },
        "SEK",
    )
    assert change == {"card_max_balance": 250_000, "card_max_offline_transactions": 9}
    with pytest.raises(ConsoleError) as bad:
        policy_change({"card_max_offline_transactions": "nine"}, "SEK")
    assert bad.value.code == "console.bad_number"


@given(st.integers(min_value=0, max_value=10**9))
def test_a_count_typed_is_the_count_sent(count: int) -> None:
    assert policy_change({"max_receipts": str(count)}, "SEK") == {"max_receipts": count}


def test_waiting_times_read_as_a_person_reads_them() -> None:
    now = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
    ago = lambda **kw: (now - dt.timedelta(**kw)).isoformat()  # noqa: E731
    assert waiting(ago(seconds=7), now) == "7 s"
    assert waiting(ago(minutes=3, seconds=4), now) == "3 min 04 s"
    assert waiting(ago(hours=26, minutes=5), now) == "26 h 05 min"
    assert waiting(None, now) == "?"


@given(st.binary(max_size=200))
def test_any_evidence_is_shown_and_never_raises(data: bytes) -> None:
    shown = decoded(data)
    assert isinstance(shown, dict)


def test_plain_shows_money_and_bytes_as_text() -> None:
    assert plain(Money(1250, "SEK")) == "SEK 12.50"
    assert plain(bytes(40)).endswith("(40 bytes)")
    assert plain([b"\x01", 2]) == ["01", 2]


def test_an_offline_device_cannot_reach_its_intermediary(tmp_path: Path) -> None:
    lab = Lab(init_network(tmp_path / "net", ("bank-a",)))
    lab.offline.add("ann")
    for act in (
        lambda: lab.sync("ann", "1234"),
        lambda: lab.top_up("ann", "5", "1234"),
        lambda: lab.defund("ann", "5", "1234"),
    ):
        with pytest.raises(ConsoleError) as refused:
            act()
        assert refused.value.code == "console.offline"
    with pytest.raises(ConsoleError):
        lab.open("ann", "bank-a", "robot")
    with pytest.raises(ConsoleError):
        lab.confirm("no-such-request", "123456", "1234", "1234")


def test_the_conservation_banner_turns_red_with_the_difference() -> None:
    env = Jinja2Templates(directory=HERE / "templates").env
    env.filters["money"] = lambda minor: str(Money(minor, "SEK"))
    banner = env.get_template("parts/conservation.html")
    record = {"issued": 100_00, "held": 90_00, "reserves": 0, "wallets": 90_00}
    record |= {"in_transit": 0, "tokens": 0, "pool": 0}
    red = banner.render(
        c={**record, "balanced": False, "problems": ["bank-b: a debit without its credit"]},
        difference=10_00,
    )
    assert 'data-balanced="no"' in red and "difference SEK 10.00" in red
    assert "a debit without its credit" in red
    green = banner.render(c={**record, "held": 100_00, "balanced": True}, difference=0)
    assert 'data-balanced="yes"' in green and "NOT" not in green


def test_the_console_command_refuses_a_folder_without_a_network(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["console", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.output.strip()


def test_the_screenshot_network_serves_its_parties_over_tls_and_stages_a_scene(
    tmp_path: Path,
) -> None:
    """What `python -m offpay.console.screenshots` photographs, without the browser: the
    parties over TLS, the console answering, the staged payments in the books."""
    from offpay.console.screenshots import served, stage

    with served(tmp_path / "net") as (config, url, lab):
        assert all(u.startswith("https://") for u in config.urls.values())
        tx = stage(lab)
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
            assert client.get("/").status_code == 200
            banner = client.get("/parts/conservation").text
            assert 'data-balanced="yes"' in banner
            trail = client.get("/payment", params={"tx": tx}).text
        assert "notary record" in trail and "offline-payment" in trail  # decoded evidence
