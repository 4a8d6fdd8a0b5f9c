"""Retention of first answers (issue 19, point 5; docs/retention.md): answers older than the
window are pruned in batches, recent ones kept; a retry within the window gets the first
answer, and a replay after it still moves nothing, because the nonces beneath are kept."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from conftest import client_of, serve_party
from offpay.central.bank import NOTARY_ID
from offpay.cli import app as cli
from offpay.crypto.pki import Credential
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.service.app import create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network
from offpay.service.idempotency import Answer, AnswerStore
from offpay.service.retention import prune_answers, prune_network, retention_window
from offpay.service.serve import Built, build
from offpay.store import schema
from offpay.store.database import open_database
from offpay.wire.envelope import sign
from offpay.wire.messages import ReserveTransfer

WEEK = retention_window(7)
NOW = dt.datetime.now(dt.UTC)


def kept(store: AnswerStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(store.table)).scalar_one())


def test_old_answers_are_pruned_in_batches_and_recent_ones_kept(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'bank.db'}", schema.bank)
    store = AnswerStore(db, schema.bank_http_answers)
    for i in range(7):
        store.keep("bank-b/engine", f"k{i}", "debit-request", bytes(32), Answer(200, b"ok", "x"))
    store.keep("admin", "open-1", "customers", bytes(32), Answer(200, b"{}", "x"))
    # Within the window nothing goes, however often pruning runs.
    assert prune_answers(db, store.table, NOW, WEEK, batch=3) == 0
    assert store.first("bank-b/engine", "k0", "debit-request", bytes(32)) is not None
    store.keep("bank-b/engine", "late", "debit-request", bytes(32), Answer(200, b"ok", "x"))
    with db.begin() as conn:  # the seven were kept eight days ago
        t = store.table
        conn.execute(
            t.update().where(t.c.key != "late").values(created_at=NOW - dt.timedelta(days=8))
        )
    assert prune_answers(db, store.table, NOW, WEEK, batch=3) == 7  # three, three, one
    assert kept(store) == 2  # the recent answer, and the back office's (never pruned)
    assert store.first("admin", "open-1", "customers", bytes(32)) is not None
    assert store.first("bank-b/engine", "late", "debit-request", bytes(32)) is not None
    assert store.first("bank-b/engine", "k0", "debit-request", bytes(32)) is None
    db.dispose()


@pytest.mark.parametrize("days", [0, 0.5, -3, 4000])
def test_a_window_out_of_range_is_refused(days: float) -> None:
    with pytest.raises(OffpayError) as refused:
        retention_window(days)
    assert refused.value.code == "service.retention.bad_window"


@dataclass
class Served:
    network: NetworkConfig
    built: dict[str, Built]
    http: httpx.Client

    def post(self, kind: str, body: bytes, key: str) -> httpx.Response:
        url = f"{self.network.urls[CENTRAL]}/v1/messages/{kind}"
        headers = {"Content-Type": "application/cbor", "Idempotency-Key": key}
        return self.http.post(url, content=body, headers=headers)

    def reserve(self, bank: str) -> tuple[int, int]:
        central = self.built[CENTRAL].service.party
        [position] = [p for p in central.positions() if p.institution == bank]  # type: ignore[union-attr]
        return position.reserve.minor, position.holdings.minor


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    network = init_network(tmp_path_factory.mktemp("net"), ("bank-a",))
    with contextlib.ExitStack() as stack:
        built = {}
        for name in network.urls:
            built[name] = build(network, name, retry_every=-1)
            app = create_app(built[name].service, background=built[name].background)
            stack.enter_context(serve_party(network, name, app))
        http = stack.enter_context(client_of(network, "bank-a"))
        built[CENTRAL].service.party.issue("bank-a", Money(1_000_00, "SEK"))  # type: ignore[union-attr]
        yield Served(network, built, http)


def reserve_transfer(credential: Credential, minor: int) -> bytes:
    request = ReserveTransfer(
        credential.identity.id, NOTARY_ID, os.urandom(16), Money(minor, "SEK")
    )
    return sign(request, credential).to_bytes()


def test_a_retry_within_the_window_gets_the_first_answer_and_one_after_it_moves_nothing(
    served: Served,
) -> None:
    engine = served.built["bank-a"].service.party.credential  # type: ignore[union-attr]
    body = reserve_transfer(engine, 10_00)
    before = served.reserve("bank-a")
    first = served.post("reserve-transfer", body, "move-1")
    assert first.status_code == 200
    moved = served.reserve("bank-a")
    assert moved == (before[0] - 10_00, before[1] + 10_00)

    table = schema.central_http_answers
    central_db = served.built[CENTRAL].service.party.db
    assert prune_answers(central_db, table, dt.datetime.now(dt.UTC), WEEK) == 0
    again = served.post("reserve-transfer", body, "move-1")
    assert again.content == first.content and again.headers.get("Idempotent-Replayed") == "true"
    assert served.reserve("bank-a") == moved

    # Eight days later the answer is gone; the same bytes, same key, reach the central bank
    # again, whose nonce table (never pruned) answers as the first time: nothing moves twice.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    assert prune_answers(central_db, table, later, WEEK) >= 1
    replay = served.post("reserve-transfer", body, "move-1")
    assert replay.status_code == 200 and replay.content == first.content
    assert replay.headers.get("Idempotent-Replayed") != "true"
    assert served.reserve("bank-a") == moved
    # Under a new key too.
    assert served.post("reserve-transfer", body, "move-2").content == first.content
    assert served.reserve("bank-a") == moved


def test_the_cli_prunes_every_party_and_refuses_a_bad_window(served: Served) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    pruned = prune_network(served.network, WEEK, later)
    assert set(pruned) == {CENTRAL, "bank-a"}
    runner = CliRunner()
    done = runner.invoke(cli, ["network", "prune-answers", "--data", str(served.network.folder)])
    assert done.exit_code == 0, done.output
    assert "central-bank: 0 answers pruned" in done.output
    bad = runner.invoke(
        cli, ["network", "prune-answers", "--data", str(served.network.folder), "--days", "0"]
    )
    assert bad.exit_code == 2
    assert "between 1 and 3650 days" in bad.output and "Traceback" not in bad.output


def test_network_run_passes_the_window_to_every_service(served: Served) -> None:
    from offpay.service.process import service_process

    for name in served.network.urls:
        command = service_process(served.network, name, answers_kept_days=30).command
        assert command[command.index("--answers-kept-days") + 1] == "30"
        assert "--answers-kept-days" not in service_process(served.network, name).command


def test_network_run_refuses_a_bad_window_before_anything_starts(tmp_path: Path) -> None:
    data = tmp_path / "net"
    done = CliRunner().invoke(
        cli, ["network", "run", "--data", str(data), "--answers-kept-days", "0.5"]
    )
    assert done.exit_code == 2, done.output
    assert "between 1 and 3650 days" in done.output and "Traceback" not in done.output
    assert not data.exists() or not any(data.iterdir())  # no network made, nothing started
