"""Issue 20, point 5: every limit of the policy is shown and changed by the CLI (``network
init`` options and ``--config`` keys, ``policy publish``), the admin route and the books, all
built from one description (:data:`offpay.policy.LIMITS`); a drive play meets the new limits
as one-line refusals with their codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from offpay.cli import app
from offpay.policy import LIMITS, Scheme, Unit, limit_value
from offpay.service.admin_books import NewPolicy
from offpay.service.network_settings import Limits
from offpay.wire.messages import LimitsPolicy

NOT_LIMITS = {"issuer", "version", "currency", "liquidity"}
NEW = {
    "payment_max": ("SEK 200", 200_00),
    "card_max_offline_spent": ("SEK 2000", 2000_00),
    "card_max_daily_payments": ("20", 20),
    "card_max_daily_spent": ("SEK 5000", 5000_00),
    "max_offline_hours": ("72", 72),
    "token_max_ancestry": ("30", 30),
    "element_max_holding": ("SEK 3000", 3000_00),
}


def offpay(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def policy_of(data: Path, bank: str = "bank-a") -> dict[str, Any]:
    out = offpay("books", "--json", "--data", str(data))
    assert out.exit_code == 0, out.output
    return json.loads(out.output)["banks"][bank]["policy"]  # type: ignore[no-any-return]


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_the_description_names_every_limit_of_the_policy_once():
    names = [f.name for f in LIMITS]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(LimitsPolicy)} - NOT_LIMITS
    assert set(names) == fields
    for f in LIMITS:
        assert f.description and f.enforcer and f.code == f"limit.{f.name}"
        default = dataclasses.fields(LimitsPolicy)[
            [g.name for g in dataclasses.fields(LimitsPolicy)].index(f.name)
        ].default
        assert f.optional == (default is None)  # optional exactly when absent means no limit
    assert {f.scheme for f in LIMITS} == set(Scheme)
    assert {f.unit for f in LIMITS} == set(Unit)


def test_every_ui_takes_every_limit_from_the_description():
    names = {f.name for f in LIMITS}
    assert set(Limits.model_fields) == names  # network init --config [limits]
    assert set(NewPolicy.model_fields) == names | {"version", "lift"}  # the admin route
    helptext = offpay("policy", "publish", "--help").output
    init_help = offpay("network", "init", "--help").output
    for name in names:  # typer may shorten a long option in the table, not its start
        assert option(name)[:20] in helptext and option(name)[:20] in init_help


def test_network_init_takes_every_new_limit_as_an_option_and_as_a_config_key(tmp_path: Path):
    by_option = tmp_path / "a"
    args = [a for name, (text, _) in NEW.items() for a in (option(name), text)]
    made = offpay("network", "init", "--data", str(by_option), *args)
    assert made.exit_code == 0, made.output
    policy = policy_of(by_option)
    assert {name: policy[name] for name in NEW} == {n: v for n, (_, v) in NEW.items()}

    config = tmp_path / "network.toml"
    lines = [
        f'{n} = "{text}"' if text.startswith("SEK") else f"{n} = {text}"
        for n, (text, _) in NEW.items()
    ]
    config.write_text("[limits]\n" + "\n".join(lines) + "\n")
    by_file = tmp_path / "b"
    made = offpay("network", "init", "--data", str(by_file), "--config", str(config))
    assert made.exit_code == 0, made.output
    assert {n: policy_of(by_file)[n] for n in NEW} == {n: v for n, (_, v) in NEW.items()}


def test_a_network_without_the_new_limits_has_none(tmp_path: Path):
    data = tmp_path / "net"
    assert offpay("network", "init", "--data", str(data)).exit_code == 0
    policy = policy_of(data)
    assert all(policy[name] is None for name in NEW)


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    data = tmp_path / "net"
    assert offpay("network", "init", "--data", str(data)).exit_code == 0
    for args in (
        ("issue", "bank-a", "SEK 10000"),
        ("issue", "bank-b", "SEK 10000"),
        ("customer", "open", "alice", "--bank", "bank-a"),
        ("customer", "open", "shop1", "--bank", "bank-b", "--merchant"),
        ("card", "issue", "alice"),
        ("terminal", "issue", "shop1"),
        ("fund", "alice", "SEK 1000"),
    ):
        out = offpay(*args, "--data", str(data))
        assert out.exit_code == 0, out.output
    return data


def test_policy_publish_raises_lowers_and_lifts_each_new_limit(drive: Path):
    args = [a for name, (text, _) in NEW.items() for a in (option(name), text)]
    out = offpay("policy", "publish", "bank-a", *args, "--data", str(drive))
    assert out.exit_code == 0 and "version 2" in out.output, out.output
    assert {n: policy_of(drive)[n] for n in NEW} == {n: v for n, (_, v) in NEW.items()}
    out = offpay("policy", "publish", "bank-a", "--payment-max", "SEK 50", "--data", str(drive))
    assert out.exit_code == 0, out.output
    assert policy_of(drive)["payment_max"] == 50_00
    assert policy_of(drive)["max_offline_hours"] == 72  # not given: as in force
    lifts = [a for name in NEW for a in (option(name), "none")]
    out = offpay("policy", "publish", "bank-a", *lifts, "--data", str(drive))
    assert out.exit_code == 0, out.output
    policy = policy_of(drive)
    assert policy["version"] == 4 and all(policy[n] is None for n in NEW)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--payment-max", "SEK -5"), "money.negative"),
        (("--payment-max", "EUR 5"), "SEK"),
        (("--max-offline-hours", "soon"), "whole number"),
        (("--card-max-daily-payments", "-1"), "negative"),
        (("--card-max-balance", "none"), "cannot be lifted"),
    ],
)
def test_a_bad_limit_is_one_line_exit_2_and_publishes_nothing(
    drive: Path, args: tuple[str, ...], words: str
):
    out = offpay("policy", "publish", "bank-a", *args, "--data", str(drive))
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1
    assert words in out.output
    assert policy_of(drive)["version"] == 1


def test_a_drive_play_meets_the_per_payment_maximum_and_the_offline_total(drive: Path):
    out = offpay(
        "policy", "publish", "bank-a", "--payment-max", "SEK 100",
        "--card-max-offline-spent", "SEK 150", "--data", str(drive),
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    ok = offpay("top-up", "alice", "SEK 500", "--data", str(drive))  # the card takes version 2
    assert ok.exit_code == 0, ok.output
    ok = offpay("pay-shop", "alice", "shop1", "SEK 100", "--data", str(drive))
    assert ok.exit_code == 0, ok.output
    over = offpay("pay-shop", "alice", "shop1", "SEK 100.01", "--data", str(drive))
    assert over.exit_code == 2 and "limit.payment_max" in over.output, over.output
    spent = offpay("pay-shop", "alice", "shop1", "SEK 50.01", "--data", str(drive))
    assert spent.exit_code == 2 and "limit.card_max_offline_spent" in spent.output, spent.output
    ok = offpay("pay-shop", "alice", "shop1", "SEK 50", "--data", str(drive))
    assert ok.exit_code == 0, ok.output


def test_limit_value_reads_amounts_in_minor_units_and_absent_as_none():
    from offpay.money import Money
    from offpay.policy import default_policy

    policy = dataclasses.replace(default_policy("bank-a"), payment_max=Money(5, "SEK"))
    assert limit_value(policy, "payment_max") == 5
    assert limit_value(policy, "card_max_offline_spent") is None
    assert limit_value(policy, "card_max_offline_transactions") == 5


def test_a_play_script_sets_the_new_limits_and_expects_their_refusals(tmp_path: Path):
    script = tmp_path / "limits.toml"
    script.write_text(
        """
