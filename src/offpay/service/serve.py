"""Running one party as a service: ``offpay serve central-bank`` and ``offpay serve
intermediary --name NAME``, both from a network's data folder (:mod:`offpay.service.datadir`).

A service listens on TLS 1.3 only (:mod:`offpay.service.tls`): the central bank serves only
clients with a certificate of the network (the intermediaries, its own back office); an
intermediary serves phones and PoS apps without one, and its interbank routes only to a client
with one. Plain HTTP only for a network made with ``--insecure-http``, and only when asked again
at every start, with a warning each time.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from offpay.central.bank import CentralBank
from offpay.errors import OffpayError
from offpay.liabilities.schedule import periodic_publication
from offpay.service.app import Service, create_app
from offpay.service.client import HttpNetwork
from offpay.service.datadir import (
    CENTRAL,
    NetworkConfig,
    hold_database,
    lock_party,
    open_central,
    open_intermediary,
)
from offpay.service.protocol import JsonRefusalProtocol
from offpay.service.retention import ANSWERS_KEPT_DAYS, keep_pruning, retention_window
from offpay.service.tls import ReloadingServerTls, TlsFiles, is_tls, network_client
from offpay.service.tls_pki import load_authority, write_crl

log = logging.getLogger("offpay.service")


class AddressError(OffpayError):
    """An address a service cannot listen on (a port outside 1-65535)."""

    code = "service.bad_address"


class PlainHttpRefused(OffpayError):
    """Plain HTTP asked for by one side only: the network's URL and the command disagree."""

    code = "service.plain_http"


CRL_POLL_S = 1.0  # how often the central bank looks for newly revoked parties
CRL_RESIGN_S = 24 * 3600.0  # the CRL is good for CRL_DAYS; signed again every day

PLAIN_HTTP_WARNING = (
    "WARNING: {name} serves PLAIN HTTP at {url}: anyone on the path reads every payment. "
    "For local debugging only; a real network runs on TLS (docs/tls.md)."
)


def check_scheme(network: NetworkConfig, name: str, insecure_http: bool) -> None:
    """A service speaks plain HTTP only if its URL says so and the command asks for it too;
    one without the other is refused before anything starts."""
    url = network.urls.get(name, "")
    if is_tls(url) and insecure_http:
        raise PlainHttpRefused(
            f"{name}'s URL is {url}: --insecure-http serves only a network made with "
            "`offpay network init --insecure-http`"
        )
    if not is_tls(url) and not insecure_http:
        raise PlainHttpRefused(
            f"{name}'s URL {url} is plain HTTP: serve it only for local debugging, with "
            "--insecure-http, or make a TLS network with `offpay network init`"
        )


def warn_plain_http(name: str, url: str) -> None:
    """Said on every start of a plain-HTTP service, on stderr and in the log."""
    text = PLAIN_HTTP_WARNING.format(name=name, url=url)
    print(text, file=sys.stderr, flush=True)
    log.warning(text)


def revoked_parties(network: NetworkConfig, revoked: set[str]) -> set[str]:
    """The network's parties the central bank's revocation list names: by their name, their
    CA's id or their engine's id."""
    return {name for name in network.banks if revoked & {name, f"{name} ca", f"{name}/engine"}}


def keep_crl_current(
    network: NetworkConfig, central: CentralBank, every: float = CRL_POLL_S
) -> Callable[[threading.Event], None]:
    """The central bank's background work: whenever its revocation list names a new party,
    the TLS CA writes a new CRL, and every service refuses that party's certificate from its
    next handshake on (the services reload the CRL file when it changes)."""

    def watch(stop: threading.Event) -> None:
        written: set[str] | None = None
        signed_at = 0.0
        while not stop.is_set():
            try:
                parties = revoked_parties(network, set(central.revoked_devices()))
                # Signed again daily too: a CRL past its next update fails every handshake.
                if parties != written or time.monotonic() - signed_at > CRL_RESIGN_S:
                    write_crl(
                        network.folder,
                        CENTRAL,
                        load_authority(network.folder, CENTRAL),
                        parties,
                        dt.datetime.now(dt.UTC),
                    )
                    written, signed_at = parties, time.monotonic()
            except OffpayError as exc:
                log.error("the TLS revocation list cannot be written: %s", exc)
            except Exception:
                log.exception("the TLS revocation list cannot be written")
            stop.wait(every)

    return watch


@dataclass
class Built:
    service: Service
    background: Callable[[threading.Event], None] | None
    held: list[object]  # the folder lock and database lock, kept for the process's life


def together(
    *tasks: Callable[[threading.Event], None] | None,
) -> Callable[[threading.Event], None]:
    """Background tasks run side by side, each in its own thread, all told to stop at once."""
    running = [t for t in tasks if t is not None]

    def run(stop: threading.Event) -> None:
        threads = [threading.Thread(target=t, args=(stop,), daemon=True) for t in running]
        for thread in threads:
            thread.start()
        stop.wait()
        for thread in threads:
            thread.join(timeout=5)

    return run


