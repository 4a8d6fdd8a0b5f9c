"""Schema migrations (Alembic), shipped inside the package and run without an alembic.ini.

Two kinds of database, two histories. The central bank's database (:data:`schema.central`)
and an intermediary's (:data:`schema.bank`) never share a database, and their schemas change
independently, so each kind has its own folder of revisions under ``migrations/`` (its Alembic
*version location*) and its own version table (``alembic_version_central``,
``alembic_version_intermediary``). One ``env.py`` serves both; :func:`config` says which
kind. A database that already carries the other kind's version table is refused
(``store.wrong_kind``) instead of being half-migrated into a mixture.

:func:`upgrade` brings a database to the newest revision of its kind. On PostgreSQL it runs in
one transaction under an advisory lock, so two services starting at once on a fresh database
migrate it once. Fresh in-memory SQLite databases (the default, opened thousands of times by
the tests) are copies of one database that Alembic migrated once per process; see
:func:`copy_migrated`.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect, text
from sqlalchemy.pool import StaticPool

from offpay.errors import OffpayError
from offpay.store import schema

Kind = Literal["central", "intermediary"]
KINDS: dict[str, MetaData] = {"central": schema.central, "intermediary": schema.bank}
MIGRATIONS = Path(__file__).with_name("migrations")
_OWNER = {"central": "the central bank's", "intermediary": "an intermediary's"}
_PG_LOCK_KEY = 0x0FF9A7  # pg_advisory_xact_lock key: one migration at a time per server


CONNECT_TIMEOUT_S = 10


class DatabaseUrlError(OffpayError):
    """A database URL that does not parse, or names a database kind offpay has no driver for."""

    code = "store.bad_url"


class SchemaError(OffpayError):
    """A database that cannot be brought to this version's schema."""

    code = "store.schema"


def version_table(kind: str) -> str:
    return f"alembic_version_{kind}"


def kind_of(metadata: MetaData) -> Kind:
    """Which kind of database ``metadata`` describes; other metadata has no migrations."""
    if metadata is schema.central:
        return "central"
    if metadata is schema.bank:
        return "intermediary"
    raise SchemaError("these tables have no migrations", code="store.schema.unknown_kind")


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise SchemaError(
            f"unknown database kind {kind!r}; expected one of {', '.join(KINDS)}",
            code="store.schema.unknown_kind",
        )
    return kind  # type: ignore[return-value]


def config(kind: str, url: str | None = None) -> Config:
    """An Alembic configuration for ``kind``, built in code: the scripts live in the package."""
    kind = _kind(kind)
    cfg = Config()
    # Config values go through ConfigParser interpolation: a literal % must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.set_main_option("version_locations", str(MIGRATIONS / kind).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("offpay.kind", kind)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head(kind: str) -> str:
    """The newest revision of ``kind``'s history."""
    revision = ScriptDirectory.from_config(config(kind)).get_current_head()
    if revision is None:
        raise SchemaError(f"no migrations for {kind!r}")
    return revision


def current(engine: Engine, kind: str) -> str | None:
    """The revision the database is at; ``None`` if Alembic never ran on it."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": version_table(kind)})
        return context.get_current_revision()


def upgrade(engine: Engine, kind: str, revision: str = "head") -> None:
    """Migrate the database to ``revision`` of ``kind``'s history (default: the newest)."""
    _migrate(engine, kind, command.upgrade, revision)


def downgrade(engine: Engine, kind: str, revision: str) -> None:
    """Migrate the database back to ``revision`` (``"base"``: no offpay tables at all)."""
    _migrate(engine, kind, command.downgrade, revision)


def _migrate(engine: Engine, kind: str, step: Callable[[Config, str], None], revision: str) -> None:
    """Run an Alembic command in one transaction on a connection handed to ``env.py``."""
    kind = _kind(kind)
    cfg = config(kind)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        _refuse_foreign(conn, kind)
        cfg.attributes["connection"] = conn
        step(cfg, revision)


