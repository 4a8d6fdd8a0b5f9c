"""Opening a database: SQLite in memory or on disk by default, PostgreSQL (or any SQLAlchemy
URL) when the URL says so, e.g. ``postgresql+psycopg://user:secret@host/offpay``; migrated to
the newest schema of its kind."""

from __future__ import annotations

from sqlalchemy import Engine, MetaData

from offpay.store.engines import DEFAULT_URL, connect, in_memory

__all__ = ["DEFAULT_URL", "connect", "open_database"]


def open_database(url: str, metadata: MetaData) -> Engine:
    """An engine for ``url`` whose database is migrated to the newest schema of ``metadata``'s
    kind (:data:`offpay.store.schema.central` or :data:`offpay.store.schema.bank`)."""
    from offpay.store import migrate  # Alembic: loaded by the first database opened, not at start

    kind = migrate.kind_of(metadata)
    engine = connect(url)
    try:
        if in_memory(url):
            migrate.copy_migrated(engine, kind)
        else:
            migrate.upgrade(engine, kind)
    except BaseException:
        engine.dispose()
        raise
    return engine