def build(
    network: NetworkConfig,
    name: str,
    *,
    retry_every: float = 30.0,
    liabilities_every: float = 0.0,
    answers_kept_days: float = ANSWERS_KEPT_DAYS,
) -> Built:
    """The party ``name`` of ``network`` as a service, holding its folder (and, on PostgreSQL,
    its database) so that no second process serves it. ``liabilities_every``: seconds between
    an intermediary's automatic liabilities publications (0: on demand only). Its first answers
    are pruned after ``answers_kept_days`` (:mod:`offpay.service.retention`)."""
    window = retention_window(answers_kept_days)
    held: list[object] = [lock_party(network, name)]
    token = network.admin_token(name)
    if name == CENTRAL:
        central = open_central(network)
        held.append(hold_database(central.db, name))
        watch = keep_crl_current(network, central) if is_tls(network.urls[name]) else None
        service = Service(name, central, token)
        pruning = keep_pruning(central.db, service.store.table, window, central.clock)
        return Built(service, together(watch, pruning), held)
    transport = HttpNetwork(
        {n: u for n, u in network.urls.items() if n != name},
        client=network_client(network, name),  # its own certificate: mutual TLS
    )
    bank = open_intermediary(network, name, transport)
    held.append(hold_database(bank.db, name))

    def finish_pending(stop: threading.Event) -> None:
        """Settlements and moves a crash or a lost answer left half done are finished here,
        at start and then every ``retry_every`` seconds (0: at start only; below 0: never,
        for tests that retry by hand)."""
        while retry_every >= 0 and not stop.is_set():
            try:
                bank.retry_pending()
            except OffpayError as exc:
                log.info("pending work not finished yet: %s", exc)
            except Exception:
                log.exception("retrying pending work failed")
            if retry_every <= 0 or stop.wait(retry_every):
                return

    service = Service(name, bank, token)
    pruning = keep_pruning(bank.db, service.store.table, window, bank.clock)
    publishing = (
        periodic_publication(bank, liabilities_every, lambda: service.watchdog.alarm is not None)
        if liabilities_every > 0
        else None
    )
    return Built(service, together(finish_pending, pruning, publishing), held)


def serve(
    network: NetworkConfig,
    name: str,
    *,
    host: str | None = None,
    port: int | None = None,
    retry_every: float = 30.0,
    liabilities_every: float = 0.0,
    insecure_http: bool = False,
    log_level: str = "info",
    log_format: str = "text",
    answers_kept_days: float = ANSWERS_KEPT_DAYS,
) -> None:
    """Serve ``name`` until interrupted; address from the network's URL unless given. Logs
    go to stderr (:mod:`offpay.service.logs`)."""
    import uvicorn

    from offpay.service.logs import configure_logging

    check_scheme(network, name, insecure_http)

    address = urlsplit(network.urls.get(name, ""))
    try:
        listen = port if port is not None else (address.port or 8000)
    except ValueError:  # the network's URL names a port out of range
        listen = -1
    if not 1 <= listen <= 65535:
        what = f"port {port}" if port is not None else network.urls.get(name, "")
        raise AddressError(f"{name} cannot listen on {what}: a port is 1 to 65535")
    tls = server_tls(network, name)
    if tls is None:
        warn_plain_http(name, network.urls[name])
    built = build(
        network,
        name,
        retry_every=retry_every,
        liabilities_every=liabilities_every,
        answers_kept_days=answers_kept_days,
    )
    app = create_app(built.service, background=built.background)
    configure_logging(log_level, log_format)  # only a process that serves changes its logging
    uvicorn.run(
        app,
        host=host or address.hostname or "127.0.0.1",
        port=listen,
        log_config=None,  # uvicorn's records go through the handler set up above
        access_log=False,  # offpay.access writes the access log, with the route template
        timeout_graceful_shutdown=5,
        http=JsonRefusalProtocol,
        ssl_context_factory=None if tls is None else lambda _config, _default: tls.context,
    )


def server_tls(network: NetworkConfig, name: str) -> ReloadingServerTls | None:
    """``name``'s TLS (None for a plain-HTTP URL): the central bank serves only clients with a
    certificate of the network; an intermediary also serves phones without one."""
    if not is_tls(network.urls[name]):
        return None
    return ReloadingServerTls(TlsFiles.of(network, name), require_client=name == CENTRAL)


def listening_context(network: NetworkConfig, name: str) -> ssl.SSLContext | None:
    """The server context ``name`` listens with (None on plain HTTP), for a service served in
    a thread (:func:`offpay.service.process.serve_in_thread`)."""
    tls = server_tls(network, name)
    return None if tls is None else tls.context
