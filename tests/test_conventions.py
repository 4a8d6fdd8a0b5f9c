"""The conventions users expect of a command and a repository: ``--version``, help texts a
person can read, a licence that matches the package metadata."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib.metadata import metadata, version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import offpay
from offpay.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_version_prints_the_installed_distributions_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"offpay {version('offpay')}"
    assert offpay.__version__ == version("offpay")


def test_version_wins_over_a_missing_command() -> None:
    """Eager: ``offpay --version`` needs no command and runs none."""
    result = CliRunner().invoke(app, ["--version", "demo", "--data-dir", "/nonexistent/x"])
    assert result.exit_code == 0
    assert result.stdout.startswith("offpay ")


def test_licence_file_is_the_one_pyproject_names() -> None:
    assert metadata("offpay")["License-Expression"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert text.startswith("Copyright 2026 The offpay authors\n")


def test_changelog_follows_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert f"## [{version('offpay')}]" in text
    assert "/work/" not in text


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_network_folder_is_ignored_by_git_wherever_it_is_made(tmp_path: Path) -> None:
    """Keys and admin tokens must never be committed by accident: the folder ignores itself."""
    from offpay.service.datadir import init_network

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    init_network(repo / "some" / "network", ["bank-a"])
    assert (repo / "some" / "network" / "bank-a" / "ca.key").exists()
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize(
    "path",
    [
        "offpay-network/network.json",  # the README's `offpay network run --data ./offpay-network`
        "offpay-data/bank-a/bank-a.sqlite",
        "demo/central-bank.sqlite",  # `offpay demo --data-dir demo`
        "demo/central-bank.sqlite-wal",
        "demo/bank-a.sqlite-shm",
        "bench-results/benchmarks-20261205.json",
    ],
)
def test_the_repository_ignores_the_folders_the_commands_make(path: str) -> None:
    assert _git(ROOT, "check-ignore", "--no-index", path).strip() == path


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))
# An internal reference (an issue, a point of one) or reStructuredText markup written for the
# API documentation: neither means anything to a person reading --help.
LEAKS = re.compile(
    r"\bissues? #?\d+|\bpoint \d+ of|``|:(?:func|class|meth|mod|data|attr|exc|ref):`|^\s*\.\. ",
    re.IGNORECASE | re.MULTILINE,
)


def test_every_command_is_walked() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "bench", "demo", "sim run", "network run", "serve intermediary"} <= names
    assert {"db upgrade", "sim sweep", "sim evidence", "network init"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "offpay")
def test_help_carries_no_internal_reference_and_no_rest(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert not LEAKS.findall(result.stdout), result.stdout


@pytest.mark.parametrize("path", [p for p, c in COMMANDS if hasattr(c, "commands")])
def test_command_lists_summarise_each_command_in_one_line(path: tuple[str, ...]) -> None:
    """A row of a command list is a sentence, not a docstring cut at its source line breaks."""
    group = dict(COMMANDS)[path]
    for name, sub in group.commands.items():
        summary = sub.short_help or (sub.help or "").split("\n\n")[0]
        assert summary and "\n" not in summary, (name, summary)


def test_the_leak_pattern_finds_what_it_must() -> None:
    for text in ("see issue 7", "(issue #16)", "``kind``", ":func:`x`", "a :class:`Y`"):
        assert LEAKS.search(text), text
    for text in ("`offpay network run`", "an issuance record", "e-krona report §3.4"):
        assert not LEAKS.search(text), text


@pytest.mark.parametrize(
    ("options", "banks"),
    [
        ((), ["bank-a", "bank-b"]),
        (("--banks", "north", "--banks", "south"), ["north", "south"]),
        (("--banks", "north,south", "--banks", "east"), ["north", "south", "east"]),
    ],
)
def test_network_init_takes_banks_as_a_repeated_option(
    options: tuple[str, ...], banks: list[str], tmp_path: Path
) -> None:
    data = tmp_path / "net"
    result = CliRunner().invoke(app, ["network", "init", "--data", str(data), *options])
    assert result.exit_code == 0, result.output
    urls = json.loads((data / "network.json").read_text())["urls"]
    assert list(urls) == ["central-bank", *banks]
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == list(urls)
