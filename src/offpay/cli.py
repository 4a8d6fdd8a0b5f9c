"""The `offpay` command."""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from offpay.bench.cli import bench
from offpay.cli_attack import attack
from offpay.cli_audit import audit
from offpay.cli_drive import register as register_drive
from offpay.cli_network import BanksOption, bank_names, network_disclose, network_init
from offpay.cli_privacy import privacy_app
from offpay.cli_support import (
    Interrupt,
    StoppableConsole,
    one_line_summaries,
    refusals,
    stopped,
    writable_folder,
)
from offpay.cli_tls import network_tls_certify_ca, network_tls_renew
from offpay.cli_watch import network_publish_liabilities, network_watchdog_clear
from offpay.crypto.keys import Algorithm
from offpay.service.logs import LogFormat, LogLevel
from offpay.sim.population.cli import sim_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from offpay.service.datadir import NetworkConfig
    from offpay.service.process import Event, ServiceProcess

app = typer.Typer(help="offpay: secure offline payments in a two-tier digital currency.")
app.command()(bench)  # `offpay bench`: the benchmark suite (BENCHMARKS.md)
app.add_typer(sim_app, name="sim")  # `offpay sim run`: population simulations
app.command()(attack)  # `offpay attack NAME|list|all`: the attacks of docs/threats.md
app.command()(audit)  # `offpay audit`: the independent auditor (docs/audit.md)
app.add_typer(privacy_app, name="privacy")  # `offpay privacy table|ancestry`: docs/privacy.md
register_drive(app)  # `offpay customer/card/pay/sync/books/play...`: offpay/cli_drive.py


class Scheme(StrEnum):
    """Which offline payment design the demo plays."""

    BALANCE = "balance"  # card balances and shadow wallets (e-krona report §3.4–3.7)
    TOKENS = "tokens"  # sign-once tokens (Federal Reserve FEDS 2025-105)


def _version(show: bool) -> None:
    """``--version``: the installed distribution's version, from its metadata (the one place
    the version is written is pyproject.toml)."""
    if show:
        from offpay import __version__

        typer.echo(f"offpay {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    _version_option: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the installed version of offpay and exit.",
        ),
    ] = False,
) -> None:
    """offpay: run, attack and measure an offline payment network."""


@app.command()
def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the SQLite databases go; a fresh temporary folder if omitted."),
    ] = None,
    algorithm: Annotated[
        Algorithm, typer.Option(help="Signature algorithm of every key in the network.")
    ] = Algorithm.ED25519,
    scheme: Annotated[
        Scheme,
        typer.Option(
            help="balance: the balance-based flows (e-krona report §3.4–3.7); tokens: the "
            "sign-once token scheme (FEDS 2025-105)."
        ),
    ] = Scheme.BALANCE,
    network: Annotated[
        Path | None,
        typer.Option(
            help="Play against the services of the network in this data folder (started by "
            "`offpay network run`) instead of in this process."
        ),
    ] = None,
) -> None:
    """Play every flow of an offline payment scheme step by step: the balance-based one
    (e-krona report §3.4–3.7) or, with --scheme tokens, the sign-once token one."""
    with Interrupt() as interrupt:
        # The terminal's width, COLUMNS, or 80 when the output is not a terminal.
        console = StoppableConsole(interrupt)
        try:
            from offpay.sim.demo import Demo
            from offpay.sim.token_demo import TokenDemo

            if network is not None:
                code = _demo_against(network, scheme, console)
                interrupt.check()
                raise typer.Exit(code)
            player = TokenDemo if scheme is Scheme.TOKENS else Demo
            if data_dir is not None:
                with refusals():
                    writable_folder(data_dir, "--data-dir")
            with tempfile.TemporaryDirectory(prefix="offpay-demo-") as tmp:
                folder = data_dir if data_dir is not None else Path(tmp)
                _clear_demo_databases(folder, console)
                ok = player(console, folder, algorithm).run()
                interrupt.check()
        except KeyboardInterrupt:
            stopped()
    raise typer.Exit(0 if ok else 1)


