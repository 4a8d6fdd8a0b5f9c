"""A throwaway PostgreSQL server for benchmarks and tests.

offpay runs on any SQLAlchemy URL, but a claim such as "settlement is exactly-once under
PostgreSQL" is only worth something if PostgreSQL was really there. :func:`temporary_postgres`
starts a private server (``initdb`` into a temporary folder, ``pg_ctl start`` on a free
loopback port, password authentication), hands out SQLAlchemy URLs for psycopg 3, and stops
and deletes everything afterwards. Missing server binaries are installed from the Debian
packages. Any failure to start is a :class:`DatabaseUnavailable`, never a half-started server.

    with temporary_postgres() as pg:
        url = pg.create_database("central-bank")
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from offpay.errors import OffpayError

Say = Callable[[str], None]

SERVICE_USER = "postgres"  # the unprivileged account the server runs as when we are root
SUPERUSER = "offpay"  # the database superuser of the throwaway cluster
START_TIMEOUT_S = 60
_EMPTY = "''"  # an empty setting value, as the shell behind ``pg_ctl -o`` must see it


class DatabaseUnavailable(OffpayError):
    """A database server that could not be found, installed or started."""

    code = "store.unavailable"


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def find_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: the newest Debian-packaged
    version, else the first folder on PATH that has all three."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: _version_key(p.parent.name),
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)) or (0,)


def install_binaries(say: Say = _stderr) -> Path:
    """Install the PostgreSQL server from the Debian packages (root only) and return the
    folder of its binaries."""
    if os.geteuid() != 0:
        raise DatabaseUnavailable(
            "PostgreSQL server binaries are missing and installing them needs root; "
            "install them with `apt-get install postgresql`",
            code="store.unavailable.not_installed",
        )
    if shutil.which("apt-get") is None:
        raise DatabaseUnavailable(
            "PostgreSQL server binaries are missing and this system has no apt-get",
            code="store.unavailable.not_installed",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step, command in (
        ("updating the package lists", ["apt-get", "update"]),
        (
            "installing postgresql",
            ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
        ),
    ):
        say(f"PostgreSQL: {step} (apt-get) …")
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DatabaseUnavailable(
                f"`{' '.join(command)}` failed: {_tail(done.stderr or done.stdout)}",
                code="store.unavailable.not_installed",
            )
    folder = find_binaries()
    if folder is None:
        raise DatabaseUnavailable(
            "postgresql was installed but no initdb/pg_ctl/postgres was found",
            code="store.unavailable.not_installed",
        )
    say(f"PostgreSQL: installed, binaries in {folder}")
    return folder


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service_user(say: Say) -> str | None:
    """Who runs initdb and postgres: ourselves, unless we are root (PostgreSQL refuses to run
    as root); then the ``postgres`` system user, created if missing."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        say(f"PostgreSQL: creating the system user {SERVICE_USER!r} to run the server")
        done = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DatabaseUnavailable(
                f"cannot create the {SERVICE_USER!r} user: {_tail(done.stderr)}"
            ) from None
    if shutil.which("runuser") is None and shutil.which("su") is None:
        raise DatabaseUnavailable("running as root, but neither runuser nor su is available")
    return SERVICE_USER


@dataclass
class PostgresServer:
    """A running throwaway server; :meth:`create_database` gives one SQLAlchemy URL per
    database."""

    bin_dir: Path
    data_dir: Path
    port: int
    password: str = field(repr=False)
    run_as: str | None = None
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    databases: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )

    def create_database(self, name: str) -> str:
        """Create database ``name`` (any text; quoted) and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot create database {name!r}: {exc}") from exc
        self.databases.append(name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (its connections must be closed)."""
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot drop database {name!r}: {exc}") from exc
        if name in self.databases:
            self.databases.remove(name)

    def version(self) -> str:
        """The server's version, as it reports it (e.g. ``15.18``)."""
        import psycopg

        try:
            with psycopg.connect(self._dsn("postgres")) as conn:
                row = conn.execute("SHOW server_version").fetchone()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"PostgreSQL does not answer: {exc}") from exc
        return str(row[0]).split()[0] if row else "unknown"

    def _dsn(self, database: str) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={database}"
        )

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the service user."""
        return _run(self.run_as, [str(self.bin_dir / tool), *args])


def _run(run_as: str | None, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    if run_as is not None:
        if shutil.which("runuser"):
            command = ["runuser", "-u", run_as, "--", *command]
        else:
            command = ["su", "-s", "/bin/sh", run_as, "-c", " ".join(_quote(c) for c in command)]
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, check=False, timeout=START_TIMEOUT_S * 2
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseUnavailable(f"`{command[0]}` could not run: {exc}") from exc


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@contextlib.contextmanager
def temporary_postgres(
    *,
    install: bool = True,
    say: Say = _stderr,
    settings: dict[str, str] | None = None,
) -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server, yield it, then stop it and delete its files.

    ``install``: install the server from Debian packages if its binaries are missing.
    ``settings``: extra server settings (``-c name=value``), e.g. ``{"fsync": "off"}``.
    Raises :class:`DatabaseUnavailable` when no server can be started.
    """
    bin_dir = find_binaries()
    if bin_dir is None:
        if not install:
            raise DatabaseUnavailable(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed",
                code="store.unavailable.not_installed",
            )
        bin_dir = install_binaries(say)
    run_as = _service_user(say)
    root = Path(tempfile.mkdtemp(prefix="offpay-pg-"))
    server: PostgresServer | None = None
    try:
        data_dir = root / "data"
        password = secrets.token_urlsafe(18)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if run_as is not None:
            import pwd

            entry = pwd.getpwnam(run_as)
            os.chmod(root, 0o700)
            for path in (root, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        say("PostgreSQL: initdb …")
        done = _run(
            run_as,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
        )
        if done.returncode != 0:
            raise DatabaseUnavailable(f"initdb failed: {_tail(done.stderr or done.stdout)}")
        pwfile.unlink()
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            **(settings or {}),
        }
        log = root / "server.log"
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between choosing and binding
            port = free_port()
            opts = " ".join(f"-c {k}={_quote(v) if v else _EMPTY}" for k, v in options.items())
            say(f"PostgreSQL: starting on 127.0.0.1:{port} …")
            started = _run(
                run_as,
                [
                    str(bin_dir / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "-D",
                    str(data_dir),
                    "-l",
                    str(log),
                    "-o",
                    f"-p {port} {opts}",
                ],
            )
            if started.returncode == 0:
                server = PostgresServer(bin_dir, data_dir, port, password, run_as)
                break
            last_error = _tail(log.read_text() if log.exists() else started.stderr)
        if server is None:
            raise DatabaseUnavailable(f"PostgreSQL did not start: {last_error}")
        say(f"PostgreSQL {server.version()}: running on 127.0.0.1:{server.port}")
        yield server
    finally:
        if server is not None:
            server.run("pg_ctl", "stop", "-D", str(server.data_dir), "-m", "fast", "-w")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def temporary_postgres_url(database: str = "offpay", **kwargs: object) -> Iterator[str]:
    """One database on a throwaway server: yields its SQLAlchemy URL (psycopg 3)."""
    with temporary_postgres(**kwargs) as server:  # type: ignore[arg-type]
        yield server.create_database(database)
