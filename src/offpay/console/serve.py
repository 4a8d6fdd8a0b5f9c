"""The console as a service of its own: ``offpay console --data DIR`` serves it, ``offpay
network run`` starts it after the parties (a process like theirs, see
:mod:`offpay.service.process`). It listens on loopback only unless told otherwise: its lab
drives every device of the data folder, with the admin tokens the folder holds."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from offpay.service.datadir import NetworkConfig, free_port
from offpay.service.process import ServiceProcess

CONSOLE = "console"
DEFAULT_HOST = "127.0.0.1"


def console_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def console_process(network: NetworkConfig, port: int | None = None) -> ServiceProcess:
    """The console's process for ``network`` (not started): on ``port``, or a free one."""
    listen = port or free_port(DEFAULT_HOST)
    command = [sys.executable, "-m", "offpay", "console", "--data", str(network.folder)]
    command += ["--port", str(listen)]
    log_path = network.folder / "drive" / "console.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return ServiceProcess(CONSOLE, console_url(DEFAULT_HOST, listen), command, log_path)


@contextlib.contextmanager
def console_running(network: NetworkConfig, port: int | None = None) -> Iterator[ServiceProcess]:
    """The console started and ready; stopped on the way out, whatever happened."""
    process = console_process(network, port)
    try:
        yield process.start()
    finally:
        process.stop()


def serve_console(network: NetworkConfig, *, host: str = DEFAULT_HOST, port: int = 8080) -> None:
    """Serve the console until interrupted."""
    import uvicorn

    from offpay.console.app import create_console

    uvicorn.run(
        create_console(network),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
