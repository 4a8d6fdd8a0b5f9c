"""The limits-policy options shared by ``offpay network init`` and ``offpay policy publish``:
one option per :data:`offpay.policy.LIMIT_FIELDS` entry, amounts as ``"SEK 3000"``."""

from __future__ import annotations

from typing import Annotated

import typer

from offpay.money import parse_minor

CardMaxTx = Annotated[
    int | None,
    typer.Option(help="Offline payments a card may make or receive between syncs.", min=0),
]
CardMaxBalance = Annotated[
    str | None, typer.Option(help='Most a card may hold, e.g. "SEK 3000".', show_default=False)
]
TerminalMaxPayments = Annotated[
    int | None, typer.Option(help="Offline payments a terminal may take between syncs.", min=0)
]
TerminalMaxReceived = Annotated[
    str | None, typer.Option(help='Most a terminal may take between syncs, e.g. "SEK 20000".')
]
MaxReceipts = Annotated[
    int | None,
    typer.Option(help="Funding receipts one payment may carry (liquidity receipts).", min=0),
]
BlockedWindow = Annotated[
    int | None,
    typer.Option(help="Hours a blocked card's earlier payments may still settle.", min=0),
]


def limits_given(
    card_max_offline_transactions: int | None,
    card_max_balance: str | None,
    terminal_max_offline_payments: int | None,
    terminal_max_received: str | None,
    max_receipts: int | None,
    blocked_window_hours: int | None,
    currency: str = "SEK",
) -> dict[str, int]:
    """The limits given on the command line (counts, amounts in minor units)."""
    given: dict[str, int | None] = {
        "card_max_offline_transactions": card_max_offline_transactions,
        "card_max_balance": None
        if card_max_balance is None
        else parse_minor(card_max_balance, currency),
        "terminal_max_offline_payments": terminal_max_offline_payments,
        "terminal_max_received": None
        if terminal_max_received is None
        else parse_minor(terminal_max_received, currency),
        "max_receipts": max_receipts,
        "blocked_window_hours": blocked_window_hours,
    }
    return {k: v for k, v in given.items() if v is not None}