def _demo_against(folder: Path, scheme: Scheme, console: Console) -> int:
    """The demo against running services: phones and PoS apps here, over HTTP."""
    from offpay.cli_support import UsageError
    from offpay.errors import OffpayError
    from offpay.service.remote import require_services
    from offpay.service.remote_tokens import RemoteTokenNetwork
    from offpay.sim.demo import Demo
    from offpay.sim.token_demo import TokenDemo

    with refusals():
        config = _network(folder)
        if not {"bank-a", "bank-b"} <= set(config.banks):
            raise UsageError("the demo needs intermediaries named bank-a and bank-b")
        require_services(config)
    remote = RemoteTokenNetwork(config)
    try:
        player = TokenDemo if scheme is Scheme.TOKENS else Demo
        return 0 if player(console, folder, config.algorithm, net=remote).run() else 1
    except OffpayError as exc:
        console.print(f"[red]{exc}[/red] (are the services running? `offpay network run`)")
        return 1
    finally:
        remote.close()


DEMO_DATABASES = ("central-bank", "bank-a", "bank-b")


def _clear_demo_databases(folder: Path, console: Console) -> None:
    """A demo builds a new network with new keys; databases of an earlier demo in the same
    folder would hold the old network's signed records, so they are replaced, and said so."""
    for name in DEMO_DATABASES:
        for suffix in (".sqlite", ".sqlite-wal", ".sqlite-shm"):
            path = folder / f"{name}{suffix}"
            if path.exists():
                if suffix == ".sqlite":
                    console.print(f"replacing the earlier demo database {path.name}")
                path.unlink()


# ---- services ---------------------------------------------------------------------------------

serve_app = typer.Typer(help="Run one party of a network as an HTTP service (OpenAPI at /docs).")
network_app = typer.Typer(help="A network of services on this machine: set it up, run it.")
app.add_typer(serve_app, name="serve")
app.add_typer(network_app, name="network")

DataOption = Annotated[
    Path, typer.Option("--data", help="The network's data folder (see `offpay network init`).")
]
HostOption = Annotated[
    str | None, typer.Option(help="Address to listen on; the network's URL by default.")
]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on; the network's URL's.")]
LiabilitiesEveryOption = Annotated[
    float,
    typer.Option(
        min=0,
        help="Seconds between an intermediary's automatic liabilities publications (issue 18); "
        "0: only when an operator publishes (`offpay network publish-liabilities`).",
    ),
]
InsecureHttpOption = Annotated[
    bool,
    typer.Option(
        "--insecure-http",
        help="Serve PLAIN HTTP (a network made with `network init --insecure-http`): local "
        "debugging only, warned at every start. Without it, services speak TLS 1.3 only.",
    ),
]
LogLevelOption = Annotated[
    LogLevel, typer.Option("--log-level", help="The least severe log records written.")
]
LogFormatOption = Annotated[
    LogFormat,
    typer.Option("--log-format", help="text: one readable line per record; json: JSON lines."),
]


def _network(data: Path) -> NetworkConfig:
    """The network in ``data``, or a readable complaint and exit status 2."""
    from offpay.service.datadir import load_network

    with refusals():
        return load_network(data)


AnswersKeptOption = Annotated[
    float,
    typer.Option(
        "--answers-kept-days",
        help="Days a first answer is kept for retries under its Idempotency-Key, then pruned "
        "(1 to 3650; docs/retention.md).",
    ),
]


