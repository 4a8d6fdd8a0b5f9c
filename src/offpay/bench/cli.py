"""The ``offpay bench`` command: options, progress output, and where the figures go.

A run writes its figures to a results folder (``bench-results/`` by default), never over the
repository's documents: ``BENCHMARKS.md`` and ``benchmarks.json`` change only with
``--update-docs`` (or an explicit ``--json`` / ``--markdown``), so a quick run on a busy
machine cannot replace figures measured with care.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from offpay.cli_support import UsageError, refusals

FULL_SECONDS = 3.0
FULL_OFFLINE_PAYMENTS = 1_000
FULL_PROFILE_PAYMENTS = 2_000


def parse_sizes(text: str) -> list[int]:
    """``10k,100k,1M`` or ``10000,100000`` → [10000, 100000, ...]."""
    sizes = []
    for part in text.replace("_", "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        factor = 1
        if part[-1] in "km":
            factor = 1_000 if part[-1] == "k" else 1_000_000
            part = part[:-1]
        try:
            value = int(float(part) * factor)
        except ValueError:
            raise UsageError(f"not a size: {part!r} (sizes look like 1000, 10k or 1M)") from None
        if value < 1:
            raise UsageError("sizes must be positive")
        sizes.append(value)
    if not sizes:
        raise UsageError("give at least one size")
    return sizes


def _joined(values: list[str] | None) -> str | None:
    """A repeated list option as one comma-separated text: each value may itself list several
    (``--only ceilings,offline`` as well as ``--only ceilings --only offline``)."""
    return ",".join(values) if values else None


def _one_size(text: str) -> int:
    sizes = parse_sizes(text)
    if len(sizes) != 1:
        raise UsageError("--wave: give one wave size")
    return sizes[0]


def _list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [i for i in items if i not in allowed]
    if unknown:
        raise UsageError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if not items:
        raise UsageError(f"give at least one {what}; choose from {', '.join(allowed)}")
    return items


def _people(text: str, option: str) -> int:
    """``--sim-people 1M``: one number of people."""
    sizes = parse_sizes(text)
    if len(sizes) != 1:
        raise UsageError(f"{option} {text}: give one number of people")
    return sizes[0]


def _depths(text: str) -> list[int]:
    """``--token-depths 1,10,30``: positive whole numbers of ancestors."""
    try:
        depths = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise UsageError(f"--token-depths {text}: give whole numbers, e.g. 1,10,30") from None
    if not depths or min(depths) < 1:
        raise UsageError(f"--token-depths {text}: give positive whole numbers, e.g. 1,10,30")
    return depths


def _positive(value: float | None, option: str) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{option} must be above 0, not {value:g}")


def _read_run(path: Path) -> dict[str, Any]:
    """The figures of an earlier run (``--merge``), or a one-line refusal."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--merge {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--merge {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError:
        raise UsageError(f"--merge {path} is not JSON (a file written by offpay bench)") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise UsageError(f"--merge {path} is not the figures of an offpay bench run")
    return data


