"""`offpay sim`: run a population scenario and write its report.

Every refusal (a scenario that cannot be read or breaks a rule, a folder that cannot be
written, an executor that cannot run the scenario) is one line on stderr and exit status 2,
before anything long starts where it can be checked first.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from offpay.errors import OffpayError
from offpay.sim.population.sweep_cli import sweep

if TYPE_CHECKING:
    from offpay.sim.population.run import Executor, Run
    from offpay.sim.population.scenario import Scenario

sim_app = typer.Typer(help="Population simulations: what offline payments cost a population.")
sim_app.command("sweep")(sweep)  # `offpay sim sweep`: a scenario over a grid, on Dask


@sim_app.callback()
def sim() -> None:
    """Run population scenarios of offline payments (docs/simulator.md)."""


class ExecutorChoice(StrEnum):
    """The executors of :class:`offpay.sim.population.run.Executor`, named here so that every
    other offpay command starts without loading numpy and pydantic (a test keeps them equal)."""

    FAST = "fast"
    REAL = "real"


def _refuse(exc: OffpayError) -> typer.Exit:
    typer.echo(f"error [{exc.code}] {exc.message}", err=True)
    return typer.Exit(2)


def _simulate(scenario: Scenario, executor: Executor, console: Console) -> Run:
    """Draw the events, then run them through the executor under a progress bar."""
    from offpay.sim.population.events import generate
    from offpay.sim.population.run import Run, execute

    world, events = generate(scenario)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"{scenario.name}: events", total=len(events))
        results = execute(
            scenario, world, events, executor, lambda done: bar.update(task, completed=done)
        )
        bar.update(task, completed=len(events))
    return Run(scenario, world, events, results)


@sim_app.command("run")
def run(
    scenario_file: Annotated[
        Path, typer.Argument(metavar="SCENARIO.toml", help="The scenario to run.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for the metrics, summary, plots and report (made if missing)."
        ),
    ],
    executor: Annotated[
        ExecutorChoice,
        typer.Option(
            help="fast: the protocol's rules over state arrays (millions of people); real: "
            "real cards, terminals, crypto and databases (a few hundred people)."
        ),
    ] = ExecutorChoice.FAST,
) -> None:
    """Run one scenario and write its metrics (Parquet), summary.json, plots and report.html."""
    # Imported here: matplotlib and pyarrow are slow to load for every other offpay command.
    from offpay.sim.population.describe import headlines
    from offpay.sim.population.report import prepare_folder, write_run
    from offpay.sim.population.run import Executor
    from offpay.sim.population.scenario import load_scenario

    console = Console(stderr=True)
    try:
        scenario = load_scenario(scenario_file)
        prepare_folder(out)
        simulated = _simulate(scenario, Executor(executor.value), console)
        written = write_run(simulated, out)
    except OffpayError as exc:
        raise _refuse(exc) from None
    say = Console(soft_wrap=True)
    say.print(f"Report: {written.report}", markup=False)
    for question, answer in headlines(written.summary, scenario.currency):
        say.print(f"  {question}: {answer}", markup=False)


@sim_app.command("evidence")
def evidence(
    out: Annotated[
        Path, typer.Option(help="The page to write; its plots go to evidence/ beside it.")
    ] = Path("docs/evidence.md"),
    base: Annotated[
        Path,
        typer.Option(help="The scenario every question starts from (its header names sources)."),
    ] = Path("scenarios/evidence/town.toml"),
    quick: Annotated[
        bool, typer.Option(help="Small populations: checks the command end to end in seconds.")
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(help="An existing Dask scheduler (tcp://HOST:PORT); default: this machine."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes of the local cluster.")
    ] = None,
) -> None:
    """Answer the questions the references leave open (pool size, broken devices, balance
    against tokens, what the limits cost, the liquidity rules) and write docs/evidence.md."""
    from offpay.sim.population import evidence as ev
    from offpay.sim.population import sweep as sw

    console = Console(stderr=True)
    scale = ev.QUICK if quick else ev.FULL
    try:
        if out.exists() and out.is_dir():
            raise sw.SweepError(f"--out {out}: is a folder, give the page's file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        sw.read_base(base)
        with (
            sw.dask_client(scheduler, workers) as client,
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar,
        ):
            task = bar.add_task("evidence: simulations", total=None)

            def runner(points: list) -> list:
                bar.update(task, total=(bar.tasks[0].total or 0) + len(points))
                return sw.run_points(points, client, lambda _p, _r: bar.advance(task))

            page = ev.build(base, out, scale, runner)
    except OSError as exc:
        raise _refuse(
            OffpayError(f"cannot write {out}: {exc.strerror or exc}", code="sim.unwritable")
        ) from None
    except OffpayError as exc:
        raise _refuse(exc) from None
    Console(soft_wrap=True).print(f"Wrote {page} and its plots", markup=False)
