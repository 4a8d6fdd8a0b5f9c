"""``offpay network init``: a new network from options and a TOML settings file (options win);
see :mod:`offpay.service.network_settings` for the keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from offpay.cli_limits import (
    BlockedWindow,
    CardMaxBalance,
    CardMaxTx,
    MaxReceipts,
    TerminalMaxPayments,
    TerminalMaxReceived,
    limits_given,
)
from offpay.cli_support import refusals
from offpay.crypto.keys import Algorithm
from offpay.wire.messages import Liquidity


def network_init(
    data: Annotated[
        Path, typer.Option("--data", help="The network's data folder (created if missing).")
    ],
    config: Annotated[
        Path | None,
        typer.Option(help="A TOML file with the same keys as these options (options win)."),
    ] = None,
    banks: Annotated[
        str | None, typer.Option(help="Intermediaries, comma-separated (default bank-a,bank-b).")
    ] = None,
    algorithm: Annotated[
        Algorithm | None,
        typer.Option(help="Signature algorithm of every key (default ed25519)."),
    ] = None,
    liquidity: Annotated[
        Liquidity | None,
        typer.Option(help="What happens when a payer's shadow wallet is short (default queue)."),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(help='The central bank\'s liquidity pool, e.g. "SEK 100000" (default none).'),
    ] = None,
    card_max_offline_transactions: CardMaxTx = None,
    card_max_balance: CardMaxBalance = None,
    terminal_max_offline_payments: TerminalMaxPayments = None,
    terminal_max_received: TerminalMaxReceived = None,
    max_receipts: MaxReceipts = None,
    blocked_window_hours: BlockedWindow = None,
) -> None:
    """Create a network in a data folder: keys, certificates, admissions, one embedded SQLite
    database per party, free loopback ports; its liquidity policy, pool and limits."""
    from offpay.service.datadir import init_network
    from offpay.service.network_settings import network_settings

    with refusals():
        options: dict[str, object] = {
            "banks": None if banks is None else [b.strip() for b in banks.split(",") if b.strip()],
            "algorithm": algorithm,
            "liquidity": liquidity,
            "pool": pool,
            **limits_given(
                card_max_offline_transactions,
                card_max_balance,
                terminal_max_offline_payments,
                terminal_max_received,
                max_receipts,
                blocked_window_hours,
            ),
        }
        settings = network_settings(config, options)
        network = init_network(
            data,
            settings.banks,
            algorithm=settings.algorithm,
            liquidity=settings.liquidity,
            pool=settings.pool,
            limits=settings.limits.given(),
        )
    for name, url in network.urls.items():
        typer.echo(f"{name}: {url}")
    typer.echo(f"liquidity {network.liquidity.value}; limits {dict(network.limits) or 'default'}")
