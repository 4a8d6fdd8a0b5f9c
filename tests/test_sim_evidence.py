"""`offpay sim evidence` end to end at the quick scale: every question of docs/evidence.md is
answered from simulations, with its table and plot, and the answers hang together."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from offpay.cli import app
from offpay.sim.population import evidence as ev
from offpay.sim.population.sweep import Point, run_point

BASE = Path(__file__).resolve().parents[1] / "scenarios" / "evidence" / "town.toml"


def in_process(points: list[Point]) -> list[dict]:
    """The sweep's own worker function without a cluster, its results placed by each point's
    index as the cluster's runner places them (two grids' points must not share an index)."""
    results: list[dict] = [{} for _ in points]
    for point in points:
        results[point.index] = run_point(point.data)
    return results


def test_every_question_is_answered_with_a_table_and_a_plot(tmp_path: Path) -> None:
    page = ev.build(BASE, tmp_path / "evidence.md", ev.QUICK, in_process)
    text = page.read_text(encoding="utf-8")
    for title in (
        "a. How large must the central bank's liquidity pool be?",
        "b. What can a cloned or rolled-back card take before it is caught?",
        "c. Balance-based against token-based, on the same population",
        "d. What do the report's limits cost in refused payments?",
        "e. The four liquidity rules on the same population",
    ):
        assert f"## {title}" in text
    for plot in ("pool", "broken", "schemes", "limits", "liquidity"):
        assert f"](evidence/{plot}.png)" in text
        assert (tmp_path / "evidence" / f"{plot}.png").stat().st_size > 5_000
    assert "scenarios/evidence/town.toml" in text and "quick scale" in text
    assert "nan" not in text.lower().replace("financ", "")


def test_the_answers_hang_together(tmp_path: Path) -> None:
    page = ev.build(BASE, tmp_path / "evidence.md", ev.QUICK, in_process)
    text = page.read_text(encoding="utf-8")
    pool = text.split("## a.")[1].split("## b.")[0]
    rows = [line for line in pool.splitlines() if re.match(r"\| [\d,]+ \| \d+ \|", line)]
    assert len(rows) == len(ev.QUICK.people) * len(ev.QUICK.outage_days)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        need_99, need_100 = cells[3], cells[4]
        if need_99 != "not reached":
            assert _minor(need_99) <= _minor(need_100)  # 99 % never needs more than 100 %
    rules = text.split("## e.")[1]
    restrict = next(line for line in rules.splitlines() if line.startswith("| restrict |"))
    assert restrict.split("|")[3].strip() == "0"  # money received offline is not spent: no wait
    # both schemes measured their traffic and storage
    schemes = text.split("## c.")[1].split("## d.")[0]
    assert "not measured" not in schemes
    cells = {
        line.split("|")[1].strip(): [_count(c) for c in line.split("|")[2:4]]
        for line in schemes.splitlines()
        if line.startswith("| ") and line.split("|")[2].strip()[:1].isdigit()
    }
    for figure in ("messages", "bytes carried", "largest device storage (bytes)"):
        assert min(cells[figure]) > 0
    # (d) compares the report's limits with the alternatives the references name: one row per
    # outage and alternative; a lower offline total lowers what a broken card can take, and a
    # per-payment maximum refuses payments with its own code
    costs = text.split("## d.")[1].split("## e.")[0]
    names = [ev.REPORT_LIMITS, *(n for n, _ in ev.ALTERNATIVES)]
    table = [line for line in costs.splitlines() if any(f"| {n} |" in line for n in names)]
    assert len(table) == len(names) * len(ev.QUICK.outage_days)
    by_name = {line.split("|")[2].strip(): line for line in table}
    assert "SEK 1 500.00" in by_name[ev.ALTERNATIVES[2][0]]
    assert "SEK 3 000.00" in by_name[names[0]]
    assert "payment_max" in by_name[ev.ALTERNATIVES[3][0]]
    # the limits on time are among the alternatives, and the token scheme's under the limits
    # its elements enforce, a broken element's exposure being its holding limit
    limited = {n for n, limits in ev.ALTERNATIVES if "max_offline_hours" in limits}
    assert limited and any("card_max_daily_payments" in x for _, x in ev.ALTERNATIVES)
    tokens = [n for n, _ in ev.TOKEN_ALTERNATIVES]
    token_table = [line for line in costs.splitlines() if any(f"| {n} |" in line for n in tokens)]
    assert len(token_table) == len(tokens) * len(ev.QUICK.outage_days)
    by_token = {line.split("|")[2].strip(): line for line in token_table}
    assert "no policy bound" in by_token[ev.TOKENS_UNLIMITED]
    for name, limits in ev.TOKEN_ALTERNATIVES[1:]:
        assert limits["element_max_holding"] == 3_000_00 and "SEK 3 000.00" in by_token[name]
    # and the question is answered for every outage length
    assert "halve the refused payments at the same exposure" in costs
    for days in ev.QUICK.outage_days:
        assert re.search(rf"\* {days} days?: the report's limits refuse", costs)


def _count(text: str) -> float:
    return float(text.strip().split(" ")[0].replace(",", ""))


def _minor(text: str) -> int:
    number = text.split(" ", 1)[1].replace(" ", "")
    whole, _, cents = number.partition(".")
    return int(whole) * 100 + int(cents or 0)


def test_a_folder_for_the_page_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "evidence", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "is a folder" in result.output
