"""Issue 17, point 5: structured logs. An access-log line per request, one event line per
settlement, refusal and anomaly, JSON lines on request, ``--log-level``; from services in
threads of this process (records captured from the real handler) and from a real
``offpay serve`` process (its log file)."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert
from typer.testing import CliRunner

from conftest import client_of, network_running, serve_party
from offpay.attacks.over_http import play_over_http
from offpay.bank.engine import Intermediary
from offpay.cli import app
from offpay.service.app import create_app
from offpay.service.datadir import CENTRAL, NetworkConfig, init_network, load_network
from offpay.service.logs import LogSettingError, TextFormatter, configure_logging
from offpay.service.observe import AnomalyWatch
from offpay.service.process import service_process
from offpay.service.serve import build
from offpay.store import schema

STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


@dataclass
class Served:
    network: NetworkConfig
    http: httpx.Client
    stream: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far, each parsed as one JSON object."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """The root logger as it was: these tests reconfigure it as a service does."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore")
    loggers = [logging.getLogger(n or None) for n in names]
    kept = [(x.handlers[:], x.level, x.propagate, x.disabled) for x in loggers]
    try:
        yield
    finally:
        for logger, (handlers, level, propagate, disabled) in zip(loggers, kept, strict=True):
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    network = init_network(tmp_path_factory.mktemp("logs") / "net", ("bank-a", "bank-b"))
    stream = io.StringIO()
    with logging_restored(), contextlib.ExitStack() as stack:
        configure_logging("info", "json", stream)
        for name in network.urls:
            built = build(network, name, retry_every=-1)
            stack.enter_context(
                serve_party(network, name, create_app(built.service, background=built.background))
            )
        yield Served(network, stack.enter_context(client_of(network, CENTRAL)), stream)


def events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == event]


def test_a_cloned_card_leaves_settlement_refusal_and_anomaly_lines(served: Served) -> None:
    report = play_over_http("cloned-card", served.network)
    assert report.findings
    lines = served.lines()
    for line in lines:  # every line is one record with the same frame
        assert {"time", "level", "logger", "message"} <= set(line), line

    settlements = events(lines, "settlement")
    kinds = {(s["party"], s["kind"]) for s in settlements}
    assert ("bank-a", "card-session") in kinds and (CENTRAL, "reserve-transfer") in kinds
    for s in settlements:
        assert s["logger"] == "offpay.events" and s["level"] == "INFO"
        assert s["status"] == 200 and s["duration_ms"] >= 0
        assert s["sender"] and len(s["nonce"]) == 32  # who sent it, and which request

    anomalies = events(lines, "anomaly")
    assert anomalies, "the clone was detected, so an anomaly was recorded"
    for a in anomalies:
        assert a["level"] == "WARNING" and a["party"] in served.network.banks
        assert a["kind"] and a["detail"]
    # Each anomaly the books hold was logged once, by the intermediary that recorded it.
    for bank in served.network.banks:
        books = served.http.get(
            f"{served.network.urls[bank]}/v1/admin/books",
            headers={"Authorization": f"Bearer {served.network.admin_token(bank)}"},
        ).json()
        logged = sorted(
            (a["kind"], a["device"], a["detail"]) for a in anomalies if a["party"] == bank
        )
        assert logged == sorted((a["kind"], a["device"], a["detail"]) for a in books["anomalies"])


def test_the_revocation_that_follows_is_a_warning_line_at_the_central_bank(
    served: Served,
) -> None:
    """The cloned card (previous test, or played here) is revoked: the intermediary asks the
    central bank, whose log names who asked."""
    revocations = events(served.lines(), "revocation")
    if not revocations:
        play_over_http("cloned-card", served.network)
        revocations = events(served.lines(), "revocation")
    assert revocations
    for r in revocations:
        assert r["party"] == CENTRAL and r["level"] == "WARNING"
        assert r["kind"] == "revoke-device" and r["sender"].endswith("/engine")
    revoked = served.http.get(
        f"{served.network.urls[CENTRAL]}/v1/admin/revoked",
        headers={"Authorization": f"Bearer {served.network.admin_token(CENTRAL)}"},
    ).json()["devices"]
    assert len(revoked) == len(revocations)


def test_a_refusal_line_names_the_code_the_sender_got(served: Served) -> None:
    key = uuid.uuid4().hex
    answer = served.http.post(
        f"{served.network.urls['bank-b']}/v1/messages/terminal-upload",
        content=b"\x01\x02",
        headers={"Content-Type": "application/cbor", "Idempotency-Key": key},
    )
    assert answer.status_code == 400
    (refusal,) = [
        r
        for r in events(served.lines(), "refusal")
        if r["party"] == "bank-b" and r["sender"] is None
    ]
    assert refusal["kind"] == "terminal-upload"
    assert refusal["code"] == answer.json()["code"]
    assert refusal["status"] == 400 and refusal["level"] == "INFO"


def test_every_request_has_an_access_line_with_its_route_template(served: Served) -> None:
    tx = uuid.uuid4().hex
    url = served.network.urls[CENTRAL]
    served.http.get(f"{url}/v1/admin/payments/{tx}")  # no token: 401
    (line,) = [
        r
        for r in served.lines()
        if r["logger"] == "offpay.access" and r.get("path") == f"/v1/admin/payments/{tx}"
    ]
    assert line["route"] == "/v1/admin/payments/{pseudonym}"  # the notary knows no payment id
    assert line["http_method"] == "GET" and line["status"] == 401
    assert line["party"] == CENTRAL and line["duration_ms"] >= 0
    assert line["client"].startswith("127.0.0.1:")


