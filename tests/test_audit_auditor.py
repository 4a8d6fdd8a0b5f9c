"""The independent auditor (issue 18, point 1): a separate reader of every party's database
that audits an honest network clean, reads only new rows when run again, and cannot write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.exc import DBAPIError
from tests.conftest import UrlFor

from offpay.attacks.tools import card_copy
from offpay.audit import findings as codes
from offpay.audit.auditor import audit
from offpay.audit.sources import AuditInputError, Sources, read_only_engine
from offpay.money import Money
from offpay.sim.network import OfflineNetwork, User
from offpay.store import schema


@dataclass
class Audited:
    """An honest network on real database files, and how the auditor sees it."""

    net: OfflineNetwork
    sources: Sources
    state: Path
    alice: User
    bob: User
    payments: dict[str, bytes]  # name -> signed payment

    def run(self):  # type: ignore[no-untyped-def]
        return audit(self.sources, self.state)


def paid(shop: Any, user: User, amount: Money) -> bytes:
    """A payment at ``shop``'s terminal, as the paying card keeps it (the relay carries it
    sealed to the module; the intermediaries store it in clear)."""
    shop.pos.charge(user.card.process, user.pin, amount)
    return card_copy(user)


def build(url_for: Callable[[str], str], folder: Path) -> Audited:
    """Two intermediaries; payments between them both ways and within one; top-ups, syncs
    (instructions the cards confirm) and a defund."""
    urls: dict[str, str] = {}

    def url_of(name: str) -> str:  # a PostgreSQL url_for makes a new database per call
        if name not in urls:
            urls[name] = url_for(name)
        return urls[name]

    net = OfflineNetwork(url_for=url_of)
    net.issue("bank-a", 10_000_00)
    net.issue("bank-b", 10_000_00)
    alice = net.add_user("Alice", "bank-a", online=1_000_00)
    bob = net.add_user("Bob", "bank-b", online=1_000_00)
    shop_b = net.add_merchant("Shop B", "bank-b")
    shop_a = net.add_merchant("Shop A", "bank-a")
    alice.phone.top_up(alice.pin, net.money(300_00))
    bob.phone.top_up(bob.pin, net.money(200_00))
    payments = {
        "alice->shop-b": paid(shop_b, alice, net.money(120_00)),
        "alice->shop-a": paid(shop_a, alice, net.money(30_00)),
        "bob->shop-a": paid(shop_a, bob, net.money(45_50)),
    }
    shop_b.pos.sync()
    shop_a.pos.sync()
    alice.phone.sync(alice.pin)
    bob.phone.defund(bob.pin, net.money(10_00))
    net.check_conservation()
    sources = Sources(
        net.central.root_der,
        net.currency,
        urls["central-bank"],
        {name: urls[name] for name in net.banks},
    )
    return Audited(net, sources, folder / "audit-state.sqlite", alice, bob, payments)


@pytest.fixture
def audited(db_url: UrlFor, tmp_path: Path) -> Audited:
    return build(db_url, tmp_path)


def test_an_honest_network_audits_clean(audited: Audited) -> None:
    report = audited.run()
    assert report.findings == []
    assert report.payments == 3  # each payment indexed once, from its three records
    assert report.in_flight == 0
    assert report.rows > 0


def test_a_second_run_reads_only_new_rows_and_checks_them_against_old_ones(
    audited: Audited,
) -> None:
    first = audited.run()
    again = audited.run()
    assert again.findings == []
    # the journal and instructions are read from their cursors: nothing new to read there;
    # settlement rows only within the overlap window
    assert again.rows < first.rows
    shop = audited.net.add_merchant("Late shop", "bank-b")
    shop.pos.charge(audited.alice.card.process, audited.alice.pin, audited.net.money(5_00))
    shop.pos.sync()
    third = audited.run()
    assert third.findings == []
    assert third.payments == 4


def test_the_auditor_cannot_write(audited: Audited) -> None:
    """Read-only in the database itself: SQLite's mode=ro and query_only, PostgreSQL's
    read-only transactions."""
    engine = read_only_engine(audited.sources.banks["bank-a"])
    try:
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(update(schema.accounts).values(balance=schema.accounts.c.balance + 1))
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(insert(schema.anomalies).values(kind="x", detail="x"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM accounts")).scalar_one() > 0
    finally:
        engine.dispose()
    assert audited.run().findings == []


def test_an_in_flight_payment_is_open_not_wrong(tmp_path: Path) -> None:
    """A payment debited and notarised whose payee's intermediary is unreachable is in
    flight; once it is credited the next run closes it."""
    a = build(lambda name: f"sqlite+pysqlite:///{tmp_path}/{name}.sqlite", tmp_path)
    shop = a.net.add_merchant("Cut shop", "bank-b")
    signed = shop.pos.charge(a.alice.card.process, a.alice.pin, a.net.money(7_00))
    bank_a = a.net.banks["bank-a"]
    a.net.network.cut_next("credit-request")  # bank-b is not reached
    a.alice.phone.sync(a.alice.pin)  # the payer's card uploads it: debited, notarised
    report = a.run()
    assert report.findings == []
    assert report.in_flight == 1
    bank_a.retry_pending()
    report = a.run()
    assert report.findings == [] and report.in_flight == 0
    assert signed


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+pysqlite:///:memory:",
        "not a url",
        "mysql://localhost/x",
    ],
)
def test_bad_database_urls_are_refused(url: str) -> None:
    with pytest.raises(AuditInputError):
        read_only_engine(url)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="no database file"):
        read_only_engine(f"sqlite+pysqlite:///{tmp_path}/none.sqlite")


def test_finding_codes_are_stable_and_dotted() -> None:
    names = [v for k, v in vars(codes).items() if k.isupper()]
    assert len(names) == len(set(names))
    assert all(n.startswith("audit.") for n in names)


def test_a_run_stopped_halfway_resumes_after_the_last_check_it_finished(
    audited: Audited,
) -> None:
    import sqlite3

    from offpay.audit.auditor import CHECKS, settlement_check

    def stopped(_run: object) -> list[codes.Finding]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit(audited.sources, audited.state, checks=(settlement_check, stopped))
    with sqlite3.connect(audited.state) as db:
        kept = dict(db.execute("SELECT source, position FROM cursors").fetchall())
        indexed = db.execute("SELECT count(*) FROM payments").fetchone()[0]
    assert "bank-a/journal" in kept and indexed == 3  # the settlement check's work is kept
    assert "bank-a/instructions" not in kept  # the check that never ran left nothing
    report = audit(audited.sources, audited.state, checks=CHECKS)
    assert report.findings == [] and report.payments == 3