def _serve(
    data: Path,
    name: str,
    host: str | None,
    port: int | None,
    retry_every: float,
    logs: tuple[LogLevel, LogFormat],
    insecure_http: bool = False,
    liabilities_every: float = 0.0,
    answers_kept_days: float = 7.0,
) -> None:
    from offpay.service.serve import serve

    with refusals():
        serve(
            _network(data),
            name,
            host=host,
            port=port,
            retry_every=retry_every,
            log_level=logs[0],
            log_format=logs[1],
            insecure_http=insecure_http,
            liabilities_every=liabilities_every,
            answers_kept_days=answers_kept_days,
        )


@serve_app.command("central-bank")
def serve_central_bank(
    data: DataOption,
    host: HostOption = None,
    port: PortOption = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    insecure_http: InsecureHttpOption = False,
    answers_kept_days: AnswersKeptOption = 7.0,
) -> None:
    """The central bank: issuance, reserves, the notary, revocation, the liquidity pool."""
    logs = (log_level, log_format)
    _serve(
        data,
        "central-bank",
        host,
        port,
        0,
        logs,
        insecure_http,
        answers_kept_days=answers_kept_days,
    )


@serve_app.command("intermediary")
def serve_intermediary(
    name: Annotated[str, typer.Option(help="Which intermediary of the network, e.g. bank-a.")],
    data: DataOption,
    host: HostOption = None,
    port: PortOption = None,
    retry_every: Annotated[
        float,
        typer.Option(
            help="Seconds between retries of half-done settlements; 0: at start only; "
            "below 0: never (tests)."
        ),
    ] = 30.0,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    insecure_http: InsecureHttpOption = False,
    liabilities_every: LiabilitiesEveryOption = 0.0,
    answers_kept_days: AnswersKeptOption = 7.0,
) -> None:
    """An intermediary: its customers' wallets, its devices' syncs, payment requests."""
    _serve(
        data,
        name,
        host,
        port,
        retry_every,
        (log_level, log_format),
        insecure_http,
        liabilities_every,
        answers_kept_days,
    )


network_app.command("init")(network_init)  # offpay/cli_network.py
network_app.command("tls-renew")(network_tls_renew)  # offpay/cli_tls.py
network_app.command("tls-certify-ca")(network_tls_certify_ca)
network_app.command("watchdog-clear")(network_watchdog_clear)  # offpay/cli_watch.py
network_app.command("publish-liabilities")(network_publish_liabilities)
network_app.command("disclose")(network_disclose)  # offpay/cli_network.py


@network_app.command("prune-answers")
def network_prune_answers(
    data: DataOption,
    days: Annotated[
        float, typer.Option("--days", help="Keep the answers of the last DAYS days (1 to 3650).")
    ] = 7.0,
) -> None:
    """Delete every party's first answers to messages older than --days (each service also
    does this hourly); back-office answers and message nonces are kept (docs/retention.md)."""
    from offpay.service.retention import prune_network, retention_window

    with refusals():
        pruned = prune_network(_network(data), retention_window(days))
    for name, count in pruned.items():
        typer.echo(f"{name}: {count} answers pruned")


