"""The commands that drive a network by hand, one step per command, on the network in a data
folder (``--data DIR``, in this process) or on its running services (``--network DIR``)::

    offpay issue bank-a "SEK 10000"                  the central bank issues to bank-a
    offpay customer open alice --bank bank-a          a person (--merchant: a shop)
    offpay card issue alice                           a card, personalised over the network
    offpay terminal issue shop1                       a shop's terminal module
    offpay fund alice "SEK 500"                       online wallet, from the bank's reserve
    offpay top-up alice "SEK 200"                     online wallet -> card
    offpay defund alice "SEK 50"                      card -> online wallet
    offpay pay-shop alice shop1 "SEK 25"              at the shop's terminal (PoS app)
    offpay pay alice bob "SEK 10"                     person to person, with the 6-digit code
    offpay sync alice | offpay sync shop1             a card's or a terminal's online session
    offpay lost alice                                 the card reported lost: blocked
    offpay policy publish bank-a --card-max-balance "SEK 500"
    offpay books [--party alice] [--json]             everyone's books and conservation
    offpay payment TX_ID [--json]                     one payment's settlement records
    offpay play SCRIPT.toml                           a scripted sequence of those steps

Devices and apps persist in the folder between commands (:mod:`offpay.drive.workbench`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from offpay.cli_limits import limits_given, with_limit_options
from offpay.cli_support import UsageError, refusals, stopped
from offpay.errors import OffpayError

if TYPE_CHECKING:
    from offpay.drive.workbench import Workbench

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data",
        envvar="OFFPAY_DATA",
        help="The network's data folder (`offpay network init`); run it in this process.",
    ),
]
NetworkDir = Annotated[
    Path | None,
    typer.Option(
        "--network",
        help="The data folder of a running network (`offpay network run`): drive its services.",
    ),
]
Pin = Annotated[
    str, typer.Option(envvar="OFFPAY_PIN", help="The card's PIN, as its holder types it.")
]
Name = Annotated[str, typer.Argument(help="A person or shop, by the name it was opened with.")]
Amount = Annotated[str, typer.Argument(help='An amount, e.g. "SEK 25" or "25.50".')]


PANEL = "Drive a network (docs/drive.md)"


def _console() -> Console:
    """Wide enough for the books' tables when the output is not a terminal (a file, a test)."""
    return Console(soft_wrap=True) if Console().is_terminal else Console(width=160)


class Refusal(OffpayError):
    """A step the network, a device or an app refused: its message and its code."""


def folder_of(data: Path | None, network: Path | None) -> tuple[Path, bool]:
    """The folder and whether its services are driven, or a :class:`UsageError`."""
    if network is not None:
        return network, True
    if data is not None:
        return data, False
    raise UsageError(
        "say which network: --data DIR (in this process) or --network DIR (its running "
        "services); `offpay network init --data DIR` makes one"
    )


def _drive(data: Path | None, network: Path | None, act: Callable[[Workbench], str]) -> None:
    """One step on the workbench: its outcome and the conservation line, or one line saying
    why it was refused (with the refusal's code) and exit 2."""
    from offpay.drive.workbench import workbench

    console = Console(soft_wrap=True)
    try:
        with refusals():
            folder, served = folder_of(data, network)
            with workbench(folder, served=served) as bench:
                try:
                    said = act(bench)
                except OffpayError as exc:
                    raise Refusal(f"refused: {exc.message} [{exc.code}]", code=exc.code) from None
                console.print(said, markup=False)
                console.print(bench.conservation().line(), style="dim", markup=False)
    except KeyboardInterrupt:  # the devices were saved on the way out
        stopped()


