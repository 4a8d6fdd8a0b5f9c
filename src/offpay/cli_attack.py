"""`offpay attack`: play the attacks of docs/threats.md outside pytest, with the same code the
tests use (:mod:`offpay.attacks`), and print what was tried, who refused or detected it, and
the loss with its bound."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from offpay.attacks.checked import DefenceFailed
from offpay.attacks.registry import ATTACKS, Attack, find, play_in_process
from offpay.attacks.report import AttackReport, FindingKind
from offpay.cli_support import Interrupt, StoppableConsole, UsageError, refusals, stopped
from offpay.errors import OffpayError
from offpay.money import format_money

LIST = "list"
ALL = "all"


class AttackScheme(StrEnum):
    """Which scheme's attacks `list` and `all` take; a named attack must be of it."""

    BALANCE = "balance"
    TOKENS = "tokens"


def attack(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME|list|all",
            help="An attack's name (see `offpay attack list`), `list`, or `all` to play each.",
        ),
    ],
    scheme: Annotated[
        AttackScheme | None,
        typer.Option(help="Only the attacks on this scheme (balance or tokens)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the reports as JSON instead of tables.")
    ] = False,
    network: Annotated[
        Path | None,
        typer.Option(
            help="Play against the services of the network in this data folder (started by "
            "`offpay network run`) instead of in this process; for the attacks that can be "
            "played over HTTP."
        ),
    ] = None,
) -> None:
    """Play an attack of docs/threats.md against an in-process network (or a running one) and
    print what was tried, what refused it or who detected it, and the loss and its bound."""
    with refusals():
        chosen = _chosen(name, scheme, network)
    if name == LIST:
        _print_list(chosen, as_json, over_http=network is not None)
        return
    with Interrupt() as interrupt:
        # The terminal's width, COLUMNS, or 80 when the output is not a terminal.
        console = StoppableConsole(interrupt)
        try:
            raise typer.Exit(_play(chosen, network, console, as_json))
        except KeyboardInterrupt:
            stopped()


def _chosen(name: str, scheme: AttackScheme | None, network: Path | None) -> list[Attack]:
    """The attacks ``name`` means, of ``scheme``; refused (exit 2) when there are none."""
    if name in (LIST, ALL):
        chosen = [a for a in ATTACKS if scheme is None or a.scheme == scheme.value]
        if network is not None and name == ALL:
            chosen = [a for a in chosen if a.over_http]
        if not chosen:
            raise UsageError("no attack of the tokens scheme can be played over HTTP")
        return chosen
    found = find(name)
    if scheme is not None and found.scheme != scheme.value:
        raise UsageError(f"{found.name} attacks the {found.scheme} scheme, not {scheme.value}")
    if network is not None and not found.over_http:
        raise UsageError(f"{found.name} cannot be played over HTTP: {found.why_not_http}")
    return [found]


def _print_list(chosen: list[Attack], as_json: bool, *, over_http: bool) -> None:
    if as_json:
        rows = [
            {
                "name": a.name,
                "scheme": a.scheme,
                "summary": a.summary,
                "over_http": a.over_http,
                "why_not_http": a.why_not_http or None,
            }
            for a in chosen
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    table.add_column("attack", no_wrap=True)
    table.add_column("scheme")
    table.add_column("what it tries")
    table.add_column("over HTTP")
    for a in chosen:
        table.add_row(a.name, a.scheme, a.summary, "yes" if a.over_http else "no")
    Console().print(table)
    if not over_http:
        Console().print("play one: offpay attack NAME; all of them: offpay attack all")


def _play(chosen: list[Attack], network: Path | None, console: Console, as_json: bool) -> int:
    """Play each attack; 0 if every defence held, 1 if one failed or a play broke off."""
    config = None
    if network is not None:
        from offpay.service.datadir import load_network

        with refusals():
            config = load_network(network)
    reports: list[AttackReport] = []
    failed = 0
    for a in chosen:
        try:
            if config is None:
                report = play_in_process(a)
            else:
                from offpay.attacks.over_http import play_over_http

                report = play_over_http(a, config)
        except DefenceFailed as exc:
            failed += 1
            console.print(
                f"[bold red]{a.name}: DEFENCE FAILED[/bold red]: {escape(str(exc))}",
                soft_wrap=True,
            )
            continue
        except OffpayError as exc:
            if config is not None and exc.code == "network.unreachable":
                with refusals():
                    raise
            failed += 1
            console.print(
                f"[red]{a.name}: the play broke off: {escape(str(exc))}[/red]", soft_wrap=True
            )
            continue
        except Exception as exc:  # a defence that crashed instead of refusing: say so, go on
            failed += 1
            console.print(
                f"[bold red]{a.name}: the play broke off[/bold red] with an unexpected "
                f"{type(exc).__name__}: {escape(str(exc))}",
                soft_wrap=True,
            )
            continue
        reports.append(report)
        if not as_json:
            _print_report(report, console)
    if as_json:
        documents = [r.as_dict() for r in reports]
        typer.echo(json.dumps(documents[0] if len(chosen) == 1 and documents else documents))
    elif len(chosen) > 1:
        console.print(
            f"\n{len(reports)} of {len(chosen)} attacks played; "
            + ("every defence held" if not failed else f"[red]{failed} failed[/red]"),
            soft_wrap=True,
        )
    return 1 if failed else 0


def _print_report(report: AttackReport, console: Console) -> None:
    console.print(
        f"\n[bold]{report.name}[/bold] ({report.scheme} scheme, {report.where})", soft_wrap=True
    )
    console.print(escape(report.title))
    console.print("[bold]tried[/bold]")
    for line in report.tried:
        console.print(f"  • {escape(line)}")
    table = Table()
    table.add_column("step", justify="right")
    table.add_column("party")
    table.add_column("what it did", no_wrap=True)
    table.add_column("code", no_wrap=True)  # whole, so that it can be searched for
    table.add_column("about", overflow="fold")
    for f in report.findings:
        colour = "green" if f.kind is FindingKind.REFUSED else "yellow"
        table.add_row(
            str(f.step), escape(f.party), f"[{colour}]{f.kind.value}[/{colour}]", f.code,
            escape(f.attempt),
        )  # fmt: skip
    if report.findings:
        console.print(table)
    else:  # the defence is in what settled, checked step by step (see what was tried)
        console.print("no party refused anything or recorded an anomaly")
    for loss in report.losses:
        console.print(
            f"loss recorded by {escape(loss.bank)} against {loss.device}: "
            f"{format_money(loss.amount)} (bound {format_money(loss.bound)}): {escape(loss.detail)}"
        )
    console.print(
        f"[bold]outcome: {report.outcome.value}[/bold]; loss {format_money(report.loss)}, "
        f"bound {format_money(report.bound)}"
        + (" (within the bound)" if report.within_bound else " [red](BEYOND THE BOUND)[/red]"),
        soft_wrap=True,
    )
    console.print(
        f"money conserved: checked {report.conservation_checks} times; issued "
        f"{format_money(report.issued)}, held {format_money(report.held)}",
        soft_wrap=True,
    )