@network_app.command("run")
def network_run(
    data: DataOption,
    banks: BanksOption = None,
    insecure_http: InsecureHttpOption = False,
    console_port: Annotated[
        int | None,
        typer.Option(help="Port of the operator console and device lab (default: a free one)."),
    ] = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
    liabilities_every: LiabilitiesEveryOption = 0.0,
    answers_kept_days: AnswersKeptOption = 7.0,
) -> None:
    """Start the central bank and every intermediary of the network in --data as processes on
    loopback ports (creating the network first, with --banks, if the folder is empty), then
    the operator console and device lab; stop with Ctrl-C. Services speak TLS 1.3
    (docs/tls.md) unless --insecure-http; each logs to its folder's service.log."""
    import signal
    import threading

    from offpay.console.serve import console_running
    from offpay.errors import OffpayError
    from offpay.service.datadir import NETWORK_FILE, init_network, lock_network
    from offpay.service.process import running
    from offpay.service.retention import retention_window
    from offpay.service.serve import check_scheme

    console = Console(soft_wrap=True)  # a URL or a command line is never broken in two
    with refusals():
        retention_window(answers_kept_days)  # a bad window is refused before anything starts
        if not (data / NETWORK_FILE).exists():
            init_network(data, bank_names(banks), insecure_http=insecure_http)
        network = _network(data)
        for name in network.urls:
            check_scheme(network, name, insecure_http)
        # Refused before anything starts: a network already running keeps its logs untouched.
        held = lock_network(network)
    with held:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            if insecure_http:
                console.print(
                    "[bold red]WARNING: the network serves PLAIN HTTP: anyone on the path "
                    "reads every payment. Local debugging only (docs/tls.md).[/bold red]"
                )
            logs = ("--log-level", log_level.value, "--log-format", log_format.value)
            with (
                running(
                    network,
                    report=_say_service(console),
                    insecure_http=insecure_http,
                    log_options=logs,
                    liabilities_every=liabilities_every,
                    answers_kept_days=answers_kept_days,
                ) as processes,
                console_running(network, console_port) as web,
            ):
                console.print(
                    f"\n{len(processes)} services running; play the demo against them:\n"
                    f"  offpay demo --network {network.folder}\n"
                    f"operator console and device lab: {web.url}  (lab: {web.url}/lab)\n"
                    "stop with Ctrl-C"
                )
                try:
                    while not stop.wait(1.0):
                        dead = [p for p in (*processes.values(), web) if not p.running]
                        if dead:
                            for process in dead:
                                console.print(
                                    f"[red]{process.name} stopped by itself; its log: "
                                    f"{process.log_path}[/red]"
                                )
                            raise typer.Exit(1)
                    console.print("stopping the network (SIGTERM)")
                except KeyboardInterrupt:
                    console.print("stopping the network (Ctrl-C)")
        except KeyboardInterrupt:  # during the start: the services started are stopped
            pass
        except OffpayError as exc:  # a service that did not start: its log's tail says why
            Console(stderr=True).print(f"[red]{exc.message}[/red]")
            raise typer.Exit(2) from None
        finally:
            console.print("the network has stopped: no service of it is running")


@app.command("console")
def console_serve(
    data: DataOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """The operator console and device lab of a running network (`offpay network run`
    starts it for you): pages at /, the lab at /lab."""
    from offpay.console.serve import serve_console

    with refusals():
        network = _network(data)
    serve_console(network, host=host, port=port)


def _say_service(console: Console) -> Callable[[Event, ServiceProcess], None]:
    """One line per service as `offpay network run` starts and stops it."""

    from offpay.service.process import Event

    def say(event: Event, process: ServiceProcess) -> None:
        if event is Event.STARTING:
            console.print(f"starting {process.name} at {process.url} …", highlight=False)
        elif event is Event.READY:
            console.print(
                f"{process.name}: {process.url}  (API docs: {process.url}/docs)", highlight=False
            )
        elif event is Event.STOPPED:
            console.print(f"stopped {process.name}", highlight=False)

    return say


db_app = typer.Typer(
    help="Databases: bring a central bank's or an intermediary's schema up to date."
)
app.add_typer(db_app, name="db")


class DatabaseKind(StrEnum):
    CENTRAL = "central"
    INTERMEDIARY = "intermediary"


@db_app.command("upgrade")
def db_upgrade(
    url: Annotated[str, typer.Option(help="SQLAlchemy URL of the database.")],
    kind: Annotated[DatabaseKind, typer.Option(help="Whose database it is.")],
) -> None:
    """Run the Alembic migrations of a central bank's or an intermediary's database at --url
    (services do this themselves when they open their database; this is for operators
    upgrading ahead)."""
    from offpay.store.migrate import upgrade_url

    with refusals():
        revision = upgrade_url(url, kind.value)
    Console().print(f"{kind.value} database at revision {revision}")


one_line_summaries(app)
