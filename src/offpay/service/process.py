"""Services as real processes on this machine: started with ``python -m offpay serve``, ready
when their health route answers, always stopped (a process group each, so nothing is left).
Used by ``offpay network run`` and by the tests that kill a service in mid-request."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity

from offpay.errors import OffpayError
from offpay.service.datadir import CENTRAL, NetworkConfig
from offpay.service.tls import network_client

READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.1


class ServiceFailed(OffpayError):
    code = "service.not_started"


class _NotReady(Exception):
    """The service's health route did not answer yet."""


def _plain_client() -> httpx.Client:
    return httpx.Client(timeout=2.0, trust_env=False)


@dataclass
class ServiceProcess:
    name: str
    url: str
    command: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # How to ask the health route: over TLS with the party's own certificate (the central
    # bank serves no one without one).
    health_client: Callable[[], httpx.Client] = field(default=_plain_client, repr=False)

    def start(self, timeout: float = READY_TIMEOUT_S) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Ask the health route every 0.1 s until it answers; a process that exits meanwhile
        is a failed start at once, one that stays silent for ``timeout`` s is stopped."""

        def answers(client: httpx.Client) -> None:
            if self.popen is None or self.popen.poll() is not None:
                raise ServiceFailed(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                if client.get(f"{self.url}/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            raise _NotReady

        asking = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_fixed(READY_POLL_S),
            retry=tenacity.retry_if_exception_type(_NotReady),
            reraise=True,
        )
        with self.health_client() as client:
            try:
                asking(answers, client)
                return
            except _NotReady:
                pass
        self.stop()
        raise ServiceFailed(
            f"{self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.running:
            return
        self._signal(signal.SIGTERM)
        assert self.popen is not None
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, sig: signal.Signals) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        if sig == signal.SIGKILL:
            self.popen.wait()


def service_process(
    network: NetworkConfig,
    name: str,
    *,
    port: int | None = None,
    retry_every: float = 30.0,
    insecure_http: bool = False,
    log_options: tuple[str, ...] = (),
    liabilities_every: float = 0.0,
    answers_kept_days: float | None = None,
) -> ServiceProcess:
    """The process that serves ``name`` (not started yet). ``port`` overrides the port in the
    network's URL (a test may put a relay in front of a service); ``insecure_http`` serves a
    plain-HTTP network (local debugging); ``log_options`` are passed on (``--log-level``,
    ``--log-format``); ``answers_kept_days``: the retention of first answers, the service's
    default when None (docs/retention.md)."""
    command = [sys.executable, "-m", "offpay", "serve"]
    if name == CENTRAL:
        command += ["central-bank"]
    else:
        command += ["intermediary", "--name", name, "--retry-every", str(retry_every)]
        if liabilities_every > 0:
            command += ["--liabilities-every", str(liabilities_every)]
    command += ["--data", str(network.folder), *log_options]
    if answers_kept_days is not None:
        command += ["--answers-kept-days", str(answers_kept_days)]
    if insecure_http:
        command += ["--insecure-http"]
    url = network.urls[name]
    if port is not None:
        command += ["--port", str(port)]
        url = f"{url.rsplit(':', 1)[0]}:{port}"
    return ServiceProcess(
        name,
        url,
        command,
        network.folder / name / "service.log",
        health_client=lambda: network_client(network, name, timeout=2.0),
    )


class Event(StrEnum):
    """What :func:`running` tells its caller about each service."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"


def _quiet(_event: Event, _process: ServiceProcess) -> None:
    pass


@contextlib.contextmanager
def running(
    network: NetworkConfig,
    *,
    retry_every: float = 30.0,
    ports: dict[str, int] | None = None,
    report: Callable[[Event, ServiceProcess], None] = _quiet,
    insecure_http: bool = False,
    log_options: tuple[str, ...] = (),
    liabilities_every: float = 0.0,
    answers_kept_days: float | None = None,
) -> Iterator[dict[str, ServiceProcess]]:
    """The central bank, then every intermediary, each in its own process; all stopped on
    the way out (intermediaries first, the central bank last), whatever happened. ``report``
    hears of each service starting, ready, stopping and stopped."""
    ports = ports or {}
    processes: dict[str, ServiceProcess] = {}
    try:
        for name in (CENTRAL, *network.banks):
            process = service_process(
                network,
                name,
                port=ports.get(name),
                retry_every=retry_every,
                insecure_http=insecure_http,
                log_options=log_options,
                liabilities_every=liabilities_every,
                answers_kept_days=answers_kept_days,
            )
            processes[name] = process
            report(Event.STARTING, process)
            process.start()
            report(Event.READY, process)
        yield processes
    finally:
        for process in reversed(processes.values()):
            if process.popen is None:  # never started: its start failed before a process
                continue
            report(Event.STOPPING, process)
            process.stop()
            report(Event.STOPPED, process)


@contextlib.contextmanager
def serve_in_thread(
    app: Any, url: str, timeout: float = READY_TIMEOUT_S, *, tls: ssl.SSLContext | None = None
) -> Iterator[None]:
    """``app`` served by uvicorn on ``url``'s port in a thread of this process, until the
    block ends: the whole HTTP path, without the cost of a process. An ``https://`` URL needs
    the server's ``tls`` context (:func:`offpay.service.serve.listening_context`)."""
    import threading

    import uvicorn

    address = urlsplit(url)
    from offpay.service.protocol import JsonRefusalProtocol

    if (address.scheme == "https") != (tls is not None):
        raise ServiceFailed(f"{url}: an https URL is served with a TLS context, http without")

    config = uvicorn.Config(
        app,
        host=address.hostname or "127.0.0.1",
        port=address.port or 80,
        log_level="warning",
        http=JsonRefusalProtocol,
        ssl_context_factory=None if tls is None else lambda _config, _default: tls,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ServiceFailed(f"the service at {url} did not start")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