def not_representative(full: bool, cores: int | None = None) -> str | None:
    """A warning for figures that must not be taken as this machine's: a quick run, or a
    machine busy with other work (load average above half its cores)."""
    cores = cores or os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    busy = load > cores / 2
    if full and not busy:
        return None
    why = []
    if not full:
        why.append("a quick run (small sizes, short timings)")
    if busy:
        why.append(f"a busy machine (load {load:.1f} on {cores} cores)")
    return (
        f"not representative: {' on '.join(why)}; publish only figures of `--full` on a "
        "quiet machine"
    )


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """A terminated run still stops its PostgreSQL server and deletes its temporary files:
    SIGTERM becomes SystemExit, which unwinds through every ``finally``."""
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bench(
    sizes: Annotated[
        list[str] | None,
        typer.Option(
            help="A backlog size to settle, e.g. 10k; repeat for more, or list them: 10k,100k,1M "
            "(default: 1000)."
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="The full run: 10k, 100k and 1M payments, longer timings."),
    ] = False,
    backends: Annotated[
        list[str] | None,
        typer.Option(
            help="A database for settlement, sqlite or postgres; repeat for both (default: both)."
        ),
    ] = None,
    algorithms: Annotated[
        list[str] | None,
        typer.Option(
            help="A signature algorithm for ceilings, offline cost, storage and tokens: ed25519, "
            "ecdsa-p256 or ml-dsa-65; repeat for more (default: all three)."
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this section: ceilings, offline, storage, tokens, settlement, "
            "profile or sim; repeat for more (default: all)."
        ),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Seconds per ceiling micro-benchmark (default 1).")
    ] = None,
    offline_payments: Annotated[
        int | None, typer.Option(help="Payments timed per offline flow (default 200).")
    ] = None,
    token_depths: Annotated[
        list[str] | None,
        typer.Option(help="A token ancestry to verify; repeat for more (default: 1, 10, 30, 100)."),
    ] = None,
    profile_payments: Annotated[
        int | None, typer.Option(help="Backlog size for the settlement profile (default 500).")
    ] = None,
    results_dir: Annotated[
        Path,
        typer.Option(
            "--results",
            help="Folder for this run's figures: one JSON file and one Markdown report, named "
            "after the time of the run.",
        ),
    ] = Path("bench-results"),
    update_docs: Annotated[
        bool,
        typer.Option(
            "--update-docs",
            help="Also write benchmarks.json and the generated section of BENCHMARKS.md (the "
            "repository's published figures).",
        ),
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    markdown_path: Annotated[
        Path | None,
        typer.Option(
            "--markdown", help="Also replace the generated section of this Markdown file."
        ),
    ] = None,
    no_markdown: Annotated[
        bool, typer.Option("--no-markdown", help="Write no Markdown at all.")
    ] = False,
    merge: Annotated[
        list[Path] | None,
        typer.Option(help="JSON files of earlier runs to report together with this one."),
    ] = None,
    report_only: Annotated[
        bool,
        typer.Option("--report-only", help="Measure nothing: report the --merge files as one run."),
    ] = False,
    sim_people: Annotated[
        str,
        typer.Option(help="People in the population simulator's country (default 1M)."),
    ] = "1M",
    sim_real_people: Annotated[
        str,
        typer.Option(help="People in the same scenario run on the real protocol (default 200)."),
    ] = "200",
    sim_scenario: Annotated[
        Path | None,
        typer.Option(
            help="Scenario of the simulator section (default scenarios/country-outage.toml, "
            "else a built-in equivalent)."
        ),
    ] = None,
    isolate: Annotated[
        bool, typer.Option(help="Settle each backlog in a fresh process (clean memory figures).")
    ] = True,
    wave: Annotated[
        str,
        typer.Option(
            help="Payments made, then settled, at a time: a big backlog is made in waves so "
            "that the simulated devices holding it fit in memory (default 10k)."
        ),
    ] = "10k",
) -> None:
    """Measure offpay against this machine's ceilings: signatures and database inserts,
    backlog settlement, offline payment cost, device storage and token verification. The
    figures go to the results folder; the published ones change only with --update-docs."""
    from rich.console import Console

    from offpay.bench import report

    console = Console() if Console().is_terminal else Console(width=160)
    with refusals():
        options = _options(
            _joined(sizes),
            full,
            _joined(backends) or "sqlite,postgres",
            _joined(algorithms) or "ed25519,ecdsa-p256,ml-dsa-65",
            _joined(only),
            seconds,
            offline_payments,
            _joined(token_depths) or "1,10,30,100",
        )
        options.profile_payments = (
            profile_payments
            if profile_payments is not None
            else (FULL_PROFILE_PAYMENTS if full else 500)
        )
        _positive(options.profile_payments, "--profile-payments")
        options.isolate = isolate
        options.wave = _one_size(wave)
        options.sim_people = _people(sim_people, "--sim-people")
        options.sim_real_people = _people(sim_real_people, "--sim-real-people")
        if sim_scenario is not None and "sim" in options.sections:
            from offpay.sim.population.scenario import load_scenario

            load_scenario(sim_scenario)  # refused in one line before anything is measured
            options.sim_scenario = sim_scenario
        earlier = [_read_run(p) for p in merge or []]
        if report_only and not earlier:
            raise UsageError("--report-only needs at least one --merge file")
        if update_docs:
            json_path = json_path or Path("benchmarks.json")
            markdown_path = markdown_path or Path("BENCHMARKS.md")
        results_dir = _results_folder(results_dir)
    run_name = _run_name(results_dir)
    run_json = results_dir / f"{run_name}.json"
    warning = None if report_only else not_representative(full)
    if warning:
        options.notes.append(warning)  # kept with the figures, in the JSON and the report
        console.print(f"[yellow]{warning}[/yellow]", highlight=False)

    if report_only:
        results = report.merge(earlier[0], earlier[1:])
    else:
        with _exit_on_sigterm():
            results = _run_with_progress(options, console, run_json)
        if earlier:
            results = report.merge(results, earlier)
    report.print_table(results, console)
    written = [run_json]
    report.write_json(results, run_json)
    if not no_markdown:
        run_markdown = results_dir / f"{run_name}.md"
        report.write_markdown(results, run_markdown)
        written.append(run_markdown)
    if json_path is not None:
        report.write_json(results, json_path)
        written.append(json_path)
    if markdown_path is not None and not no_markdown:
        report.write_markdown(results, markdown_path)
        written.append(markdown_path)
    console.print(f"figures written to {', '.join(str(w) for w in written)}", highlight=False)
    if warning:
        console.print(f"[yellow]{warning}[/yellow]", highlight=False)
    if results.get("errors"):
        raise typer.Exit(1)


def _options(
    sizes: str | None,
    full: bool,
    backends: str,
    algorithms: str,
    only: str | None,
    seconds: float | None,
    offline_payments: int | None,
    token_depths: str,
) -> Any:
    """The run's options from the command line; a bad value is a :class:`UsageError`."""
    from offpay.bench import runner
    from offpay.crypto.keys import Algorithm

    _positive(seconds, "--seconds")
    _positive(offline_payments, "--offline-payments")
    return runner.Options(
        sizes=parse_sizes(sizes)
        if sizes
        else list(runner.FULL_SIZES if full else runner.QUICK_SIZES),
        backends=_list(backends, ("sqlite", "postgres"), "backend"),
        algorithms=[
            Algorithm(a) for a in _list(algorithms, tuple(a.value for a in Algorithm), "algorithm")
        ],
        sections=_list(only, runner.SECTIONS, "section") if only else list(runner.SECTIONS),
        seconds=seconds if seconds is not None else (FULL_SECONDS if full else 1.0),
        offline_payments=offline_payments
        if offline_payments is not None
        else (FULL_OFFLINE_PAYMENTS if full else 200),
        token_depths=_depths(token_depths),
    )


def _run_name(folder: Path) -> str:
    """``benchmarks-YYYYMMDD-HHMMSS``, with a suffix if a run of the same second is there."""
    name = f"benchmarks-{dt.datetime.now():%Y%m%d-%H%M%S}"
    n = 1
    while (folder / f"{name}.json").exists() or (folder / f"{name}.md").exists():
        n += 1
        name = f"{name.split('.')[0]}.{n}"
    return name


def _results_folder(path: Path) -> Path:
    from offpay.cli_support import writable_folder

    return writable_folder(path, "--results")


def _run_with_progress(options: Any, console: Any, checkpoint_path: Path) -> dict[str, Any]:
    """:func:`runner.run` under a progress bar (one step per section and per long run); what
    the benchmarks say is printed above the bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from offpay.bench import report, runner

    total = runner.steps(options)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=total)
        begun = 0

        def step(what: str) -> None:
            nonlocal begun
            progress.update(task, completed=begun, description=what)
            begun += 1

        def say(text: str) -> None:
            progress.console.print(text, highlight=False)

        results = runner.run(
            options, say, lambda done: report.write_json(done, checkpoint_path), step
        )
        progress.update(task, completed=total)
    return results
