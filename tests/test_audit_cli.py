"""`offpay audit` on a network's data folder and on explicit database URLs: exit 0 clean,
1 with the discrepancies printed, 2 on bad input (one line, nothing read or written)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from offpay.attacks import dishonest
from offpay.cli import app
from offpay.service.datadir import CENTRAL, load_network, open_intermediary
from offpay.transport.memory import MemoryNetwork


def offpay(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def ok(*args: str) -> str:
    result = offpay(*args)
    assert result.exit_code == 0, result.output
    return str(result.output)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A data folder with settled payments: the driving commands, each its own invocation."""
    data = tmp_path / "net"
    ok("network", "init", "--data", str(data))
    for args in (
        ("issue", "bank-a", "SEK 10000"),
        ("issue", "bank-b", "SEK 10000"),
        ("customer", "open", "alice", "--bank", "bank-a"),
        ("customer", "open", "shop1", "--bank", "bank-b", "--merchant"),
        ("card", "issue", "alice"),
        ("terminal", "issue", "shop1"),
        ("fund", "alice", "SEK 500"),
        ("top-up", "alice", "SEK 200"),
        ("pay-shop", "alice", "shop1", "SEK 25"),
        ("sync", "shop1"),
        ("sync", "alice"),
    ):
        ok(*args, "--data", str(data))
    return data


def test_a_clean_folder_exits_0_and_a_second_run_resumes(folder: Path) -> None:
    out = ok("audit", "--data", str(folder), "--quiet")
    assert "1 payments audited" in out and "0 findings" in out
    assert (folder / "audit" / "state.sqlite").is_file()
    out = ok("audit", "--data", str(folder))  # resumes; the progress bar goes to stderr
    assert "1 payments audited" in out and "0 findings" in out


def test_a_discrepancy_exits_1_and_names_the_party_the_code_and_the_record(
    folder: Path,
) -> None:
    network = load_network(folder)
    bank = open_intermediary(network, "bank-a", MemoryNetwork())
    with bank.db.connect() as conn:
        card = conn.exec_driver_sql("SELECT id FROM devices WHERE kind = 'card'").scalar_one()
    row = dishonest.load_beyond_shadow(bank, card, 1_00)
    bank.db.dispose()
    result = offpay("audit", "--data", str(folder), "--quiet")
    assert result.exit_code == 1, result.output
    assert f"bank-a: audit.instruction_beyond_shadow [instruction:{row}, {card}]" in result.output
    again = offpay("audit", "--data", str(folder), "--quiet")
    assert again.exit_code == 1 and "kept" in again.output and "0 new" in again.output


def test_explicit_database_urls(folder: Path, tmp_path: Path) -> None:
    network = load_network(folder)
    root = tmp_path / "root.der"
    root.write_bytes(network.root_der)
    banks = [f"--bank={name}={network.database(name)}" for name in network.banks]
    out = ok(
        "audit",
        "--central",
        network.database(CENTRAL),
        *banks,
        "--root",
        str(root),
        "--state",
        str(tmp_path / "state" / "audit.sqlite"),
    )  # a first run: the progress bar knows its length
    assert "0 findings" in out


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--data", "{missing}"),
        ("--data", "{folder}", "--central", "sqlite:///x.db"),
        ("--data", "{folder}", "--bank", "a=sqlite:///x.db"),
        ("--central", "sqlite:///x.db", "--bank", "a=sqlite:///x.db"),
        ("--central", "sqlite:///{missing}/c.db", "--bank", "a=b",
         "--root", "{folder}/network.json", "--state", "{tmp}/s.sqlite"),
        ("--central", "sqlite:///{missing}/c.db", "--bank", "nobody", "--root", "{tmp}/none.der",
         "--state", "{tmp}/s.sqlite"),
        ("--data", "{folder}", "--state", "{folder}"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(folder: Path, tmp_path: Path, args: tuple[str]) -> None:
    filled = [a.format(folder=folder, missing=tmp_path / "missing", tmp=tmp_path) for a in args]
    result = offpay("audit", *filled, "--quiet")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "s.sqlite").exists()


def test_it_audits_a_network_while_its_services_run(folder: Path, tmp_path: Path) -> None:
    """A separate process beside `offpay network run`: it reads the live databases, and the
    services go on serving."""
    from tests.conftest import network_running

    with network_running(folder, tmp_path / "network.log") as runner:
        out = ok("audit", "--data", str(folder), "--quiet")
        assert "1 payments audited" in out and "0 findings" in out
        assert runner.poll() is None  # still serving


def test_explicit_postgresql_urls_exit_1_on_a_discrepancy(
    postgres_url: Callable[[str], str], tmp_path: Path
) -> None:
    from tests.test_audit_auditor import build

    audited = build(postgres_url, tmp_path)
    root = tmp_path / "root.der"
    root.write_bytes(audited.net.central.root_der)
    args = [
        "audit",
        "--central",
        audited.sources.central,
        *[f"--bank={name}={url}" for name, url in audited.sources.banks.items()],
        "--root",
        str(root),
        "--state",
        str(tmp_path / "audit.sqlite"),
        "--quiet",
    ]
    assert "0 findings" in ok(*args)
    row = dishonest.load_beyond_shadow(audited.net.banks["bank-a"], audited.alice.card_id, 1)
    result = offpay(*args)
    assert result.exit_code == 1, result.output
    assert f"audit.instruction_beyond_shadow [instruction:{row}," in result.output
