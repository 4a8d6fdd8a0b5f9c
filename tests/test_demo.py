"""The demo a user runs first must play every flow and end balanced."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import fits
from offpay.cli import app
from offpay.sim.network import OfflineNetwork


def test_demo_plays_every_flow_and_ends_balanced(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    out = result.output
    for section in ("§3.4 Top-up", "§3.5 Offline payment", "§3.5 Resubmit", "§3.6 Person"):
        assert section in out
    assert "[limit.card_max_balance]" in out
    # The limits beyond the pilot's: the policy shown limit by limit, raised, met, lifted.
    assert "[limit.payment_max]" in out and "[limit.card_max_offline_spent]" in out
    assert "limits policy, version 2" in out and "SEK 150.00" in out
    for name in ("payment_max", "max_offline_hours", "element_max_holding"):
        assert name in out
    assert "shortfall" in out and "SEK 50.00 recorded at bank-a" in out
    assert "every card equals its shadow wallet" in out
    # The liquidity part: the shortfall under the pilot's rules, then each remedy, then costs.
    assert "[limit.card_received_not_spendable]" in out
    assert "pool lent SEK 50.00" in out
    assert "What each rule cost in this run" in out
    costs = _cost_table(out)
    assert costs["shortfalls"] == {"queue": "1", "restrict": "0", "pool": "1", "receipts": "0"}
    assert costs["shortfall value"]["queue"] == "SEK 50.00"
    assert costs["pool drawn"] == {
        "queue": "SEK 0.00",
        "restrict": "SEK 0.00",
        "pool": "SEK 50.00",
        "receipts": "SEK 0.00",
    }
    assert costs["still waiting"] == dict.fromkeys(("queue", "restrict", "pool", "receipts"), "0")
    assert int(costs["extra bytes"]["receipts"]) > 0 == int(costs["extra bytes"]["queue"])
    fits(out, 80)
    # The demo used embedded SQLite files, one per actor, in the folder it was given.
    names = sorted(p.name for p in tmp_path.glob("*.sqlite"))
    assert names == ["bank-a.sqlite", "bank-b.sqlite", "central-bank.sqlite"]


def _cost_table(out: str) -> dict[str, dict[str, str]]:
    """The closing table: a column per liquidity rule, a row per cost."""
    lines = out[out.index("What each rule cost in this run") :].splitlines()
    header = next(line for line in lines if "┃" in line and "queue" in line)
    rules = [cell.strip() for cell in header.split("┃")[2:-1]]
    rows = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    return {
        row[0].strip(): dict(zip(rules, (c.strip() for c in row[1:]), strict=True)) for row in rows
    }


def test_a_step_title_is_a_rule_when_it_fits_and_whole_when_it_does_not() -> None:
    import io

    from rich.console import Console

    from offpay.sim.headings import heading

    out = io.StringIO()
    console = Console(file=out, width=40, color_system=None)
    heading(console, "1. Short")
    heading(console, "2. A title much longer than the forty columns of this console")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("─") and "1. Short" in lines[0]
    assert set(lines[1]) == {"─"}
    assert (
        " ".join(" ".join(lines[2:]).split())
        == "2. A title much longer than the forty columns of this console"
    )
    fits(out.getvalue(), 40)


def test_state_survives_in_sqlite_files(tmp_path: Path) -> None:
    """The database URL is configurable; a file-backed network keeps what it settled."""
    net = OfflineNetwork(url_for=lambda name: f"sqlite+pysqlite:///{tmp_path / name}.db")
    net.issue("bank-a", 1_000_00)
    alice = net.add_user("Alice", "bank-a", online=500_00)
    shop = net.add_merchant("Shop", "bank-b")
    alice.phone.top_up(alice.pin, net.money(200_00))
    shop.pos.charge(alice.card.process, alice.pin, net.money(75_00))
    shop.pos.sync()
    net.check_conservation()
    assert shop.wallet == net.money(75_00)
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite+pysqlite:///{tmp_path / 'central-bank'}.db")
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from notary")).scalar_one() == 1
    engine.dispose()


def test_demo_can_run_twice_in_the_same_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--data-dir", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert "replacing the earlier demo database" in again.output


@pytest.mark.parametrize("marker", ["─ 1. ", "─ 7. ", "─ 14. ", "What each rule cost"])
def test_ctrl_c_stops_the_demo_at_once_whatever_it_is_doing(marker: str, tmp_path: Path) -> None:
    """SIGINT at any point ends the demo within seconds with one line and status 130. Python
    loses a KeyboardInterrupt raised inside a finaliser or a C extension's callback ("Exception
    ignored ...") and the demo carried on; the command now stops at its next line regardless."""
    demo = subprocess.Popen(
        [sys.executable, "-c", "from offpay.cli import app; app()", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert demo.stdout is not None
    try:
        for line in demo.stdout:
            if marker in line:
                break
        else:
            pytest.fail(f"the demo ended before {marker!r}")
        demo.send_signal(signal.SIGINT)
        asked = time.monotonic()
        _rest, err = demo.communicate(timeout=30)
        assert time.monotonic() - asked < 5
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130
    assert err == "stopped (Ctrl-C)\n"
