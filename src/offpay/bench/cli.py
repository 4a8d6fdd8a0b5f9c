"""The ``offpay bench`` command: options, progress output, and where the figures go."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

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
            raise typer.BadParameter(f"not a size: {part!r}") from None
        if value < 1:
            raise typer.BadParameter("sizes must be positive")
        sizes.append(value)
    if not sizes:
        raise typer.BadParameter("give at least one size")
    return sizes


def _one_size(text: str, what: str = "wave size") -> int:
    sizes = parse_sizes(text)
    if len(sizes) != 1:
        raise typer.BadParameter(f"give one {what}")
    return sizes[0]


def _list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [i for i in items if i not in allowed]
    if unknown:
        raise typer.BadParameter(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return items


def _check_scenario(path: Path) -> None:
    """A scenario the simulator section cannot run is refused before anything is measured."""
    from offpay.errors import OffpayError
    from offpay.sim.population.scenario import load_scenario

    try:
        load_scenario(path)
    except OffpayError as exc:
        print(f"offpay bench: [{exc.code}] {exc.message}", file=sys.stderr)
        raise typer.Exit(2) from None


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
        str | None,
        typer.Option(help="Backlog sizes to settle, e.g. 10k,100k,1M (default: 1000)."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="The full run of issue 7: 10k, 100k and 1M payments, longer timings."
        ),
    ] = False,
    backends: Annotated[
        str, typer.Option(help="Databases for settlement: sqlite, postgres or both.")
    ] = "sqlite,postgres",
    algorithms: Annotated[
        str, typer.Option(help="Signature algorithms for ceilings, offline cost, storage, tokens.")
    ] = "ed25519,ecdsa-p256,ml-dsa-65",
    only: Annotated[
        str | None,
        typer.Option(
            help="Run only these sections: ceilings, offline, storage, tokens, settlement, "
            "profile, sim."
        ),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Seconds per ceiling micro-benchmark (default 1).")
    ] = None,
    offline_payments: Annotated[
        int | None, typer.Option(help="Payments timed per offline flow (default 200).")
    ] = None,
    token_depths: Annotated[str, typer.Option(help="Token ancestries to verify.")] = "1,10,30,100",
    profile_payments: Annotated[
        int | None, typer.Option(help="Backlog size for the settlement profile (default 500).")
    ] = None,
    json_path: Annotated[Path, typer.Option("--json", help="Where the figures go as JSON.")] = Path(
        "benchmarks.json"
    ),
    markdown_path: Annotated[
        Path | None,
        typer.Option("--markdown", help="The Markdown file whose generated section is replaced."),
    ] = Path("BENCHMARKS.md"),
    no_markdown: Annotated[
        bool, typer.Option("--no-markdown", help="Do not touch any Markdown file.")
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
        typer.Option(help="People in the population simulator's country (default 1M, issue 14)."),
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
    backlog settlement, offline payment cost, device storage and token verification."""
    from rich.console import Console

    from offpay.bench import report, runner
    from offpay.crypto.keys import Algorithm

    console = Console() if Console().is_terminal else Console(width=160)
    options = runner.Options(
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
        token_depths=[int(d) for d in token_depths.split(",") if d.strip()],
        profile_payments=profile_payments
        if profile_payments is not None
        else (FULL_PROFILE_PAYMENTS if full else 500),
        isolate=isolate,
        wave=_one_size(wave),
        sim_people=_one_size(sim_people, "number of people"),
        sim_real_people=_one_size(sim_real_people, "number of people"),
        sim_scenario=sim_scenario,
    )

    if sim_scenario is not None and "sim" in options.sections:
        _check_scenario(sim_scenario)

    def say(text: str) -> None:
        console.print(text, highlight=False)

    earlier = [json.loads(p.read_text()) for p in merge or []]
    if report_only:
        if not earlier:
            raise typer.BadParameter("--report-only needs at least one --merge file")
        results = report.merge(earlier[0], earlier[1:])
    else:
        with _exit_on_sigterm():
            results = runner.run(options, say, lambda done: report.write_json(done, json_path))
        if earlier:
            results = report.merge(results, earlier)
    report.print_table(results, console)
    report.write_json(results, json_path)
    console.print(f"figures written to {json_path}")
    if not no_markdown and markdown_path is not None:
        report.write_markdown(results, markdown_path)
        console.print(f"generated section of {markdown_path} replaced")
    if results.get("errors"):
        raise typer.Exit(1)
