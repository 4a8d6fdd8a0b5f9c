"""Where the auditor reads from: each party's database, opened read-only, and the network's
root certificate that every signature must chain to.

SQLite files are opened with ``mode=ro`` and ``PRAGMA query_only``; PostgreSQL sessions with
``default_transaction_read_only`` (give the auditor a role that can only ``SELECT`` as well:
docs/audit.md). Either way a write through the auditor's connection fails in the database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from offpay.errors import OffpayError
from offpay.service.datadir import CENTRAL, DataDirError, load_network
from offpay.store.engines import in_memory


class AuditInputError(OffpayError):
    """A data folder, database URL or root certificate the auditor cannot use."""

    code = "audit.bad_input"


@dataclass(frozen=True)
class Sources:
    """The central bank's and each intermediary's database URL, and the network's root."""

    root_der: bytes
    currency: str
    central: str
    banks: Mapping[str, str]  # intermediary name -> database URL


def from_data_dir(folder: Path) -> Sources:
    """The databases and root a network's data folder names (``offpay network init``)."""
    if not (folder / "network.json").is_file():
        raise AuditInputError(f"{folder} is not a network data folder (no network.json)")
    try:
        network = load_network(folder)
        return Sources(
            network.root_der,
            network.currency,
            network.database(CENTRAL),
            {name: network.database(name) for name in network.banks},
        )
    except DataDirError as exc:
        raise AuditInputError(exc.message) from None


def from_urls(central: str, banks: list[str], root: Path, currency: str) -> Sources:
    """Explicit databases: ``banks`` as ``NAME=URL``; ``root`` the root certificate (DER or
    PEM), which the databases do not hold."""
    named: dict[str, str] = {}
    for item in banks:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise AuditInputError(f"--bank {item!r} is not NAME=URL")
        if name in named or name == CENTRAL:
            raise AuditInputError(f"--bank {name} is named twice")
        named[name] = url
    if not named:
        raise AuditInputError("name at least one intermediary's database with --bank NAME=URL")
    return Sources(read_root(root), currency, central, named)


def read_root(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditInputError(f"--root {path} cannot be read: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except ValueError:
        raise AuditInputError(f"--root {path} is not a certificate") from None


def read_only_engine(url: str) -> Engine:
    """An engine on ``url`` through which no write can succeed."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise AuditInputError(f"{url!r} is not a database URL") from None
    if in_memory(url):
        raise AuditInputError("an in-memory database cannot be audited from another process")
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.is_file():
            raise AuditInputError(f"no database file {path}")
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        engine = create_engine(
            f"sqlite+pysqlite:///{uri}&uri=true",
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_query_only)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    raise AuditInputError(f"the auditor reads SQLite and PostgreSQL, not {parsed.drivername}")


def _sqlite_query_only(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


@contextmanager
def snapshot(engine: Engine, party: str) -> Iterator[Connection]:
    """One read transaction: everything read in it is one consistent state of the party's
    books (SQLite's WAL snapshot; PostgreSQL's repeatable read)."""
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
    except OperationalError as exc:
        raise AuditInputError(f"{party}'s database cannot be read: {exc.orig}") from None
