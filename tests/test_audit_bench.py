"""`offpay bench --only audit` (issue 18): a settled backlog audited in a fresh process, found
clean, with its figures in the JSON and the Markdown. No duration is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from offpay.bench.audit import run
from offpay.bench.settlement import BacklogPlan
from offpay.cli import app


def test_bench_audits_a_settled_backlog_clean(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--only",
            "audit",
            "--backends",
            "sqlite",
            "--sizes",
            "40",
            "--no-isolate",
            "--results",
            str(tmp_path / "results"),
            "--json",
            str(tmp_path / "bench.json"),
            "--markdown",
            str(tmp_path / "BENCHMARKS.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    [audit] = json.loads((tmp_path / "bench.json").read_text())["audit"]
    assert audit["clean"] and audit["findings"] == []
    assert audit["audited_payments"] == audit["payments"] == 40
    assert audit["in_flight"] == 0
    assert audit["payments_per_s"] > 0 and audit["cpu_us_per_payment"] > 0
    assert audit["peak_rss_mib"] > 0
    assert audit["resumed_findings"] == []
    assert "audit sqlite, N=40" in (tmp_path / "BENCHMARKS.md").read_text()


def test_a_backlog_in_several_waves_audits_clean() -> None:
    """Waves of cards and shops, each settled and its cards synchronised (instructions and
    confirmations): every payment audited once."""
    figures = run("sqlite", BacklogPlan(24, per_card=4, per_terminal=6, wave=10), say=print)
    assert figures["clean"], figures
    assert figures["audited_payments"] == 24
