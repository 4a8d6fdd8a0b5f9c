"""``offpay sim sweep``: a scenario over a grid of its fields, in parallel, into one table and
plots. Registered on the ``sim`` sub-app as ``sim_app.command()(sweep)``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from offpay.sim.population.sweep import ALIASES, MAX_POINTS

_GRID_HELP = (
    "KEY=V1,V2,... (repeat for more keys). KEY is a dotted path into the scenario "
    "(liquidity.pool, limits.card_max_balance, outage.hours, ...) or an alias: "
    + "; ".join(f"{k} = {a.meaning}" for k, a in ALIASES.items())
    + f". At most {MAX_POINTS:,} points."
)


def sweep(
    scenario: Annotated[
        Path,
        typer.Argument(metavar="SCENARIO.toml", help="The scenario every grid point starts from."),
    ],
    grid: Annotated[list[str] | None, typer.Option("--grid", help=_GRID_HELP)] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for sweep.parquet, sweep.csv and the plots.")
    ] = Path("sweep"),
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Address of an existing Dask scheduler (tcp://HOST:PORT); default: a local "
            "cluster of one worker process per core."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes of the local cluster (default: one per core)."),
    ] = None,
) -> None:
    """Run a scenario over a grid of its fields on a Dask cluster (the fast executor), and
    write one table (a row per grid point: its values and every summary figure) and plots
    across the grid."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from offpay.errors import OffpayError
    from offpay.sim.population import sweep as sw
    from offpay.sim.population.sweep_plots import plot

    console = Console(stderr=True)
    try:
        axes = sw.parse_grid(grid or [])
        base = sw.read_base(scenario)
        points = sw.expand(base, axes)
        if scheduler is not None:
            sw.check_scheduler(scheduler)
        if out.exists() and not out.is_dir():
            raise sw.SweepError(f"--out {out}: not a folder", code="sweep.bad_out")
        out.mkdir(parents=True, exist_ok=True)
        console.print(
            f"{len(points)} grid points of {points[0].scenario.name!r} "
            f"({' × '.join(f'{a.key}: {len(a.values)}' for a in axes)})",
            highlight=False,
        )
        with (
            sw.dask_client(scheduler, workers) as client,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar,
        ):
            task = bar.add_task("sweep", total=len(points))

            def done(point: sw.Point, result: dict[str, Any]) -> None:
                bar.advance(task)
                if result.get("error"):
                    bar.console.print(
                        f"[red]point {escape(_where(point))} failed[/red]: "
                        f"{escape(result['error'])}"
                    )

            results = sw.run_points(points, client, done)
    except OffpayError as exc:
        typer.echo(f"error [{exc.code}] {exc.message}", err=True)
        raise typer.Exit(2) from None
    rows = sw.rows(points, results)
    meta = {
        "scenario": points[0].scenario.name,
        "grid": {a.key: list(a.texts) for a in axes},
        "paths": {a.key: ".".join(a.path) for a in axes},
    }
    written = sw.write_table(rows, out, meta)
    values = {a.key: list(dict.fromkeys(p.grid[a.key] for p in points)) for a in axes}
    written += plot(rows, [a.key for a in axes], values, out, points[0].scenario.currency)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    failed = [r for r in rows if r["error"]]
    if failed:
        console.print(f"[red]{len(failed)} of {len(rows)} points failed[/red]")
        raise typer.Exit(1)


def _where(point: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.grid.items())
