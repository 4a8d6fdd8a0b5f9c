"""The `offpay` command."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from offpay.crypto.keys import Algorithm

app = typer.Typer(help="offpay: secure offline payments in a two-tier digital currency.")


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
) -> None:
    """Play every balance-based flow (e-krona report §3.4–3.7) step by step."""
    from offpay.sim.demo import Demo

    console = Console() if Console().is_terminal else Console(width=120)
    with tempfile.TemporaryDirectory(prefix="offpay-demo-") as tmp:
        folder = data_dir if data_dir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ok = Demo(console, folder, algorithm).run()
    raise typer.Exit(0 if ok else 1)
