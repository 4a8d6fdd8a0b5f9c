"""Issue 16, point 3: ``offpay network init`` takes the liquidity policy, the pool, the limits
and the algorithm as options and as a TOML file with the same keys (options win); a bad value
is one line and exit 2, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from offpay.cli import app


def init(*args: str) -> Any:
    return CliRunner().invoke(app, ["network", "init", *args])


def first_policy(data: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """bank-a's policy in force and the central bank's books, as the network starts."""
    books = CliRunner().invoke(app, ["books", "--json", "--data", str(data)])
    assert books.exit_code == 0, books.output
    record = json.loads(books.output)
    return record["banks"]["bank-a"]["policy"], record["central_bank"]


def test_options_set_liquidity_pool_limits_and_algorithm(tmp_path: Path) -> None:
    data = tmp_path / "net"
    made = init(
        "--data",
        str(data),
        "--banks",
        "bank-a,bank-c",
        "--liquidity",
        "pool",
        "--pool",
        "SEK 50000",
        "--algorithm",
        "ecdsa-p256",
        "--card-max-offline-transactions",
        "7",
        "--card-max-balance",
        "SEK 1500",
        "--terminal-max-received",
        "SEK 9000",
        "--max-receipts",
        "3",
        "--blocked-window-hours",
        "24",
    )
    assert made.exit_code == 0, made.output
    network = json.loads((data / "network.json").read_text())
    assert network["liquidity"] == "pool"
    assert network["algorithm"] == "ecdsa-p256"
    assert list(network["urls"]) == ["central-bank", "bank-a", "bank-c"]
    policy, central = first_policy(data)
    assert policy["liquidity"] == "pool"
    assert policy["version"] == 1
    assert policy["card_max_offline_transactions"] == 7
    assert policy["card_max_balance"] == 1500_00
    assert policy["terminal_max_received"] == 9000_00
    assert policy["terminal_max_offline_payments"] == 12  # not given: the pilot's default
    assert (policy["max_receipts"], policy["blocked_window_hours"]) == (3, 24)
    assert central["pool"]["size"] == 50000_00
    assert central["issued"] == 50000_00  # the pool is money the central bank created


def test_a_file_with_the_same_keys_and_options_over_it(tmp_path: Path) -> None:
    config = tmp_path / "network.toml"
    config.write_text(
        'banks = ["bank-x", "bank-y"]\nliquidity = "receipts"\npool = "SEK 100"\n'
        "[limits]\ncard_max_offline_transactions = 3\ncard_max_balance = 200000\n"
        'terminal_max_received = "SEK 7000"\n'
    )
    data = tmp_path / "net"
    made = init(
        "--data", str(data), "--config", str(config), "--liquidity", "restrict",
        "--card-max-offline-transactions", "4",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    network = json.loads((data / "network.json").read_text())
    assert network["liquidity"] == "restrict"  # the option wins
    assert list(network["urls"]) == ["central-bank", "bank-x", "bank-y"]
    assert network["limits"] == {
        "card_max_offline_transactions": 4,  # the option wins
        "card_max_balance": 2000_00,  # minor units in the file
        "terminal_max_received": 7000_00,
    }
    books = CliRunner().invoke(app, ["books", "--json", "--data", str(data)])
    record = json.loads(books.output)
    policy = record["banks"]["bank-x"]["policy"]
    assert (policy["liquidity"], policy["card_max_offline_transactions"]) == ("restrict", 4)
    assert record["central_bank"]["pool"]["size"] == 100_00


def test_the_defaults_are_the_pilots(tmp_path: Path) -> None:
    data = tmp_path / "net"
    assert init("--data", str(data)).exit_code == 0
    policy, central = first_policy(data)
    assert policy["liquidity"] == "queue"
    assert (policy["card_max_offline_transactions"], policy["card_max_balance"]) == (5, 3000_00)
    assert central["pool"]["size"] == 0


@pytest.mark.parametrize(
    ("file_text", "args", "words"),
    [
        (None, ("--liquidity", "float"), "float"),
        (None, ("--pool", "SEK many"), "pool"),
        (None, ("--card-max-balance", "EUR 5"), "EUR"),
        (None, ("--max-receipts", "99"), "max_receipts must be between 0 and 64"),
        (None, ("--banks", "Bank A"), "party names must be"),
        ('liquidity = "float"\n', (), "liquidity:"),
        ("colour = 1\n", (), "colour: Extra inputs are not permitted"),
        ("[limits]\ncard_max_balanse = 5\n", (), "limits.card_max_balanse"),
        ("[limits]\ncard_max_offline_transactions = -1\n", (), "greater than or equal to 0"),
        ('pool = "SEK -5"\n', (), "pool:"),
        ("banks = []\n", (), "at least one intermediary"),
        ("limits = 5\n", (), "limits:"),
        ("pool = [\n", (), "is not valid TOML"),
    ],
)
def test_bad_settings_are_one_line_exit_2_and_write_nothing(
    tmp_path: Path, file_text: str | None, args: tuple[str, ...], words: str
) -> None:
    data = tmp_path / "net"
    extra: tuple[str, ...] = ()
    if file_text is not None:
        config = tmp_path / "network.toml"
        config.write_text(file_text)
        extra = ("--config", str(config))
    result = init("--data", str(data), *extra, *args)
    assert result.exit_code == 2, result.output
    assert words in result.output, result.output
    assert "Traceback" not in result.output
    if "float" not in words:  # Typer's own usage message for a bad choice is a box
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (data / "network.json").exists()


def test_a_missing_settings_file_is_one_line(tmp_path: Path) -> None:
    result = init("--data", str(tmp_path / "net"), "--config", str(tmp_path / "none.toml"))
    assert result.exit_code == 2
    assert "cannot read" in result.output