def test_the_log_level_drops_what_is_below_it() -> None:
    stream = io.StringIO()
    with logging_restored():
        configure_logging("warning", "text", stream)
        logging.getLogger("offpay.access").info("request", extra={"route": "/x"})
        logging.getLogger("offpay.events").warning("anomaly", extra={"kind": "clone"})
    (line,) = stream.getvalue().splitlines()
    assert " WARNING offpay.events anomaly kind=clone" in line


def test_text_lines_carry_the_fields_as_key_value_pairs() -> None:
    record = logging.LogRecord("offpay.events", logging.INFO, "", 0, "refusal", (), None)
    record.__dict__.update({"kind": "notarise", "code": "wire.bad", "detail": "two words"})
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert line.endswith(
        "INFO offpay.events refusal kind=notarise code=wire.bad detail='two words'"
    )


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(lambda k: k not in STANDARD),
        st.text(max_size=40),
        max_size=6,
    )
)
def test_a_text_line_is_one_line_whatever_the_fields_hold(fields: dict[str, str]) -> None:
    record = logging.LogRecord("offpay.events", logging.INFO, "", 0, "event", (), None)
    record.__dict__.update(fields)
    line = TextFormatter().format(record)
    assert len(line.splitlines()) == 1
    rest = line.split(" offpay.events event", 1)[1]
    for key, value in fields.items():  # each pair in order, reading back as it was
        assert rest.startswith(f" {key}="), (rest, key)
        rest = rest[len(key) + 2 :]
        if rest[:1] in ("'", '"'):
            end = _closing(rest) + 1
            assert ast.literal_eval(rest[:end]) == value
        else:
            end = rest.find(" ") if " " in rest else len(rest)
            assert rest[:end] == value
        rest = rest[end:]
    assert rest == ""


def _closing(token: str) -> int:
    """The index of the quote that closes the repr at the start of ``token``."""
    quote, i = token[0], 1
    while token[i] != quote:
        i += 2 if token[i] == "\\" else 1
    return i


def test_an_unknown_log_setting_is_refused() -> None:
    with logging_restored(), pytest.raises(LogSettingError) as caught:
        configure_logging("loud", "text")
    assert caught.value.code == "service.bad_log_setting"
    result = CliRunner().invoke(
        app, ["serve", "central-bank", "--data", "nowhere", "--log-format", "xml"]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_offpay_serve_writes_json_lines_to_its_log(tmp_path: Path) -> None:
    network = init_network(tmp_path / "net", ("bank-a",))
    process = service_process(
        network, CENTRAL, log_options=("--log-level", "info", "--log-format", "json")
    )
    process.start()
    try:
        with client_of(network, CENTRAL) as http:
            assert http.get(f"{process.url}/metrics").status_code == 200
    finally:
        process.stop()
    lines = [json.loads(line) for line in process.log_path.read_text().splitlines()]
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # its own, as JSON too
    (scrape,) = [x for x in lines if x["logger"] == "offpay.access" and x["route"] == "/metrics"]
    assert scrape["status"] == 200 and scrape["party"] == CENTRAL


def test_offpay_network_run_passes_the_log_options_to_every_service(tmp_path: Path) -> None:
    data, run_log = tmp_path / "net", tmp_path / "run.log"
    init_network(data, ("bank-a",))
    with network_running(data, run_log, "--log-format", "json"):
        network = load_network(data)
        with client_of(network, CENTRAL) as http:
            for url in network.urls.values():
                assert http.get(f"{url}/metrics").status_code == 200
    for party in load_network(data).urls:
        lines = [json.loads(x) for x in (data / party / "service.log").read_text().splitlines()]
        scrapes = [x for x in lines if x["logger"] == "offpay.access" and x["route"] == "/metrics"]
        assert [x["party"] for x in scrapes] == [party]


def test_each_anomaly_is_reported_once_even_when_it_commits_out_of_id_order(
    tmp_path: Path,
) -> None:
    network = init_network(tmp_path / "net", ("bank-a",))
    bank = build(network, "bank-a", retry_every=-1).service.party
    assert isinstance(bank, Intermediary)

    def record(row_id: int) -> None:
        with bank.db.begin() as conn:
            conn.execute(
                insert(schema.anomalies).values(
                    id=row_id, kind="clone", device_id="card:x", tx_id=None, detail=str(row_id)
                )
            )

    record(1)
    watch = AnomalyWatch(bank)
    assert watch.new() == []  # recorded before this process looked: not repeated
    record(5)
    assert [r.id for r in watch.new()] == [5]
    record(3)  # written before 5, committed after it
    assert [r.id for r in watch.new()] == [3]
    assert watch.new() == []
    record(5 + AnomalyWatch.LOOKBACK + 10)
    record(7)
    assert [r.id for r in watch.new()] == [7, 5 + AnomalyWatch.LOOKBACK + 10]
    assert watch.new() == []
    assert AnomalyWatch(bank).new() == []  # a restart starts after them all
