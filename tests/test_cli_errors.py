"""Every refused command line is one line on stderr that says what is wrong, exit status 2,
and nothing written: no traceback, whatever the bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from offpay.cli import app
from offpay.service.datadir import free_port


def refused(*args: str) -> str:
    """Run ``offpay ARGS``; it must exit 2 with exactly one line on stderr, which is returned."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def test_demo_data_dir_naming_a_file(a_file: Path) -> None:
    line = refused("demo", "--data-dir", str(a_file))
    assert "--data-dir" in line and "is a file, not a folder" in line
    assert a_file.read_text() == "not a folder\n"


def test_demo_data_dir_that_cannot_be_written(a_file: Path) -> None:
    line = refused("demo", "--data-dir", str(a_file / "demo"))
    assert "cannot be used" in line and "Not a directory" in line


@pytest.mark.parametrize("command", ["init", "run"])
def test_network_data_naming_a_file(command: str, a_file: Path) -> None:
    line = refused("network", command, "--data", str(a_file))
    assert line.endswith("is a file, not a folder")
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.parametrize("banks", [",", " , ,", ""])
def test_network_init_without_any_intermediary(banks: str, tmp_path: Path) -> None:
    data = tmp_path / "net"
    line = refused("network", "init", "--data", str(data), "--banks", banks)
    assert "at least one intermediary" in line
    assert not data.exists()


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_serve_on_a_port_out_of_range(port: str, tmp_path: Path) -> None:
    data = tmp_path / "net"
    assert CliRunner().invoke(app, ["network", "init", "--data", str(data)]).exit_code == 0
    line = refused("serve", "central-bank", "--data", str(data), "--port", port)
    assert line == f"central-bank cannot listen on port {port}: a port is 1 to 65535"
    assert not (data / "central-bank" / "lock").exists()  # it did not start


def test_db_upgrade_of_something_that_is_not_a_url() -> None:
    line = refused("db", "upgrade", "--url", "foo", "--kind", "central")
    assert line.startswith("--url is not a database URL")


def test_db_upgrade_of_a_postgres_nobody_listens_on() -> None:
    url = f"postgresql+psycopg://offpay:secret@127.0.0.1:{free_port()}/offpay"
    line = refused("db", "upgrade", "--url", url, "--kind", "intermediary")
    assert line.startswith("cannot reach the database at postgresql+psycopg://offpay:***@")
    assert "secret" not in line


def test_bench_token_depths_not_numbers(tmp_path: Path) -> None:
    line = refused("bench", "--token-depths", "a", "--results", str(tmp_path / "r"))
    assert line == "--token-depths a: give whole numbers, e.g. 1,10,30"
    assert not (tmp_path / "r").exists()


def test_bench_seconds_below_zero(tmp_path: Path) -> None:
    line = refused("bench", "--seconds", "-1", "--results", str(tmp_path / "r"))
    assert line == "--seconds must be above 0, not -1"


def test_bench_report_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    line = refused("bench", "--report-only", "--merge", str(missing))
    assert line == f"--merge {missing}: no such file"


def test_bench_report_of_a_file_that_is_not_json(tmp_path: Path) -> None:
    text = tmp_path / "notes.json"
    text.write_text("these are notes, not figures\n")
    line = refused("bench", "--report-only", "--merge", str(text))
    assert line == f"--merge {text} is not JSON (a file written by offpay bench)"


@pytest.mark.parametrize(
    ("option", "values", "unknown"),
    [
        ("--only", ["storage", "nonsense"], "unknown section nonsense"),
        ("--only", ["storage,tokens", "nonsense"], "unknown section nonsense"),
        ("--backends", ["sqlite", "oracle"], "unknown backend oracle"),
        ("--algorithms", ["ed25519", "rsa"], "unknown algorithm rsa"),
    ],
)
def test_bench_list_options_repeat_and_each_value_is_checked(
    option: str, values: list[str], unknown: str, tmp_path: Path
) -> None:
    """A list option is repeated (Typer's own lists); every value reaches the check."""
    args = [arg for value in values for arg in (option, value)]
    line = refused("bench", *args, "--results", str(tmp_path / "r"))
    assert line.startswith(unknown), line
    assert not (tmp_path / "r").exists()


def test_bench_sizes_repeat(tmp_path: Path) -> None:
    line = refused("bench", "--sizes", "10k", "--sizes", "ten", "--results", str(tmp_path / "r"))
    assert line == "not a size: 'ten' (sizes look like 1000, 10k or 1M)"