def _refuse_foreign(conn: Connection, kind: Kind) -> None:
    """Refuse a database of the other kind, or one made without migrations, before touching
    it: either would fail half-way with a confusing "table exists"."""
    tables = set(inspect(conn).get_table_names())
    for other in KINDS:
        if other != kind and version_table(other) in tables:
            raise SchemaError(
                f"this is {_OWNER[other]} database, not {_OWNER[kind]}",
                code="store.schema.wrong_kind",
            )
    if version_table(kind) not in tables and tables & set(KINDS[kind].tables):
        raise SchemaError(
            f"this database has {kind} tables but no migration history (it was made by an "
            "earlier version of offpay); recreate it",
            code="store.schema.unversioned",
        )


def differences(engine: Engine, kind: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the tables in
    :mod:`offpay.store.schema`; empty when the migrations and the code agree."""
    kind = _kind(kind)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": version_table(kind), "compare_type": True}
        )
        return list(compare_metadata(context, KINDS[kind]))


def upgrade_url(url: str, kind: str) -> str:
    """Migrate the database at ``url`` to the newest ``kind`` schema; returns its revision.
    Meant for ``offpay db upgrade``."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from offpay.store.engines import connect
    from offpay.store.postgres import DatabaseUnavailable

    _kind(kind)
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            # An address that drops packets must not keep an operator waiting for minutes.
            parsed = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
        engine = connect(parsed.render_as_string(hide_password=False))
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError):
        raise DatabaseUrlError(
            "--url is not a database URL offpay can open; expected e.g. "
            "sqlite+pysqlite:///bank.sqlite or postgresql+psycopg://user@host/bank"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        try:
            with engine.connect():
                pass
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise DatabaseUnavailable(f"cannot reach the database at {shown}: {reason}") from None
        upgrade(engine, kind)
        return current(engine, kind) or ""
    finally:
        engine.dispose()


def new_revision(kind: str, message: str) -> Path:
    """Write the next revision of ``kind`` with the operations autogenerate finds between the
    current head and :mod:`offpay.store.schema` (for developers; review it before commit)."""
    kind = _kind(kind)
    folder = MIGRATIONS / kind
    numbers = [int(m.group(1)) for p in folder.glob("*.py") if (m := re.match(r"(\d+)_", p.name))]
    number = f"{max(numbers, default=0) + 1:04d}"
    engine = create_engine("sqlite+pysqlite://", poolclass=StaticPool)
    try:
        upgrade(engine, kind)
        cfg = config(kind)
        cfg.set_main_option("file_template", f"{number}_%%(slug)s")
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            script = command.revision(
                cfg, message=message, autogenerate=True, rev_id=f"{kind}_{number}"
            )
    finally:
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def run_env(context: EnvironmentContext) -> None:
    """The body of ``migrations/env.py``: migrate the connection the caller handed over in
    ``config.attributes``, or else one opened from ``sqlalchemy.url``."""
    cfg = context.config
    kind = _kind(cfg.get_main_option("offpay.kind") or "")
    options: dict[str, Any] = {
        "target_metadata": KINDS[kind],
        "version_table": version_table(kind),
        "compare_type": True,
        "render_as_batch": True,  # SQLite alters tables by copying them
    }
    if context.is_offline_mode():
        context.configure(url=cfg.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    conn = cfg.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    from offpay.store.engines import connect

    engine = connect(cfg.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            context.configure(connection=conn, **options)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


# ---- fresh in-memory SQLite ---------------------------------------------------------------------

_templates: dict[str, Engine] = {}
_templates_lock = threading.Lock()


def copy_migrated(engine: Engine, kind: str) -> None:
    """Fill the fresh in-memory SQLite database behind ``engine`` with a copy of one that
    Alembic migrated to head in this process. The copy is made by SQLite's backup API, so the
    schema is byte for byte what the migrations built, at a fraction of their cost."""
    kind = _kind(kind)
    with _templates_lock:
        template = _templates.get(kind)
        if template is None:
            template = create_engine(
                "sqlite+pysqlite://",
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
            upgrade(template, kind)
            _templates[kind] = template
        with template.connect() as source, engine.connect() as target:
            src = source.connection.dbapi_connection
            dst = target.connection.dbapi_connection
            assert isinstance(src, sqlite3.Connection) and isinstance(dst, sqlite3.Connection)
            src.backup(dst)
