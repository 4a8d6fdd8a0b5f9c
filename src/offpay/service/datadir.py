"""A served network's data folder: who is where, and each party's keys and database.

    DIR/network.json          currency, algorithm, liquidity policy, the first policy's
                              limits, the root certificate, the minting chain, and each
                              party's URL
    DIR/drive/                people, shops and their devices driven by `offpay pay` & co.
                              (offpay.drive.workbench)
    DIR/central-bank/         root.key, mint.key (+ .chain.pem), admin-token, party.json,
                              tls-ca.key (the network's TLS CA), tls.key and tls.pem
    DIR/bank-a/               ca.key (+ .chain.pem), admin-token, party.json, tls.key, tls.pem
    DIR/tls/                  ca.pem (the TLS CA clients trust), crl.pem
                              (offpay.service.tls_pki)
    DIR/.gitignore            ``*``: keys and tokens are never committed by accident

``party.json`` names the party's database (an embedded SQLite file in its folder unless told
otherwise). :func:`init_network` does what the central bank's offices do once: it creates the
root, admits each intermediary (certifies its CA key and opens its reserve account) and writes
the folder. :func:`open_central` and :func:`open_intermediary` rebuild a party from the folder,
so a service restarts from the same database and the same keys.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
import socket
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.crypto.keys import Algorithm, Signer
from offpay.crypto.pki import Authority, Credential
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.service.keystore import load_credential, save_credential
from offpay.service.tls_pki import issue_network_tls
from offpay.transport.memory import MemoryNetwork
from offpay.wire.messages import Liquidity

CENTRAL = "central-bank"
NETWORK_FILE = "network.json"
GITIGNORE = "# offpay network data: keys, admin tokens, databases. Never commit them.\n*\n"
RUN_LOCK = "run.lock"  # held by `offpay network run` while it runs


class DataDirError(OffpayError):
    """A data folder that is missing, incomplete, already initialised, or in use."""

    code = "service.data_dir"


@dataclass(frozen=True)
class NetworkConfig:
    """What every party of a served network knows about it."""

    folder: Path
    currency: str
    algorithm: Algorithm
    liquidity: Liquidity
    root_der: bytes
    mint_chain: tuple[bytes, ...]
    urls: Mapping[str, str]  # party name -> base URL
    limits: Mapping[str, int] = dataclasses.field(default_factory=dict)  # first policy's

    @property
    def banks(self) -> tuple[str, ...]:
        return tuple(name for name in self.urls if name != CENTRAL)

    def party_folder(self, name: str) -> Path:
        if name not in self.urls:
            known = ", ".join(self.urls)
            raise DataDirError(f"no party named {name!r} in this network (it has {known})")
        return self.folder / name

    def database(self, name: str) -> str:
        return str(_read_json(self.party_folder(name) / "party.json")["database"])

    def admin_token(self, name: str) -> str:
        return (self.party_folder(name) / "admin-token").read_text().strip()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (it may be taken before it is used: good enough for
    loopback services started right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def init_network(
    folder: Path,
    banks: Iterable[str] = ("bank-a", "bank-b"),
    *,
    host: str = "127.0.0.1",
    urls: Mapping[str, str] | None = None,
    databases: Mapping[str, str] | None = None,
    currency: str = "SEK",
    algorithm: Algorithm = Algorithm.ED25519,
    liquidity: Liquidity = Liquidity.QUEUE,
    pool: int = 0,
    limits: Mapping[str, int] | None = None,
    insecure_http: bool = False,
) -> NetworkConfig:
    """Create a new network in ``folder``: keys, certificates, admission of every intermediary,
    each party's database and URL (free loopback ports unless ``urls`` says otherwise), and
    each party's TLS certificate for its URL's host. URLs are ``https://`` unless
    ``insecure_http`` (local debugging only: the services then refuse to start without
    ``--insecure-http``)."""
    folder = folder.resolve()
    if folder.exists() and not folder.is_dir():
        raise DataDirError(f"{folder} is a file, not a folder")
    if (folder / NETWORK_FILE).exists():
        raise DataDirError(f"{folder} already holds a network; use it or choose a new folder")
    banks = tuple(banks)
    if not banks:
        raise DataDirError(
            "a network needs at least one intermediary (--banks bank-a --banks bank-b)"
        )
    names = (CENTRAL, *banks)
    if len(set(names)) != len(names) or any(not _valid_name(n) for n in names):
        raise DataDirError("party names must be distinct, lower-case letters, digits and '-'")
    try:  # before anything is written: a folder that cannot be made is refused untouched
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise DataDirError(f"{folder} cannot be used: {exc.strerror or exc}") from None
    # Private keys, admin tokens and databases: never committed, wherever the folder is made.
    (folder / ".gitignore").write_text(GITIGNORE)
    urls = dict(urls or {})
    scheme = "http" if insecure_http else "https"
    for name in names:
        urls.setdefault(name, f"{scheme}://{host}:{free_port(host)}")
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
        database = (databases or {}).get(name) or _sqlite_url(folder / name / f"{name}.sqlite")
        # The database URL may carry a password: owner-only, like the keys and the token.
        _write_json(folder / name / "party.json", {"database": database}, private=True)
        _write_private(folder / name / "admin-token", secrets.token_urlsafe(32) + "\n")
    central = CentralBank(
        _read_json(folder / CENTRAL / "party.json")["database"],
        currency=currency,
        algorithm=algorithm,
    )
    try:
        save_credential(folder / CENTRAL, "root", central.root.credential)
        save_credential(folder / CENTRAL, "mint", central.mint.credential)
        for bank in banks:
            signer = Signer.generate(algorithm)
            save_credential(
                folder / bank, "ca", Credential(signer, central.admit(bank, signer.public_key))
            )
        issue_network_tls(
            folder,
            central.root.credential,
            {name: urls[name] for name in names},
            CENTRAL,
            dt.datetime.now(dt.UTC),
        )
        if pool:
            central.fund_pool(Money(pool, currency))
        mint_chain = central.mint.chain
    finally:
        central.db.dispose()
    _write_json(
        folder / NETWORK_FILE,
        {
            "currency": currency,
            "algorithm": algorithm.value,
            "liquidity": liquidity.value,
            "root": _b64(central.root_der),
            "mint_chain": [_b64(der) for der in mint_chain],
            "urls": {name: urls[name] for name in names},
            "limits": dict(limits or {}),
        },
    )
    return load_network(folder)


def load_network(folder: Path) -> NetworkConfig:
    folder = folder.resolve()
    data = _read_json(folder / NETWORK_FILE)
    try:
        return NetworkConfig(
            folder=folder,
            currency=str(data["currency"]),
            algorithm=Algorithm(data["algorithm"]),
            liquidity=Liquidity(data["liquidity"]),
            root_der=base64.b64decode(data["root"]),
            mint_chain=tuple(base64.b64decode(d) for d in data["mint_chain"]),
            urls={str(k): str(v) for k, v in data["urls"].items()},
            limits={str(k): int(v) for k, v in dict(data.get("limits") or {}).items()},
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise DataDirError(f"{folder / NETWORK_FILE} is incomplete or damaged: {exc}") from None


def open_central(network: NetworkConfig) -> CentralBank:
    """The central bank with its own root and minting keys, on its own database."""
    folder = network.party_folder(CENTRAL)
    return CentralBank(
        network.database(CENTRAL),
        currency=network.currency,
        algorithm=network.algorithm,
        root=Authority(load_credential(folder, "root")),
        mint=load_credential(folder, "mint"),
    )


def open_intermediary(network: NetworkConfig, name: str, transport: MemoryNetwork) -> Intermediary:
    """Intermediary ``name`` with its CA key, on its own database, reaching the others through
    ``transport``. Its engine key is new at every start, certified by the same CA, so what it
    signed before still verifies."""
    if name == CENTRAL:
        raise DataDirError("the central bank is not an intermediary")
    folder = network.party_folder(name)
    return Intermediary(
        name,
        Authority(load_credential(folder, "ca")),
        network.root_der,
        transport,
        url=network.database(name),
        currency=network.currency,
        algorithm=network.algorithm,
        mint_chain=network.mint_chain,
        liquidity=network.liquidity,
        limits=network.limits,
    )


def lock_party(network: NetworkConfig, name: str) -> IO[str]:
    """Hold ``name``'s folder for this process: two processes of one party on one database
    would each believe their own memory. Released when the process ends, however it ends."""
    lock = network.party_folder(name) / "lock"
    handle = _hold(lock)
    if handle is None:
        raise DataDirError(
            f"{name} is already running from {network.folder}{_pid_text(_read_pid(lock))}"
        )
    return handle


def lock_network(network: NetworkConfig) -> IO[str]:
    """Hold the whole folder for ``offpay network run``, after checking that no party of it is
    served already: a second run must leave a running network alone (its logs included)."""
    handle = _hold(network.folder / RUN_LOCK)
    if handle is None:
        raise DataDirError(
            f"the network in {network.folder} is already running (`offpay network run`"
            f"{_pid_text(_read_pid(network.folder / RUN_LOCK))}); stop it there with Ctrl-C"
        )
    for name in network.urls:
        pid = serving_pid(network, name)
        if pid is not None:
            handle.close()
            raise DataDirError(
                f"{name} of the network in {network.folder} is already running (pid {pid}); "
                "stop it first"
            )
    return handle


def serving_pid(network: NetworkConfig, name: str) -> int | None:
    """The process that holds ``name``'s folder, or None when no process serves it now."""
    lock = network.party_folder(name) / "lock"
    if not lock.exists():
        return None
    handle = _hold(lock, write_pid=False)
    if handle is not None:
        handle.close()
        return None
    return _read_pid(lock)


def _hold(path: Path, *, write_pid: bool = True) -> IO[str] | None:
    """An exclusive lock on ``path`` (with this process's id in it), or None if another process
    holds it. The file is opened without truncating it: a refused attempt leaves the holder's
    id in place."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if write_pid:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_text(pid: int | None) -> str:
    return f", pid {pid}" if pid is not None else ""


def _valid_name(name: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", name) is not None


def _sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write_json(path: Path, data: object, *, private: bool = False) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if private:
        _write_private(path, text)
    else:
        path.write_text(text)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataDirError(f"{path} is missing: run `offpay network init` first") from None
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise DataDirError(f"{path} is not a JSON object")
    return data


def hold_database(engine: Engine, name: str) -> Connection | None:
    """On PostgreSQL, also hold a session lock named after the party, so that two folders
    pointing at one database cannot both serve it; the lock goes with the connection."""
    if engine.dialect.name != "postgresql":
        return None
    conn = engine.connect()
    key = int.from_bytes(
        hashlib.sha256(f"offpay-party:{name}".encode()).digest()[:8], "big", signed=True
    )
    if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
        conn.close()
        raise DataDirError(f"{name} is already being served from this database")
    conn.commit()
    return conn
