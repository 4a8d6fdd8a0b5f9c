"""`offpay privacy`: who learns what (docs/privacy.md), from the code's own table, and how many
earlier owners a token's receiver sees, with and without renewal."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from offpay.cli_support import UsageError, refusals
from offpay.privacy import LEARNS, Party

privacy_app = typer.Typer(help="Who learns what: the privacy table and token ancestry exposure.")


@privacy_app.command("table")
def table(party: str = typer.Option("", help="Only this party's row (e.g. 'PoS app').")) -> None:
    """Every message field each party may receive (offpay.privacy.LEARNS)."""
    with refusals():
        rows = [p for p in Party if not party or p.value == party]
        if not rows:
            known = ", ".join(p.value for p in Party)
            raise UsageError(f"no party named {party!r}; one of: {known}")
        for p in rows:
            typer.echo(f"{p.value}:")
            for name in sorted(LEARNS.get(p, frozenset())):
                typer.echo(f"  {name}")


@privacy_app.command("ancestry")
def ancestry(
    tokens: int = typer.Option(20, help="Tokens withdrawn, one after another."),
    hops: int = typer.Option(12, help="Offline payments each token makes before its deposit."),
    elements: int = typer.Option(50, help="Token holders (secure elements), over two banks."),
    renew_after: list[int] = typer.Option(  # noqa: B008 - typer's way to declare an option
        [], "--renew-after", help="A renewal threshold to compare (repeatable)."
    ),
    seed: int = typer.Option(0, help="Who pays whom is drawn from this seed."),
) -> None:
    """Earlier owners (before the payer) a token's receiver sees at each offline receipt, with
    no renewal and with each --renew-after threshold (the holder renews before paying)."""
    from offpay.tokens.privacy import check_parameters, measure

    with refusals():
        thresholds: list[int | None] = [None, *renew_after]
        for t in thresholds:
            check_parameters(tokens, hops, elements, t)
        out = Table(title=f"{tokens} tokens x {hops} hops among {elements} elements (seed {seed})")
        for column in ("renewal", "receipts", "renewals", "mean", "most", "distribution"):
            out.add_column(column)
        for t in thresholds:
            m = measure(tokens, hops, elements, t, seed=seed)
            dist = " ".join(f"{k}:{v}" for k, v in m.distribution.items())
            label = "never" if t is None else f"after {t}"
            out.add_row(
                label, str(len(m.seen)), str(m.renewals), f"{m.mean:.2f}", str(m.most), dist
            )
        Console(width=160).print(out)
