"""Storage on SQLite and on a real PostgreSQL: the migrations build exactly the tables the code
declares, exactly-once settlement is a database constraint, a database of the wrong kind is
refused, and a whole offline flow settles and balances on either backend."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, MetaData, Table, func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from offpay.central.bank import CentralBank
from offpay.errors import OffpayError
from offpay.sim.network import OfflineNetwork
from offpay.store import migrate, schema
from offpay.store.database import DEFAULT_URL, connect, open_database

if TYPE_CHECKING:
    from conftest import UrlFor

from conftest import ISSUED_PER_BANK, Checked

SEK = 100
METADATA = {"central": schema.central, "intermediary": schema.bank}


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


@pytest.mark.parametrize("kind", ["central", "intermediary"])
def test_migrations_build_exactly_the_declared_tables(db_url: UrlFor, kind: str) -> None:
    """A schema change without a migration fails here: autogenerate finds no difference
    between the migrated database and :mod:`offpay.store.schema`, and back down to nothing
    and up again works."""
    engine = open_database(db_url(kind), METADATA[kind])
    try:
        assert migrate.current(engine, kind) == migrate.head(kind)
        assert migrate.differences(engine, kind) == []
        assert tables(engine) == {*METADATA[kind].tables, migrate.version_table(kind)}

        migrate.downgrade(engine, kind, "base")
        assert tables(engine) == {migrate.version_table(kind)}
        assert migrate.current(engine, kind) is None
        migrate.upgrade(engine, kind)
        assert migrate.differences(engine, kind) == []
    finally:
        engine.dispose()


def test_in_memory_databases_are_migrated_copies_of_their_own() -> None:
    first = open_database(DEFAULT_URL, schema.central)
    second = open_database(DEFAULT_URL, schema.central)
    for engine in (first, second):
        assert migrate.current(engine, "central") == migrate.head("central")
        assert migrate.differences(engine, "central") == []
    with first.begin() as conn:
        conn.execute(insert(schema.institutions), {"name": "bank-a", "reserve": 1, "holdings": 1})
    assert _institutions(first) == ["bank-a"]
    assert _institutions(second) == []
    bank = open_database(DEFAULT_URL, schema.bank)
    assert migrate.current(bank, "intermediary") == migrate.head("intermediary")
    assert migrate.differences(bank, "intermediary") == []


def _institutions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.institutions.c.name)).scalars())


SETTLEMENT_TABLES = [
    ("central", schema.notary, {"commitment": b"e" * 32, "payer_institution": "bank-a",
                                "payee_institution": "bank-b", "amount": 3000,
                                "recorded_by": "bank-a"}),
    ("intermediary", schema.debits, {"device_id": "card-1", "amount": 3000,
                                     "evidence": b"e" * 32, "payment": b"p",
                                     "notarised": True, "credited": False}),
    ("intermediary", schema.credits, {"device_id": "terminal-1", "amount": 3000,
                                      "evidence": b"e" * 32}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "table", "row"), SETTLEMENT_TABLES, ids=[t.name for _, t, _ in SETTLEMENT_TABLES]
)
def test_a_second_settlement_of_a_payment_fails_in_the_database(
    db_url: UrlFor, kind: str, table: Table, row: dict[str, object]
) -> None:
    """Exactly-once is the database's job: the notary (by the payment's pseudonym), the payer
    bank's debit and the payee bank's credit (by its id) are keyed by the payment, so a second
    row for it is refused whatever the code above the database does, and the first row stays
    as it was."""
    engine = open_database(db_url(kind), METADATA[kind])
    key = "pseudonym" if table is schema.notary else "tx_id"
    tx_id = bytes(range(16))
    try:
        with engine.begin() as conn:
            conn.execute(insert(table), {key: tx_id, **row})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(table), {**row, key: tx_id, "amount": 1})
        with engine.connect() as conn:
            amounts = conn.execute(select(table.c.amount)).scalars().all()
        assert amounts == [3000]
    finally:
        engine.dispose()


def test_a_database_of_the_other_kind_is_refused(db_url: UrlFor) -> None:
    url = db_url("central-bank")
    open_database(url, schema.central).dispose()
    with pytest.raises(OffpayError) as refused:
        open_database(url, schema.bank)
    assert refused.value.code == "store.schema.wrong_kind"
    engine = connect(url)
    try:  # nothing of an intermediary was created in it
        assert tables(engine) == {*schema.central.tables, migrate.version_table("central")}
    finally:
        engine.dispose()


def test_a_database_made_without_migrations_is_refused(tmp_path: object) -> None:
    url = f"sqlite+pysqlite:///{tmp_path}/old.sqlite"
    engine = connect(url)
    schema.bank.create_all(engine)
    engine.dispose()
    with pytest.raises(OffpayError) as refused:
        open_database(url, schema.bank)
    assert refused.value.code == "store.schema.unversioned"


def test_unknown_kinds_and_tables_are_refused() -> None:
    with pytest.raises(OffpayError) as refused:
        open_database(DEFAULT_URL, MetaData())
    assert refused.value.code == "store.schema.unknown_kind"
    with pytest.raises(OffpayError) as refused:
        migrate.upgrade_url(DEFAULT_URL, "bank")
    assert refused.value.code == "store.schema.unknown_kind"


def test_services_starting_together_migrate_a_fresh_postgres_database_once(
    postgres_url: Callable[[str], str],
) -> None:
    url = postgres_url("bank-a")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_database(url, schema.bank).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert migrate.upgrade_url(url, "intermediary") == migrate.head("intermediary")


def test_offline_payment_settles_and_balances_on_each_backend(db_url: UrlFor) -> None:
    """Top-up, a card payment at another bank's terminal, the terminal's and the card's
    syncs: one notarised payment, money conserved after every step, and everything still
    there when the databases are opened again."""
    net = OfflineNetwork(url_for=db_url)
    try:
        for name in net.banks:
            net.issue(name, ISSUED_PER_BANK)
        checked = Checked(net)
        alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
        shop = net.add_merchant("Shop", "bank-b")
        checked.top_up(alice, 200 * SEK)
        checked.charge(shop, alice, 30 * SEK)
        assert net.central.notarised_count() == 0

        checked.sync(shop)
        checked.sync(alice, shop)
        assert shop.wallet == net.money(30 * SEK)
        assert alice.card_balance == alice.shadow == net.money(170 * SEK)
        assert net.central.notarised_count() == 1
        audit = net.check_conservation()
        assert audit.issued == audit.held == net.money(2 * ISSUED_PER_BANK)

        positions = net.central.positions()
        central_url = _url_of(net.central.db)
    finally:
        _dispose(net)
    # The data outlives the engines that wrote it, and opening it again migrates nothing.
    again = open_database(central_url, schema.central)
    try:
        with again.connect() as conn:
            assert conn.execute(select(func.count()).select_from(schema.notary)).scalar() == 1
        assert migrate.current(again, "central") == migrate.head("central")
        reopened = CentralBank(central_url)
        assert reopened.positions() == positions
        reopened.db.dispose()
    finally:
        again.dispose()


def _url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _dispose(net: OfflineNetwork) -> None:
    net.central.db.dispose()
    for bank in net.banks.values():
        bank.db.dispose()


def test_offpay_db_upgrade_migrates_and_refuses_the_other_kind(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from offpay.cli import app

    url = f"sqlite+pysqlite:///{tmp_path / 'bank.sqlite'}"
    runner = CliRunner()
    done = runner.invoke(app, ["db", "upgrade", "--url", url, "--kind", "intermediary"])
    assert done.exit_code == 0, done.output
    assert migrate.head("intermediary") in done.output
    again = runner.invoke(app, ["db", "upgrade", "--url", url, "--kind", "intermediary"])
    assert again.exit_code == 0 and migrate.head("intermediary") in again.output
    wrong = runner.invoke(app, ["db", "upgrade", "--url", url, "--kind", "central"])
    assert wrong.exit_code == 2
