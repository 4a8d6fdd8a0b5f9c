"""Sweeps: a grid is read, named and checked point by point before anything runs; a bad key or
value is one line and exit 2; a small sweep runs on a real Dask cluster of worker processes
and its table moves as the grid says."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from offpay.sim.population.sweep import (
    ALIASES,
    MAX_POINTS,
    SweepError,
    expand,
    parse_grid,
    read_base,
    resolve_key,
    rows,
    write_table,
)
from offpay.sim.population.sweep_cli import sweep

BASE: dict[str, Any] = {
    "name": "tiny",
    "seed": 5,
    "days": 1,
    "population": {"people": 40, "merchants": 4},
    "behaviour": {"payments_per_person_per_day": 2, "person_to_person_share": 0.5},
    "liquidity": {"policy": "pool", "pool": "SEK 100"},
}


def points(*specs: str, base: dict[str, Any] | None = None) -> list:
    return expand(copy.deepcopy(base or BASE), parse_grid(list(specs)))


def refused(*specs: str, base: dict[str, Any] | None = None) -> SweepError:
    with pytest.raises(SweepError) as caught:
        points(*specs, base=base)
    message = caught.value.message
    assert "\n" not in message
    return caught.value


# -- keys ------------------------------------------------------------------------------------


def test_every_alias_names_a_scenario_field():
    for key, alias in ALIASES.items():
        assert resolve_key(key) == tuple(alias.path.split("."))
    assert resolve_key("limits.card_max_balance") == ("limits", "card_max_balance")
    assert resolve_key("behaviour.amount.median") == ("behaviour", "amount", "median")


def test_aliases_set_their_fields():
    (a, b) = points("pool=SEK 2000,500000")
    assert a.scenario.liquidity.pool == 200_000 and b.scenario.liquidity.pool == 500_000
    assert a.grid == {"pool": 200_000}  # the table shows the amount as the scenario read it

    (q, r) = points("policy=queue,receipts")
    assert [p.scenario.liquidity.policy.value for p in (q, r)] == ["queue", "receipts"]
    assert q.grid == {"policy": "queue"}

    (small, big) = points("people=10,300")
    assert (small.scenario.population.people, big.scenario.population.people) == (10, 300)

    seeds = points("seed=1,2,3")
    assert [p.scenario.seed for p in seeds] == [1, 2, 3]


def test_outage_days_is_hours_times_24_and_0_is_no_outage():
    none, one, half = points("outage_days=0,1,0.5")  # BASE has no outage: it is created
    assert none.scenario.outage is None
    assert one.scenario.outage is not None and one.scenario.outage.hours == 24
    assert half.scenario.outage is not None and half.scenario.outage.hours == 12
    assert [p.grid["outage_days"] for p in (none, one, half)] == [0, 1, 0.5]
    base = {**BASE, "outage": {"start_hour": 2, "hours": 5, "reconnect_hours": 1}}
    (three,) = points("outage_days=3", base=base)
    assert three.scenario.outage is not None
    assert (three.scenario.outage.hours, three.scenario.outage.start_hour) == (72, 2)
    assert three.scenario.outage.reconnect_hours == 1  # the rest of the section is kept


def test_a_pool_of_0_under_policy_pool_runs_as_queue_and_a_dotted_path_is_exact():
    empty, full = points("pool=0,1000000")
    assert empty.scenario.liquidity.policy.value == "queue" and empty.grid["pool"] == 0
    assert full.scenario.liquidity.policy.value == "pool"
    error = refused("liquidity.pool=0,1000000")  # the dotted path changes nothing else
    assert error.code == "sweep.bad_value"
    assert str(error.message).startswith("--grid liquidity.pool=0: liquidity.pool:")


def test_dotted_paths_reach_nested_fields_and_read_amounts_in_the_currency():
    low, high = points("limits.card_max_balance=SEK 500,3000_00")
    assert low.scenario.policy.card_max_balance.minor == 50_000
    assert high.grid["limits.card_max_balance"] == 300_000
    (median,) = points("behaviour.amount.median=SEK 80")
    assert median.scenario.behaviour.amount.median == 8_000
    (hours,) = points("outage.hours=36")
    assert hours.scenario.outage is not None and hours.scenario.outage.hours == 36


@pytest.mark.parametrize(
    ("spec", "code", "says"),
    [
        ("liquidity.poool=1", "sweep.bad_key", "liquidity has no field 'poool'"),
        ("poool=1", "sweep.bad_key", "the scenario has no field 'poool'"),
        ("population=1", "sweep.bad_key", "population is a section"),
        ("population.regions=1", "sweep.bad_key", "population.regions is a list"),
        ("days.hours=1", "sweep.bad_key", "days is a value, not a section"),
        ("pool", "sweep.bad_grid", "write KEY=V1,V2"),
        ("=1,2", "sweep.bad_grid", "write KEY=V1,V2"),
        ("pool=", "sweep.bad_value", "an empty value"),
        ("pool=1,,2", "sweep.bad_value", "an empty value"),
        ("seed=1,2,1", "sweep.bad_value", "value 1 given twice"),
    ],
)
def test_a_bad_key_or_grid_is_refused_by_name(spec: str, code: str, says: str):
    error = refused(spec)
    assert error.code == code
    assert says in error.message
    assert spec.partition("=")[0] in error.message or code == "sweep.bad_grid"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("pool=abc", "--grid pool=abc: liquidity.pool: cannot read 'abc' as an amount"),
        ("pool=EUR 5", "--grid pool=EUR 5: liquidity.pool: amount 'EUR 5' is not in the"),
        ("policy=cash", "--grid policy=cash: liquidity.policy: Input should be"),
        ("people=0", "--grid people=0: population.people: Input should be greater than"),
        ("outage_days=abc", "--grid outage_days=abc: outage_days: 'abc' is not a number"),
        ("outage.hours=-1", "--grid outage.hours=-1: outage.hours: Input should be greater"),
        ("seed=1,-1", "--grid seed=-1: seed: Input should be greater than or equal to 0"),
        ("limits.card_max_offline_transactions=5,x", "card_max_offline_transactions=x: limits."),
    ],
)
def test_a_bad_value_is_refused_naming_the_key_the_value_and_the_field(spec: str, says: str):
    error = refused(spec)
    assert error.code == "sweep.bad_value"
    assert error.message.startswith(says) or says in error.message


def test_a_value_bad_only_with_another_key_names_the_grid_point():
    base = {**BASE, "liquidity": {"policy": "queue"}}
    # policy 'pool' alone on this base (no pool) would be refused; with a pool it is fine
    assert len(points("policy=queue,pool", "liquidity.pool=SEK 50", base=base)) == 2
    error = refused("liquidity.pool=0,100", "policy=queue,pool", base=base)
    assert error.message == (
        "grid point liquidity.pool=0, policy=pool: liquidity.pool: policy 'pool' needs a pool "
        "above 0"
    )
    error = refused("days=1,0.5", base={**BASE, "outage": {"start_hour": 18, "hours": 2}})
    assert error.message.startswith("grid point days=0.5: outage.start_hour: the outage starts")


def test_an_empty_grid_a_key_twice_and_a_grid_too_large_are_refused():
    with pytest.raises(SweepError, match="give at least one --grid") as caught:
        parse_grid([])
    assert caught.value.code == "sweep.empty"
    with pytest.raises(SweepError, match=r"sets liquidity\.pool, as --grid pool already does"):
        parse_grid(["pool=1,2", "liquidity.pool=3"])
    with pytest.raises(SweepError, match="sets seed, as --grid seed already does"):
        parse_grid(["seed=1", "seed=2"])
    seeds = ",".join(str(s) for s in range(40))
    people = ",".join(str(p) for p in range(1, 27))
    with pytest.raises(SweepError) as caught:
        parse_grid([f"seed={seeds}", f"people={people}"])
    assert caught.value.code == "sweep.too_large"
    assert caught.value.message.startswith(
        f"the grid has 1,040 points (40 × 26); a sweep runs at most {MAX_POINTS:,}"
    )
    assert len(parse_grid([f"seed={seeds}", f"people={people[:-3]}"])[1].values) == 25  # 1,000


def test_the_grid_is_the_product_of_its_keys_the_last_varying_fastest():
    grid = points("policy=queue,restrict,receipts", "seed=1,2")
    assert [p.index for p in grid] == list(range(6))
    assert [(p.grid["policy"], p.grid["seed"]) for p in grid] == [
        ("queue", 1),
        ("queue", 2),
        ("restrict", 1),
        ("restrict", 2),
        ("receipts", 1),
        ("receipts", 2),
    ]
    for p in grid:  # each point's scenario carries its own values, and only those
        assert p.scenario.liquidity.policy.value == p.grid["policy"]
        assert p.scenario.seed == p.grid["seed"]
        assert p.scenario.population.people == 40
    assert BASE["liquidity"] == {"policy": "pool", "pool": "SEK 100"}  # the base is not touched


def test_the_base_scenario_file_is_refused_by_its_own_field(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\ndays = 0\n[population]\npeople = 3\n')
    with pytest.raises(Exception, match="days") as caught:
        read_base(path)
    assert caught.value.code == "scenario.invalid"  # type: ignore[attr-defined]
    path.write_text('name = "x"\ndays = 1\n[population]\npeople = 3\n')
    assert read_base(path) == tomllib.loads(path.read_text())


# -- the table -------------------------------------------------------------------------------


def test_the_table_has_a_typed_column_per_grid_key_and_figure(tmp_path: Path):
    grid = points("policy=queue,receipts", "seed=1,2")
    results = [
        {"payments": 10, "refused_share": 0.1, "pool_peak": 0, "refused.funds.insufficient": 1},
        {"payments": 12, "refused_share": 0.0, "pool_peak": 7},
        {"error": "KilledWorker: the worker died"},
        {"payments": 9, "refused_share": 0.5, "pool_peak": 3, "refused.device.busy": 2},
    ]
    table = rows(grid, results)
    assert [r["point"] for r in table] == [0, 1, 2, 3]
    assert table[1]["refused.funds.insufficient"] == 0  # a code a point never met counts 0
    assert table[2]["payments"] is None and table[2]["error"].startswith("KilledWorker")
    write_table(table, tmp_path, {"grid": {"policy": ["queue", "receipts"]}})
    read = pq.read_table(tmp_path / "sweep.parquet")
    assert read.column_names == [
        "point",
        "policy",
        "seed",
        "error",
        "payments",
        "refused_share",
        "pool_peak",
        "refused.funds.insufficient",
        "refused.device.busy",
    ]
    types = {f.name: str(f.type) for f in read.schema}
    assert types["payments"] == types["pool_peak"] == types["seed"] == "int64"
    assert types["refused_share"] == "double" and types["policy"] == "string"
    assert read.column("refused.device.busy").to_pylist() == [0, 0, None, 2]
    assert b"offpay.sweep" in read.schema.metadata
    csv = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(csv) == 5 and csv[0].startswith('"point","policy","seed","error"')


# -- the command -----------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(sweep)
    return app


def _scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(
        'name = "tiny"\nseed = 5\ndays = 1\n[population]\npeople = 40\nmerchants = 4\n'
        '[liquidity]\npolicy = "pool"\npool = "SEK 100"\n'
    )
    return path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--grid", "poool=1"], "[sweep.bad_key] --grid poool: the scenario has no field"),
        (["--grid", "pool=x"], "[sweep.bad_value] --grid pool=x: liquidity.pool: cannot read"),
        ([], "[sweep.empty] give at least one --grid"),
        (["--grid", "seed=1", "--scheduler", "localhost"], "[sweep.bad_scheduler] --scheduler"),
    ],
)
def test_the_command_refuses_a_bad_grid_in_one_line_with_exit_2(
    tmp_path: Path, args: list[str], says: str
):
    out = tmp_path / "out"
    result = CliRunner().invoke(_app(), [str(_scenario_file(tmp_path)), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # refused before anything ran or was written


def test_the_command_refuses_a_bad_scenario_file_in_one_line_with_exit_2(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ndays = 1\n[population]\npeople = -3\n')
    result = CliRunner().invoke(_app(), [str(path), "--grid", "seed=1,2"])
    assert result.exit_code == 2
    assert "[scenario.invalid] population.people:" in result.output
    result = CliRunner().invoke(_app(), [str(tmp_path / "missing.toml"), "--grid", "seed=1"])
    assert result.exit_code == 2 and "[scenario.unreadable]" in result.output


# -- a sweep on a real Dask cluster ----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A real Dask cluster: a scheduler and two single-threaded worker processes on
    loopback, closed after the tests of this module."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as local:
        yield local


SWEPT = """
name = "a street through an outage"
seed = 11
days = 3
[population]
people = 60
merchants = 6
[behaviour]
payments_per_person_per_day = 3
person_to_person_share = 0.6
person_online_per_day = 1
top_up_to = "SEK 300"
amount = { median = "SEK 80", sigma = 0.8, max = "SEK 3000" }
[outage]
start_hour = 8
hours = 24
reconnect_hours = 4
[liquidity]
policy = "pool"
pool = "SEK 50000"
"""


def test_a_sweep_on_a_local_dask_cluster_writes_a_row_per_point_that_moves_with_the_grid(
    tmp_path: Path, cluster: Any
):
    path = tmp_path / "street.toml"
    path.write_text(SWEPT)
    out = tmp_path / "sweep"
    result = CliRunner().invoke(
        _app(),
        [
            str(path),
            "--grid",
            "pool=0,SEK 50000",
            "--grid",
            "outage_days=1,2",
            "--out",
            str(out),
            "--scheduler",
            cluster.scheduler_address,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 grid points" in result.output

    table = pq.read_table(out / "sweep.parquet").to_pylist()
    assert [(r["pool"], r["outage_days"]) for r in table] == [
        (0, 1),
        (0, 2),
        (5_000_000, 1),
        (5_000_000, 2),
    ]
    assert all(r["error"] == "" for r in table)
    by = {(r["pool"], r["outage_days"]): r for r in table}
    for days in (1, 2):
        empty, full = by[0, days], by[5_000_000, days]
        assert empty["liquidity"] == "queue" and full["liquidity"] == "pool"
        assert empty["outage_hours"] == full["outage_hours"] == 24 * days
        assert empty["pool_peak"] == 0 and empty["pool_drawn"] == 0
        # the same people make the same payments; the pool only changes who waits
        assert empty["payments"] == full["payments"] and empty["events"] == full["events"]
        assert empty["shortfalls"] > 0  # without a pool, payments waited for money
        assert full["pool_drawn"] > 0 and full["pool_peak"] > 0
        assert full["shortfalls"] <= empty["shortfalls"]  # a pool never adds waiting
        assert full["settled_without_waiting_share"] >= empty["settled_without_waiting_share"]
    for pool in (0, 5_000_000):  # a longer outage cuts off more attempts to go online
        assert by[pool, 2]["online_cut"] > by[pool, 1]["online_cut"]

    csv = (out / "sweep.csv").read_text().splitlines()
    assert len(csv) == 5 and csv[0].startswith('"point","pool","outage_days","error"')
    for figure in ("pool_peak", "shortfalls", "refused_share"):
        for suffix in ("png", "svg"):
            assert (out / f"sweep-{figure}.{suffix}").stat().st_size > 1_000
    assert not (out / "sweep-losses.png").exists()  # no attacks: nothing to show


TOKENS = """
name = "a street of token wallets"
seed = 11
days = 2
scheme = "tokens"
[population]
people = 40
merchants = 4
[behaviour]
payments_per_person_per_day = 3
person_to_person_share = 0.5
person_online_per_day = 1
[outage]
start_hour = 8
hours = 24
reconnect_hours = 4
[attacks]
broken_elements = 0.1
[[script]]
at_hour = 1
kind = "shop"
who = "0"
to = "m3"
amount = "SEK 20"
"""


def test_a_point_that_fails_on_its_worker_keeps_its_row_and_the_others_run(
    tmp_path: Path, cluster: Any
):
    """Token wallets through an outage; a scripted payment to shop m3 names a shop that a
    street of two shops lacks, which only the worker finds (drawing the world)."""
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS)
    out = tmp_path / "sweep"
    result = CliRunner().invoke(
        _app(),
        [
            str(path),
            "--grid",
            "population.merchants=4,2",
            "--grid",
            "people=30,60",
            "--out",
            str(out),
            "--scheduler",
            cluster.scheduler_address,
        ],
    )
    assert result.exit_code == 1
    assert "point population.merchants=2, people=30 failed: [scenario.invalid]" in (result.output)
    small, large, *failed = pq.read_table(out / "sweep.parquet").to_pylist()
    assert small["error"] == large["error"] == ""
    assert (small["people"], large["people"]) == (30, 60) and small["scheme"] == "tokens"
    assert large["payments"] > small["payments"] > 0  # twice the people pay more
    assert small["outage_hours"] == 24 and small["online_cut"] > 0
    assert small["attack_payments"] > 0  # the broken elements tried to spend
    assert [f["error"] for f in failed] == ["[scenario.invalid] script: no merchant 'm3'"] * 2
    assert all(f["payments"] is None for f in failed)
    assert (out / "sweep-refused_share.png").exists() and (out / "sweep.csv").exists()
