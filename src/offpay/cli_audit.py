"""`offpay audit`: the independent auditor (offpay.audit) from the command line. It reads
every party's database read-only, resumes where its last run stopped (its state file), and
exits 0 when the books are clean, 1 when it found discrepancies (each printed on one line),
2 on bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from offpay.cli_support import UsageError, refusals, writable_folder

FOUND_EXIT = 1  # the audit ran and found discrepancies
STATE_FOLDER = "audit"  # in a network's data folder, beside the parties' folders


def audit(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="The network's data folder (`offpay network init`)."),
    ] = None,
    central: Annotated[
        str | None,
        typer.Option(help="The central bank's database URL (instead of --data)."),
    ] = None,
    bank: Annotated[
        list[str] | None,
        typer.Option(help="An intermediary's database as NAME=URL (repeat; with --central)."),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(help="The network's root certificate, DER or PEM (with --central)."),
    ] = None,
    currency: Annotated[str, typer.Option(help="The network's currency (with --central).")] = "SEK",
    state: Annotated[
        Path | None,
        typer.Option(
            help="The auditor's own state file (where it resumes from); with --data it "
            "defaults to DIR/audit/state.sqlite."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Audit every party's books read-only: re-verify settled payments' evidence and match
    debits, notary records, credits, journals, holdings, pool loans, tokens and card
    instructions; resume where the last run stopped."""
    from offpay.audit.auditor import audit as run_audit
    from offpay.audit.auditor import rows_to_read
    from offpay.audit.sources import from_data_dir, from_urls

    with refusals():
        if (data is None) == (central is None):
            raise UsageError("give either --data DIR or --central URL with --bank NAME=URL")
        if data is not None:
            if bank or root is not None:
                raise UsageError("--bank and --root go with --central, not --data")
            sources = from_data_dir(data)
            state = state or writable_folder(data / STATE_FOLDER, "--data") / "state.sqlite"
        else:
            if root is None or state is None:
                raise UsageError("--central needs --root FILE and --state FILE")
            sources = from_urls(str(central), list(bank or []), root, currency)
        if state.exists() and not state.is_file():
            raise UsageError(f"--state {state} is not a file")
        writable_folder(state.parent, "--state")
        report = _run(sources, state, quiet, run_audit, rows_to_read)
    out = Console(soft_wrap=True, highlight=False)
    for finding in report.findings:
        mark = "new" if finding in report.new else "kept"
        out.print(f"[red]{mark}[/red] {escape(finding.line())}")
    out.print(
        f"{report.rows} rows read, {report.payments} payments audited, "
        f"{report.in_flight} in flight, {len(report.findings)} findings "
        f"({len(report.new)} new)"
    )
    if report.findings:
        raise typer.Exit(FOUND_EXIT)


def _run(sources, state, quiet, run_audit, rows_to_read):  # type: ignore[no-untyped-def]
    """The audit with a progress bar on stderr (its length known on the first run only)."""
    if quiet:
        return run_audit(sources, state)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    total = None if state.exists() else rows_to_read(sources)
    columns = (TextColumn("auditing"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("rows", total=total)
        return run_audit(sources, state, progress=lambda n: bar.advance(task, n))
