"""Shared fixtures for the flow, limit and invariant tests.

``net`` is a fresh two-bank network with SEK 1 000 000 issued to each bank. ``checked`` wraps
every action so that money conservation is asserted after each step, and offers helpers for
the offline flows (terminal charge, person-to-person payment) and for refusals that must
leave every wallet and every device exactly as they were.

``postgres_server`` is a real, throwaway PostgreSQL server (one per test process, so one per
xdist worker), started the first time a test asks for it and stopped when the session ends;
``postgres_url`` hands out fresh databases on it, and ``db_url`` runs a test once on SQLite
and once on PostgreSQL. When PostgreSQL cannot be started, the tests that need it fail: they
are never skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from offpay.attacks.checked import ISSUED_PER_BANK
from offpay.attacks.checked import Checked as Referee
from offpay.attacks.checked import card_snapshot as card_snapshot
from offpay.attacks.checked import terminal_snapshot as terminal_snapshot
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.service.datadir import NetworkConfig
from offpay.service.process import serve_in_thread
from offpay.service.serve import listening_context
from offpay.service.tls import network_client
from offpay.sim.network import Audit, OfflineNetwork, TokenUser
from offpay.store.postgres import (
    DatabaseUnavailable,
    PostgresServer,
    find_binaries,
    install_binaries,
    temporary_postgres,
)
from offpay.tokens.model import Token
from offpay.tokens.transfer import transfer_offline

# `make test` draws the same examples on every run and machine (a test's seed is its own), so
# that what passed here passes in CI; `HYPOTHESIS_PROFILE=explore` searches afresh and longer.
settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True)
settings.register_profile("explore", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PIN = "1234"


@dataclass
class Checked(Referee):
    """The attack suite's referee (``offpay.attacks.checked``): conservation after every
    step, refusals that change nothing; here the amount issued must also be what the
    fixtures issued."""

    def conserved(self) -> Audit:
        audit = super().conserved()
        assert audit.issued == self.net.money(ISSUED_PER_BANK * len(self.net.banks))
        return audit


@pytest.fixture
def net() -> OfflineNetwork:
    network = OfflineNetwork()
    for name in network.banks:
        network.issue(name, ISSUED_PER_BANK)
    return network


@pytest.fixture
def checked(net: OfflineNetwork) -> Checked:
    c = Checked(net)
    c.conserved()
    return c


def refused(code: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> OffpayError:
    """``fn`` must refuse with exactly ``code``; returns the error."""
    with pytest.raises(OffpayError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, str(info.value)
    return info.value


def pay_tokens(sender: TokenUser, receiver: TokenUser, minor: int) -> Token:
    """An offline token transfer between two phones with a perfect relay."""
    return transfer_offline(sender.element, receiver.element, Money(minor, sender.bank.currency))


# ---- services over TLS ----------------------------------------------------------------------


def serve_party(
    network: NetworkConfig, name: str, app: Any
) -> contextlib.AbstractContextManager[None]:
    """``app`` (party ``name``'s) served in a thread at its URL, over TLS 1.3 with its own
    certificate, as ``offpay serve`` would (mutual TLS at the central bank)."""
    return serve_in_thread(app, network.urls[name], tls=listening_context(network, name))


def client_of(network: NetworkConfig, party: str | None = None) -> Any:
    """An HTTP client that trusts the network's TLS CA only, showing ``party``'s certificate
    (None: a phone's, none at all)."""
    return network_client(network, party, timeout=30)


# ---- `offpay network run` in a process of its own --------------------------------------------

OFFPAY = (sys.executable, "-c", "from offpay.cli import app; app()")
NETWORK_START_S = 120  # a guard against a hang, not a measurement


@contextlib.contextmanager
def network_running(data: Path, log_path: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """``offpay network run --data DATA OPTIONS`` in its own process group (so that nothing
    outlives the test), its output in ``log_path``; yields once it says it is ready, and
    stops it with SIGTERM on the way out (killed if it has not stopped 30 s later)."""
    with log_path.open("w") as log:
        runner = subprocess.Popen(
            [*OFFPAY, "network", "run", "--data", str(data), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + NETWORK_START_S
        while "stop with Ctrl-C" not in log_path.read_text():
            assert runner.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield runner
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()


# ---- databases: SQLite and a real PostgreSQL ---------------------------------------------------

# A throwaway server may lose its data on a crash: durability settings off for speed. Many
# tests leave engines to the garbage collector, so allow plenty of connections.
POSTGRES_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A private PostgreSQL server for this test process; a failure to start fails the test."""
    with contextlib.ExitStack() as stack:
        try:
            _install_postgres_once(tmp_path_factory)
            server = stack.enter_context(
                temporary_postgres(install=False, settings=POSTGRES_SETTINGS)
            )
        except DatabaseUnavailable as exc:
            pytest.fail(
                f"these tests need PostgreSQL, which could not be started: {exc}", pytrace=False
            )
        yield server


def _install_postgres_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Install the server packages if missing, one test process at a time: xdist workers
    share the parent of their base temporary folder, and apt-get allows one install."""
    if find_binaries() is not None:
        return
    lock = tmp_path_factory.getbasetemp().parent / "offpay-postgres-install.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if find_binaries() is None:
            install_binaries()


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(
    postgres_server: PostgresServer, request: pytest.FixtureRequest
) -> Callable[[str], str]:
    """``postgres_url(name)``: the URL of a new, empty database for this test."""
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:30]

    def create(name: str) -> str:
        return postgres_server.create_database(f"{next(_database_numbers)}-{test}-{name}"[:63])

    return create


@dataclass(frozen=True)
class UrlFor:
    """``url_for(name)``: a fresh database per name on one backend (``sqlite`` files or
    ``postgresql``); fits :class:`OfflineNetwork`'s ``url_for``."""

    backend: str
    create: Callable[[str], str]

    def __call__(self, name: str) -> str:
        return self.create(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> UrlFor:
    """Runs the test on SQLite (database files) and on PostgreSQL (a real server)."""
    if request.param == "postgresql":
        return UrlFor("postgresql", request.getfixturevalue("postgres_url"))
    return UrlFor("sqlite", lambda name: f"sqlite+pysqlite:///{tmp_path}/{name}.sqlite")


def fits(out: str, width: int) -> None:
    """Every line fits the terminal, and nothing was cut short with an ellipsis."""
    from rich.cells import cell_len

    for line in out.splitlines():
        assert cell_len(line) <= width, line
        assert "…" not in line, line
