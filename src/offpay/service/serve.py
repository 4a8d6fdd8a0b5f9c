"""Running one party as a service: ``offpay serve central-bank`` and ``offpay serve
intermediary --name NAME``, both from a network's data folder (:mod:`offpay.service.datadir`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from offpay.errors import OffpayError
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

log = logging.getLogger("offpay.service")


class AddressError(OffpayError):
    """An address a service cannot listen on (a port outside 1-65535)."""

    code = "service.bad_address"


@dataclass
class Built:
    service: Service
    background: Callable[[threading.Event], None] | None
    held: list[object]  # the folder lock and database lock, kept for the process's life


def build(network: NetworkConfig, name: str, *, retry_every: float = 30.0) -> Built:
    """The party ``name`` of ``network`` as a service, holding its folder (and, on PostgreSQL,
    its database) so that no second process serves it."""
    held: list[object] = [lock_party(network, name)]
    token = network.admin_token(name)
    if name == CENTRAL:
        central = open_central(network)
        held.append(hold_database(central.db, name))
        return Built(Service(name, central, token), None, held)
    transport = HttpNetwork({n: u for n, u in network.urls.items() if n != name})
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

    return Built(Service(name, bank, token), finish_pending, held)


def serve(
    network: NetworkConfig,
    name: str,
    *,
    host: str | None = None,
    port: int | None = None,
    retry_every: float = 30.0,
    log_level: str = "info",
    log_format: str = "text",
) -> None:
    """Serve ``name`` until interrupted; address from the network's URL unless given. Logs
    go to stderr (:mod:`offpay.service.logs`)."""
    import uvicorn

    from offpay.service.logs import configure_logging

    address = urlsplit(network.urls.get(name, ""))
    try:
        listen = port if port is not None else (address.port or 8000)
    except ValueError:  # the network's URL names a port out of range
        listen = -1
    if not 1 <= listen <= 65535:
        what = f"port {port}" if port is not None else network.urls.get(name, "")
        raise AddressError(f"{name} cannot listen on {what}: a port is 1 to 65535")
    built = build(network, name, retry_every=retry_every)
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
    )
