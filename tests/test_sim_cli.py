"""`offpay sim run`: every shipped scenario validates; every kind of bad input is one line on
stderr and exit 2; a run writes its folder and prints where the report is and the headline
figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offpay.cli import app
from offpay.sim.population import run as run_module
from offpay.sim.population.scenario import load_scenario
from sim_hand_results import ABC, abc_results

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.toml"))


def sim(*args: str) -> object:
    return CliRunner().invoke(app, ["sim", "run", *args])


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_validates_and_names_its_sources(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name
    header = path.read_text(encoding="utf-8").split("\nname =")[0]
    assert "Sources" in header or "sources" in header.lower()
    assert "§3.3" in header  # the limits' source, whatever else the scenario assumes


def test_the_shipped_examples_are_the_ones_the_issue_asks_for() -> None:
    names = {p.name for p in SCENARIOS}
    assert {"alice-bob-charlie.toml", "town.toml", "country-outage.toml"} <= names
    town = load_scenario(SCENARIOS[[p.name for p in SCENARIOS].index("town.toml")])
    country = load_scenario(SCENARIOS[[p.name for p in SCENARIOS].index("country-outage.toml")])
    assert (town.population.people, town.days) == (10_000, 1)
    assert country.population.people == 1_000_000
    assert country.outage is not None and country.outage.hours == 7 * 24


def one_line_refusal(result: object, code: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error [{code}] "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def test_a_missing_scenario_is_one_line(tmp_path: Path) -> None:
    result = sim(str(tmp_path / "nowhere.toml"), "--out", str(tmp_path / "out"))
    assert "nowhere.toml" in one_line_refusal(result, "scenario.unreadable")
    assert not (tmp_path / "out").exists()  # nothing is made for a run that cannot start


def test_a_file_that_is_not_toml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[population\npeople = 3\n', encoding="utf-8")
    one_line_refusal(sim(str(bad), "--out", str(tmp_path / "out")), "scenario.not_toml")


@pytest.mark.parametrize(
    ("replace", "by", "named"),
    [
        ("people = 3", "people = 0", "population.people"),
        ('top_up_to = "SEK 200"', 'top_up_to = "SEK -5"', "behaviour.top_up_to"),
        ('policy = "queue"', 'policy = "borrow"', "liquidity.policy"),
        ('to = "Bob"', 'to = "Dave"', "script: no person 'Dave'"),
        ("seed = 0", "seed = 0\nsurprise = 1", "surprise"),
    ],
)
def test_a_bad_field_is_one_line_naming_it(
    tmp_path: Path, replace: str, by: str, named: str
) -> None:
    text = ABC.read_text(encoding="utf-8")
    assert replace in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(replace, by, 1), encoding="utf-8")
    line = one_line_refusal(sim(str(bad), "--out", str(tmp_path / "out")), "scenario.invalid")
    assert line.removeprefix("error [scenario.invalid] ").startswith(named), line


def test_an_unwritable_out_is_one_line(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder", encoding="utf-8")
    for out in (taken, taken / "below"):
        one_line_refusal(sim(str(ABC), "--out", str(out)), "report.unwritable")
    assert taken.read_text(encoding="utf-8") == "not a folder"


def test_the_commands_executor_choices_are_the_simulators() -> None:
    from offpay.sim.population.cli import ExecutorChoice

    assert [c.value for c in ExecutorChoice] == [e.value for e in run_module.Executor]


def test_an_unknown_executor_is_refused_with_exit_2(tmp_path: Path) -> None:
    result = sim(str(ABC), "--out", str(tmp_path), "--executor", "quantum")
    assert result.exit_code == 2 and "quantum" in result.output


def test_a_run_writes_its_folder_and_prints_the_headlines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's wiring, with the §3.7 results written by hand as the executor."""
    told: list[int] = []

    def by_hand(scenario, world, events, executor, progress):
        for done in range(1, len(events) + 1):
            progress(done)
            told.append(done)
        return abc_results(scenario).results

    monkeypatch.setattr(run_module, "execute", by_hand)
    out = tmp_path / "run"
    result = sim(str(ABC), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert told == list(range(1, 9))
    assert f"Report: {out / 'report.html'}" in result.stdout
    assert "Shortfalls: 1 payment (SEK 50.00) waited" in result.stdout
    for name in ("payments.parquet", "devices.parquet", "days.parquet", "report.html"):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))["summary"]
    assert (summary["payments"], summary["shortfalls"], summary["settled"]) == (3, 1, 3)


def test_end_to_end_the_report_example_through_the_fast_executor(tmp_path: Path) -> None:
    """`offpay sim run scenarios/alice-bob-charlie.toml --out DIR` with the real fast executor:
    every file is written and summary.json tells the §3.7 story: three payments made, Bob's
    payment to Charlie waits for Alice's sync, and every figure agrees with the day table."""
    import pyarrow.parquet as pq

    out = tmp_path / "tmp"
    result = sim(str(ABC), "--out", str(out))
    assert result.exit_code == 0, result.output
    expected = ["payments.parquet", "devices.parquet", "days.parquet", "summary.json"]
    expected += [f"{name}.{ext}" for name in ("refusals", "pool") for ext in ("png", "svg")]
    for name in [*expected, "report.html"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))["summary"]
    assert summary["payments"] == summary["payments_made"] + summary["payments_refused"] == 3
    assert summary["shortfalls"] == 1 and summary["shortfall_value"] == 50_00
    assert summary["settled"] + summary["unsettled_at_end"] == summary["payments_made"]
    days = pq.read_table(out / "days.parquet").to_pylist()
    assert sum(d["payments"] for d in days) == summary["payments"]
    assert sum(d["shortfalls"] for d in days) == summary["shortfalls"]
    payments = pq.read_table(out / "payments.parquet")
    assert payments.num_rows == 3
    assert payments.column("queued_at").null_count == 2
