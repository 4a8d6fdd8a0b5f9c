"""Everything one run leaves in its folder: the metrics as Parquet, ``summary.json``, the plots
as PNG and SVG, and ``report.html``, a single self-contained page (plots inlined, no script,
no external asset) that opens without a network and that a policy maker can read.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from offpay.errors import OffpayError
from offpay.sim.population.describe import describe, figure_text, headlines, money
from offpay.sim.population.metrics import Masks, days_table, write_metrics
from offpay.sim.population.plots import Plot, make_plots
from offpay.sim.population.run import Run
from offpay.sim.population.summary import summarise

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


class ReportError(OffpayError):
    """The run's folder cannot be made or written to."""

    code = "report.unwritable"


@dataclass(frozen=True)
class Written:
    """What a run wrote and its summary figures."""

    folder: Path
    report: Path
    summary: dict[str, Any]
    files: tuple[Path, ...]


def prepare_folder(out: Path) -> Path:
    """Make ``out`` (and its parents) and prove it is writable, before a long run starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not out.is_dir():
            raise NotADirectoryError(f"{out} is not a folder")
        with tempfile.NamedTemporaryFile(dir=out, prefix=".offpay-probe-"):
            pass
    except FileExistsError:
        raise ReportError(f"cannot write the run to {out}: it is a file") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReportError(f"cannot write the run to {out}: {reason}") from None
    return out


def _days_rows(run: Run, masks: Masks) -> list[dict[str, Any]]:
    table = days_table(run, masks).to_pylist()
    cur = run.scenario.currency
    return [
        {
            "day": row["day"] + 1,
            "payments": f"{row['payments']:,}",
            "refused": f"{row['payments_refused']:,}",
            "shortfalls": f"{row['shortfalls']:,}",
            "shortfall_value": money(row["shortfall_value"], cur),
            "settled": f"{row['settled']:,}",
            "pool_end": money(row["pool_outstanding_end"], cur),
            "pool_peak": money(row["pool_outstanding_peak"], cur),
            "online": f"{row['online_attempts']:,}",
            "cut": f"{row['online_cut']:,}",
        }
        for row in table
    ]


def _extra_rows(run: Run) -> list[tuple[str, str]]:
    return [
        (key.replace("_", " "), f"{int(values.sum()):,} in total over {len(values):,} entries")
        for key, values in sorted(run.results.extra.items())
    ]


def render_html(run: Run, summary: dict[str, Any], plots: list[Plot], masks: Masks) -> str:
    env = Environment(
        loader=PackageLoader("offpay.sim.population", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    s = run.scenario
    figures = [
        (key, figure_text(key, value, s.currency))
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    return env.get_template("report.html.j2").render(
        scenario=s,
        sentences=describe(s),
        headlines=headlines(summary, s.currency),
        plots=plots,
        days=_days_rows(run, masks),
        figures=figures,
        extra=_extra_rows(run),
        has_devices_plot=any(p.name == "devices" for p in plots),
    )


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so that a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_run(run: Run, out: Path) -> Written:
    """Write every output of ``run`` into ``out``; :class:`ReportError` if it cannot."""
    prepare_folder(out)
    masks = Masks.of(run)
    summary = summarise(run)
    try:
        files = write_metrics(run, out, masks)
        document = {"summary": summary, "scenario": run.scenario.model_dump(mode="json")}
        _write_text(out / SUMMARY_FILE, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        plots = make_plots(run, out, masks)
        _write_text(out / REPORT_FILE, render_html(run, summary, plots, masks))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReportError(f"cannot write the run to {out}: {reason}") from None
    files += [out / SUMMARY_FILE, out / REPORT_FILE]
    files += [out / f"{p.name}.{ext}" for p in plots for ext in ("png", "svg")]
    return Written(folder=out, report=out / REPORT_FILE, summary=summary, files=tuple(files))
