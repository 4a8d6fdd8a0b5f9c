"""The `offpay` command."""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from offpay.bench.cli import bench
from offpay.crypto.keys import Algorithm

app = typer.Typer(help="offpay: secure offline payments in a two-tier digital currency.")
app.command()(bench)  # `offpay bench`: the benchmark suite (BENCHMARKS.md)


class Scheme(StrEnum):
    """Which offline payment design the demo plays."""

    BALANCE = "balance"  # card balances and shadow wallets (e-krona report §3.4–3.7)
    TOKENS = "tokens"  # sign-once tokens (Federal Reserve FEDS 2025-105)


@app.callback()
def main() -> None:
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
) -> None:
    """Play every flow of an offline payment scheme step by step: the balance-based one
    (e-krona report §3.4–3.7) or, with --scheme tokens, the sign-once token one."""
    from offpay.sim.demo import Demo
    from offpay.sim.token_demo import TokenDemo

    console = Console() if Console().is_terminal else Console(width=120)
    player = TokenDemo if scheme is Scheme.TOKENS else Demo
    with tempfile.TemporaryDirectory(prefix="offpay-demo-") as tmp:
        folder = data_dir if data_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        _clear_demo_databases(folder, console)
        ok = player(console, folder, algorithm).run()
    raise typer.Exit(0 if ok else 1)


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