[network.limits]
payment_max = "SEK 100"

[[steps]]
do = "issue"
bank = "bank-a"
amount = "SEK 1000"

[[steps]]
do = "customer-open"
name = "alice"
bank = "bank-a"

[[steps]]
do = "customer-open"
name = "shop1"
bank = "bank-a"
merchant = true

[[steps]]
do = "card-issue"
name = "alice"

[[steps]]
do = "terminal-issue"
name = "shop1"

[[steps]]
do = "fund"
name = "alice"
amount = "SEK 500"

[[steps]]
do = "top-up"
name = "alice"
amount = "SEK 300"

[[steps]]
do = "pay-shop"
payer = "alice"
shop = "shop1"
amount = "SEK 100.01"
expect = "limit.payment_max"

[[steps]]
do = "policy-publish"
bank = "bank-a"
limits = { payment_max = 50000, card_max_offline_spent = "SEK 150" }

[[steps]]
do = "sync"
name = "shop1"

[[steps]]
do = "sync"
name = "alice"

[[steps]]
do = "pay-shop"
payer = "alice"
shop = "shop1"
amount = "SEK 150"

[[steps]]
do = "pay-shop"
payer = "alice"
shop = "shop1"
amount = "SEK 0.01"
expect = "limit.card_max_offline_spent"
""",
        encoding="utf-8",
    )
    out = CliRunner().invoke(app, ["play", str(script)])
    assert out.exit_code == 0, out.output
    assert "DID NOT MATCH" not in out.output
    assert "(expected limit.card_max_offline_spent) matched" in out.output