def register(app: typer.Typer) -> None:
    """Add the driving commands to ``app`` (the ``offpay`` command)."""
    customer_app = typer.Typer(help="Customers of an intermediary: people and shops.")
    card_app = typer.Typer(help="Cards, issued by a person's intermediary.")
    terminal_app = typer.Typer(help="Terminals, issued by a shop's intermediary.")
    policy_app = typer.Typer(help="An intermediary's signed, versioned limits policy.")
    app.add_typer(customer_app, name="customer", rich_help_panel=PANEL)
    app.add_typer(card_app, name="card", rich_help_panel=PANEL)
    app.add_typer(terminal_app, name="terminal", rich_help_panel=PANEL)
    app.add_typer(policy_app, name="policy", rich_help_panel=PANEL)

    @app.command("issue", rich_help_panel=PANEL)
    def issue(
        bank: Annotated[str, typer.Argument(help="The intermediary, e.g. bank-a.")],
        amount: Amount,
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """The central bank issues money into an intermediary's reserve."""
        _drive(data, network, lambda w: w.issue(bank, amount))

    @customer_app.command("open")
    def customer_open(
        name: Name,
        bank: Annotated[str, typer.Option(help="The intermediary, e.g. bank-a.")],
        merchant: Annotated[bool, typer.Option(help="A shop, not a person.")] = False,
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """Open a customer (online and shadow wallets; a shop: a merchant wallet)."""
        _drive(data, network, lambda w: w.open_customer(name, bank, merchant=merchant))

    @card_app.command("issue")
    def card_issue(
        name: Name, pin: Pin = "1234", data: DataDir = None, network: NetworkDir = None
    ) -> None:
        """A new card for a person, personalised by their intermediary with this PIN."""
        _drive(data, network, lambda w: w.issue_card(name, pin))

    @terminal_app.command("issue")
    def terminal_issue(name: Name, data: DataDir = None, network: NetworkDir = None) -> None:
        """A terminal's secure module for a shop, certified by its intermediary."""
        _drive(data, network, lambda w: w.issue_terminal(name))

    @app.command("fund", rich_help_panel=PANEL)
    def fund(name: Name, amount: Amount, data: DataDir = None, network: NetworkDir = None) -> None:
        """Fund a person's online wallet from their intermediary's reserve."""
        _drive(data, network, lambda w: w.fund(name, amount))

    @app.command("top-up", rich_help_panel=PANEL)
    def top_up(
        name: Name,
        amount: Amount,
        pin: Pin = "1234",
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """Online wallet to card, through the phone app (an online session)."""
        _drive(data, network, lambda w: w.top_up(name, amount, pin))

    @app.command("defund", rich_help_panel=PANEL)
    def defund(
        name: Name,
        amount: Amount,
        pin: Pin = "1234",
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """Card back to online wallet, through the phone app (an online session)."""
        _drive(data, network, lambda w: w.defund(name, amount, pin))

    @app.command("pay-shop", rich_help_panel=PANEL)
    def pay_shop(
        payer: Name,
        shop: Annotated[str, typer.Argument(help="The shop whose terminal charges.")],
        amount: Amount,
        pin: Pin = "1234",
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """Pay at a shop's terminal, offline: the PoS app charges the card."""
        _drive(data, network, lambda w: w.pay_shop(payer, shop, amount, pin))

    @app.command("pay", rich_help_panel=PANEL)
    def pay(
        payer: Name,
        payee: Annotated[str, typer.Argument(help="The person paid.")],
        amount: Amount,
        pin: Pin = "1234",
        payee_pin: Annotated[
            str, typer.Option(envvar="OFFPAY_PAYEE_PIN", help="The payee's PIN.")
        ] = "1234",
        code: Annotated[
            str | None,
            typer.Option(
                help="The code the payer confirms; by default the one the payee's phone shows."
            ),
        ] = None,
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """Pay a person, offline, with the 6-digit code both phones show.

        The payee's phone asks, both phones show the code, the payer's phone checks it and
        pays, the payee's card accepts."""
        _drive(data, network, lambda w: w.pay(payer, payee, amount, pin, payee_pin, code))

    @app.command("sync", rich_help_panel=PANEL)
    def sync(
        name: Name, pin: Pin = "1234", data: DataDir = None, network: NetworkDir = None
    ) -> None:
        """A card's or a terminal's online session: settle what it did offline."""
        _drive(data, network, lambda w: w.sync(name, pin))

    @app.command("lost", rich_help_panel=PANEL)
    def lost(name: Name, data: DataDir = None, network: NetworkDir = None) -> None:
        """A person reports their card lost or stolen: the intermediary blocks it."""
        _drive(data, network, lambda w: w.lost(name))

    @policy_app.command("publish")
    @with_limit_options
    def policy_publish(
        bank: Annotated[str, typer.Argument(help="The intermediary, e.g. bank-a.")],
        version: Annotated[
            int | None, typer.Option(help="Its version; the next one by default.", min=1)
        ] = None,
        data: DataDir = None,
        network: NetworkDir = None,
        *,
        limit_options: dict[str, object],
    ) -> None:
        """Sign and publish a new limits policy; devices take it at their next sync.

        The limits not given stay as in the policy in force; "none" lifts an optional one."""

        def act(w: Workbench) -> str:
            limits = limits_given(limit_options, w.currency)
            return w.publish_limits(bank, limits, version)

        _drive(data, network, act)

    @app.command("books", rich_help_panel=PANEL)
    def books(
        party: Annotated[
            str | None,
            typer.Option(help="Only this person, shop, intermediary or central-bank."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """Everyone's books, and whether money is conserved.

        Each party's wallets, shadow wallets and devices, the pending queue, anomalies,
        losses with their bounds, the pool, and the conservation line (exit 1 if broken)."""
        from offpay.drive.render import render_books
        from offpay.drive.workbench import workbench

        with refusals():
            folder, served = folder_of(data, network)
            with workbench(folder, served=served) as bench:
                record = bench.books(party)
        if as_json:
            typer.echo(json.dumps(record, indent=1))
        else:
            render_books(_console(), record)
        raise typer.Exit(0 if record["conservation"]["balanced"] else 1)

    @app.command("payment", rich_help_panel=PANEL)
    def payment(
        tx_id: Annotated[str, typer.Argument(help="The payment's id, 32 hex digits.")],
        data: DataDir = None,
        network: NetworkDir = None,
    ) -> None:
        """One payment's settlement records (JSON).

        The notary's record, and each intermediary's debit, credit and queues."""
        from offpay.drive.workbench import workbench

        with refusals():
            folder, served = folder_of(data, network)
            with workbench(folder, served=served) as bench:
                record = bench.payment(tx_id)
        typer.echo(json.dumps(record, indent=1))

    @app.command("play", rich_help_panel=PANEL)
    def play(
        script: Annotated[Path, typer.Argument(help="A TOML script of steps (docs/drive.md).")],
        data: Annotated[
            Path | None,
            typer.Option(
                "--data",
                help="Play in this process on this folder (a network is made in it from the "
                "script's [network] table if it holds none); a fresh temporary one if omitted.",
            ),
        ] = None,
        network: NetworkDir = None,
    ) -> None:
        """Play a scripted sequence of steps, each with the outcome it expects.

        Outcomes: ok or a refusal code. Exit 0 if every outcome matched, 1 if one did not,
        2 on a bad script."""
        from offpay.drive.play import load_script, play_script

        console = Console(soft_wrap=True)
        try:
            with refusals():
                parsed = load_script(script)
                matched = play_script(parsed, console, data=data, network=network)
        except KeyboardInterrupt:
            stopped()
        raise typer.Exit(0 if matched else 1)
