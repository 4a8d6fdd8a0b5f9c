"""Opening a database: SQLite in memory or on disk by default, PostgreSQL (or any SQLAlchemy
URL) when the URL says so, e.g. ``postgresql+psycopg://user:secret@host/offpay``."""

from __future__ import annotations

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.pool import StaticPool

DEFAULT_URL = "sqlite+pysqlite:///:memory:"


def connect(url: str) -> Engine:
    """An engine for ``url`` with offpay's connection options, and no schema work."""
    if _in_memory(url):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def open_database(url: str, metadata: MetaData) -> Engine:
    """An engine for ``url`` whose database is migrated to the newest schema of ``metadata``'s
    kind (:data:`offpay.store.schema.central` or :data:`offpay.store.schema.bank`)."""
    from offpay.store import migrate

    kind = migrate.kind_of(metadata)
    engine = connect(url)
    try:
        if _in_memory(url):
            migrate.copy_migrated(engine, kind)
        else:
            migrate.upgrade(engine, kind)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _in_memory(url: str) -> bool:
    return url.startswith("sqlite") and (":memory:" in url or url.rstrip("/").endswith(":"))


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
