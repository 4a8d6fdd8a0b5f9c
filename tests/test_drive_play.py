"""Issue 16, point 1: ``offpay play SCRIPT.toml`` replays a scenario; exit 0 when every
outcome matched, 1 when one did not, 2 (one line naming the step and field) on a bad script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offpay.cli import app

EXAMPLE = Path(__file__).resolve().parent.parent / "scenarios" / "drive" / "basics.toml"

SETUP = """
[[steps]]
do = "issue"
bank = "bank-a"
amount = "SEK 1000"

[[steps]]
do = "customer-open"
name = "alice"
bank = "bank-a"

[[steps]]
do = "card-issue"
name = "alice"

[[steps]]
do = "fund"
name = "alice"
amount = "SEK 100"
"""


def play(*args: str) -> object:
    return CliRunner().invoke(app, ["play", *args])


def test_the_shipped_example_plays_and_every_outcome_matches() -> None:
    result = play(str(EXAMPLE))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.output  # type: ignore[attr-defined]
    assert "26 of 26 steps matched" in out
    assert "DID NOT MATCH" not in out
    for code in ("funds.insufficient", "pin.wrong", "limit.card_max_offline_transactions"):
        assert f"(expected {code}) matched" in out


def test_a_mismatch_exits_1_and_says_which_step(tmp_path: Path) -> None:
    script = tmp_path / "s.toml"
    script.write_text(
        SETUP
        + """
[[steps]]
do = "top-up"
name = "alice"
amount = "SEK 500"

[[steps]]
do = "top-up"
name = "alice"
amount = "SEK 50"
expect = "funds.insufficient"
"""
    )
    result = play(str(script))
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, out  # type: ignore[attr-defined]
    lines = out.splitlines()
    fifth = next(line for line in lines if line.lstrip().startswith("5."))
    assert "funds.insufficient (expected ok) DID NOT MATCH" in fifth
    sixth = next(line for line in lines if line.lstrip().startswith("6."))
    assert "ok (expected funds.insufficient) DID NOT MATCH" in sixth
    assert "4 of 6 steps matched" in out


def test_a_script_played_on_a_folder_leaves_its_state_for_the_next_command(
    tmp_path: Path,
) -> None:
    script = tmp_path / "s.toml"
    script.write_text(SETUP)
    data = tmp_path / "net"
    assert play(str(script), "--data", str(data)).exit_code == 0  # type: ignore[attr-defined]
    books = CliRunner().invoke(app, ["books", "--json", "--data", str(data)])
    assert books.exit_code == 0, books.output
    record = json.loads(books.output)
    [alice] = record["banks"]["bank-a"]["customers"]
    assert alice["wallets"] == {"online": 100_00, "shadow": 0}
    topped = CliRunner().invoke(app, ["top-up", "alice", "SEK 40", "--data", str(data)])
    assert topped.exit_code == 0, topped.output
    again = play(str(script), "--data", str(data))  # the names are taken now
    assert again.exit_code == 1  # type: ignore[attr-defined]
    assert "drive.name_taken (expected ok) DID NOT MATCH" in again.output  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[steps]]\ndo = "fly"\n', "step 1 (fly): do: unknown step 'fly'"),
        ('[[steps]]\nname = "x"\n', "step 1: say what it does"),
        ('[[steps]]\ndo = "fund"\nname = "a"\n', "step 1 (fund): amount: Field required"),
        (
            '[[steps]]\ndo = "fund"\nname = "a"\namount = "SEK x"\n',
            "step 1 (fund): amount:",
        ),
        (
            SETUP + '[[steps]]\ndo = "sync"\nname = "alice"\nexpect = "Not A Code"\n',
            "step 5 (sync): expect:",
        ),
        (
            '[[steps]]\ndo = "sync"\nname = "a"\ncolour = "red"\n',
            "step 1 (sync): colour: Extra inputs are not permitted",
        ),
        ("steps = []\n", "steps: List should have at least 1 item"),
        ('title = "x"\n[[steps]]\ndo = "sync"\nname = "a"\n', "title: Extra inputs"),
        (
            '[network]\nliquidity = "float"\n[[steps]]\ndo = "sync"\nname = "a"\n',
            "network.liquidity:",
        ),
        (
            '[network.limits]\nmax_receipts = 999\n[[steps]]\ndo = "sync"\nname = "a"\n',
            "max_receipts must be between",
        ),
        ("[[steps]\n", "is not valid TOML"),
    ],
)
def test_a_bad_script_is_one_line_exit_2_and_runs_nothing(
    tmp_path: Path, text: str, words: str
) -> None:
    script = tmp_path / "bad.toml"
    script.write_text(text)
    data = tmp_path / "net"
    result = play(str(script), "--data", str(data))
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, out  # type: ignore[attr-defined]
    assert words in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert "Traceback" not in out
    assert not data.exists()  # checked whole before anything is made


def test_a_missing_script_is_one_line(tmp_path: Path) -> None:
    result = play(str(tmp_path / "none.toml"))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "cannot read" in result.output  # type: ignore[attr-defined]
