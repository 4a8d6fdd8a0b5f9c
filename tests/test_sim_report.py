"""A run's folder: the Parquet tables hold the right rows and agree with the per-event results
and the summary; summary.json carries the figures and the scenario; every plot is drawn; the
HTML report is one self-contained page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from offpay.sim.population.events import Kind
from offpay.sim.population.metrics import (
    DAYS_FILE,
    DEVICES_FILE,
    PAYMENTS_FILE,
    days_table,
    devices_table,
    payments_table,
)
from offpay.sim.population.outcomes import CODES, NEVER, OK
from offpay.sim.population.plots import PLOTS, money_axis
from offpay.sim.population.report import ReportError, prepare_folder, write_run
from offpay.sim.population.run import Executor, simulate
from offpay.sim.population.scenario import LiquidityRule, parse_scenario
from offpay.sim.population.summary import summarise
from offpay.wire.messages import Liquidity
from sim_hand_results import ALICE, BOB, CHARLIE, abc_results, abc_scenario, random_results

PAYMENT_COLUMNS = [
    "time", "kind", "tag", "payer", "payee", "payee_is_merchant", "amount", "moved", "outcome",
    "settled_at", "queued_at", "pool_drawn", "refunded", "payer_bank", "payee_bank",
]  # fmt: skip
DEVICE_COLUMNS = [
    "device", "index", "name", "bank", "region", "online_wallet", "shadow_wallet",
    "card_balance", "merchant_wallet", "blocked", "cloned", "rolled_back", "payments_made",
    "payments_refused", "payments_received", "attack_payments_made",
]  # fmt: skip


def test_the_abc_payments_table_is_the_story_of_section_3_7() -> None:
    run = abc_results(abc_scenario())
    table = payments_table(run)
    assert table.column_names == PAYMENT_COLUMNS
    rows = table.to_pylist()
    assert [(r["payer"], r["payee"], r["amount"]) for r in rows] == [
        (ALICE, BOB, 80_00),
        (BOB, CHARLIE, 50_00),
        (CHARLIE, 0, 20_00),
    ]
    assert [r["kind"] for r in rows] == ["p2p", "p2p", "shop"]
    assert [r["payee_is_merchant"] for r in rows] == [False, False, True]
    assert [r["outcome"] for r in rows] == ["ok"] * 3
    assert [r["time"] for r in rows] == [540, 600, 720]
    assert [r["settled_at"] for r in rows] == [900, 900, 780]
    assert [r["queued_at"] for r in rows] == [None, 660, None]  # Bob's shortfall, no sentinel
    banks = run.world.banks
    assert rows[1]["payer_bank"] == banks[run.world.person_bank[BOB]]
    assert rows[1]["payee_bank"] == banks[run.world.person_bank[CHARLIE]]
    assert rows[2]["payee_bank"] == banks[run.world.merchant_bank[0]]


def test_the_abc_devices_table_counts_each_holders_payments() -> None:
    run = abc_results(abc_scenario())
    rows = devices_table(run).to_pylist()
    assert devices_table(run).column_names == DEVICE_COLUMNS
    assert [(r["device"], r["index"], r["name"]) for r in rows] == [
        ("card", 0, "Alice"),
        ("card", 1, "Bob"),
        ("card", 2, "Charlie"),
        ("terminal", 0, None),
    ]
    assert [r["payments_made"] for r in rows] == [1, 1, 1, 0]
    assert [r["payments_received"] for r in rows] == [0, 1, 1, 1]
    assert [r["payments_refused"] for r in rows] == [0, 0, 0, 0]
    assert [r["shadow_wallet"] for r in rows] == [200_00, 200_00, 230_00, None]
    assert [r["merchant_wallet"] for r in rows] == [None, None, None, 20_00]
    assert not any(r["blocked"] for r in rows)


def test_the_abc_day_shows_bobs_shortfall_and_no_pool() -> None:
    (day,) = days_table(abc_results(abc_scenario())).to_pylist()
    assert day["day"] == 0
    assert (day["payments"], day["payments_made"], day["payments_refused"]) == (3, 3, 0)
    assert day["value_paid"] == 150_00
    assert (day["shortfalls"], day["shortfall_value"]) == (1, 50_00)
    assert (day["settled"], day["settled_value"]) == (3, 150_00)
    assert (day["pool_outstanding_end"], day["pool_outstanding_peak"]) == (0, 0)
    assert (day["online_attempts"], day["online_cut"]) == (5, 0)
    assert all(day[f"refused.{code}"] == 0 for code in CODES[2:])


def test_under_the_pool_bobs_payment_borrows_and_is_repaid_the_same_day() -> None:
    pool = LiquidityRule(policy=Liquidity.POOL, pool=100_00)
    run = abc_results(abc_scenario(liquidity=pool), pool=True)
    (day,) = days_table(run).to_pylist()
    assert (day["shortfalls"], day["pool_drawn"]) == (0, 50_00)
    assert (day["pool_outstanding_peak"], day["pool_outstanding_end"]) == (50_00, 0)
    summary = summarise(run)
    assert summary["pool_peak"] == 50_00 and summary["shortfalls"] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_the_tables_agree_with_the_per_event_results_and_the_summary(seed: int) -> None:
    run = random_results(seed)
    e, r = run.events, run.results
    summary = summarise(run)
    payments, devices, days = payments_table(run), devices_table(run), days_table(run)
    is_payment = np.isin(e.kind, [Kind.SHOP, Kind.P2P, Kind.CLONE_SHOP, Kind.ROLLED_SHOP])
    assert payments.num_rows == int(is_payment.sum())
    assert payments.column("amount").to_numpy().sum() == e.amount[is_payment].sum()
    assert devices.num_rows == run.world.people + run.world.merchants
    assert days.num_rows == 3
    col = {name: days.column(name).to_numpy() for name in days.column_names}
    assert col["payments"].sum() == summary["payments"]
    assert col["payments_made"].sum() == summary["payments_made"]
    assert col["payments_refused"].sum() == summary["payments_refused"]
    assert col["value_paid"].sum() == summary["value_paid"]
    assert col["shortfalls"].sum() == summary["shortfalls"]
    assert col["shortfall_value"].sum() == summary["shortfall_value"]
    assert col["pool_drawn"].sum() == summary["pool_drawn"]
    assert col["pool_outstanding_peak"].max() == summary["pool_peak"]
    assert col["pool_outstanding_end"][-1] == r.pool_after[-1]
    assert col["online_attempts"].sum() == summary["online_attempts"]
    assert col["online_cut"].sum() == summary["online_cut"] > 0
    assert col["attack_payments_made"].sum() == summary["attack_payments_made"]
    for code in CODES[2:]:
        assert col[f"refused.{code}"].sum() == summary.get(f"refused.{code}", 0), code
    # A day's end figure is the pool after that day's last event.
    for day in range(3):
        before = np.flatnonzero(e.t < (day + 1) * 24 * 60)
        assert col["pool_outstanding_end"][day] == r.pool_after[before[-1]]
    # Devices: each holder's payments, made and refused, add up to the summary's.
    dev = {name: devices.column(name).to_numpy(zero_copy_only=False) for name in ("blocked",)}
    assert devices.column("payments_made").to_numpy().sum() == summary["payments_made"]
    assert devices.column("payments_refused").to_numpy().sum() == summary["payments_refused"]
    assert dev["blocked"].sum() == summary["devices_blocked"]
    ok_payments = (payments.column("outcome").to_numpy(zero_copy_only=False) == "ok").sum()
    assert devices.column("payments_received").to_numpy().sum() == ok_payments
    # Settled and queued times are null exactly where the results say "never".
    settled = payments.column("settled_at")
    assert settled.null_count == int((r.settled_at[is_payment] == NEVER).sum())
    outcomes = payments.column("outcome").to_numpy(zero_copy_only=False)
    assert list(outcomes) == [CODES[i] for i in r.outcome[is_payment]]
    assert (outcomes != "ok").sum() == int((r.outcome[is_payment] != OK).sum())


def test_a_run_writes_every_file_and_a_self_contained_report(tmp_path: Path) -> None:
    run = abc_results(abc_scenario())
    written = write_run(run, tmp_path / "out")
    out = written.folder
    for name in (PAYMENTS_FILE, DEVICES_FILE, DAYS_FILE, "summary.json", "report.html"):
        assert (out / name).is_file(), name
    assert pq.read_table(out / PAYMENTS_FILE).num_rows == 3
    document = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert document["summary"] == json.loads(json.dumps(summarise(run)))
    assert document["summary"]["shortfalls"] == 1
    assert document["scenario"]["population"]["names"] == ["Alice", "Bob", "Charlie"]
    assert document["scenario"]["behaviour"]["top_up_to"] == 200_00
    html = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    drawn = [name for name, _, _ in PLOTS if name != "devices"]
    for name in drawn:
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
        assert f'id="plot-{name}"' in html
    assert html.count('src="data:image/png;base64,') == len(drawn)
    # No executor measured storage, bytes or messages: the report says so, with no figure.
    assert not (out / "devices.png").exists()
    assert "did not measure device storage" in html
    # The scenario in words and the headline answers, money as people read it.
    assert "3 people and 1 shop over 1 day" in html
    assert "SEK 50.00" in html and "Shortfalls" in html
    assert re.search(r"<th>value_paid</th><td[^>]*>SEK 150\.00<", html)
    assert re.search(r"<th>settled_without_waiting_share</th><td[^>]*>66\.67%<", html)


def test_measured_device_series_get_their_plot(tmp_path: Path) -> None:
    run = abc_results(abc_scenario())
    n = len(run.events)
    run.results.extra["bytes_carried"] = np.arange(n, dtype=np.int64) * 100
    run.results.extra["storage_bytes"] = np.array([512, 1024, 2048], dtype=np.int64)
    html = write_run(run, tmp_path).report.read_text(encoding="utf-8")
    assert (tmp_path / "devices.png").is_file() and (tmp_path / "devices.svg").is_file()
    assert 'id="plot-devices"' in html and "did not measure" not in html
    assert f"{sum(range(n)) * 100:,} in total" in html


@pytest.mark.parametrize("scheme", ["balance"])
def test_a_run_of_either_executor_draws_its_storage_bytes_and_messages(
    tmp_path: Path, scheme: str
) -> None:
    """The executors record messages and bytes per event and storage per person: the summary
    adds them up and the report draws them."""
    s = parse_scenario(
        {
            "name": "measured",
            "scheme": scheme,
            "days": 1,
            "population": {"people": 30, "merchants": 3},
            "behaviour": {"payments_per_person_per_day": 3, "person_online_per_day": 2},
        }
    )
    for executor in (Executor.FAST, Executor.REAL):
        run = simulate(s, executor)
        extra = run.results.extra
        summary = summarise(run)
        assert summary["messages"] == int(extra["messages"].sum()) > len(run.events)
        assert summary["bytes_carried"] == int(extra["bytes"].sum()) > 1000 * len(run.events)
        assert summary["device_storage_peak_bytes"] == int(extra["storage"].max()) > 0
        folder = tmp_path / executor.value
        html = write_run(run, folder).report.read_text(encoding="utf-8")
        assert (folder / "devices.png").stat().st_size > 1000
        assert 'id="plot-devices"' in html and "did not measure" not in html
        for key in ("bytes", "messages", "storage"):
            assert key in html


def test_an_unwritable_folder_is_refused_before_anything_runs(tmp_path: Path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("x", encoding="utf-8")
    for bad in (a_file, a_file / "below"):
        with pytest.raises(ReportError) as caught:
            prepare_folder(bad)
        assert caught.value.code == "report.unwritable"
        assert "\n" not in caught.value.message and str(bad) in caught.value.message
    assert prepare_folder(tmp_path / "new" / "deep").is_dir()
    assert not list((tmp_path / "new" / "deep").iterdir())  # the probe leaves nothing


def test_money_axes_read_in_whole_currency_units() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        money_axis(ax, "SEK")
        assert ax.yaxis.get_major_formatter()(1_200_000, 0) == "12 000"
        money_axis(ax, "JPY")
        assert ax.yaxis.get_major_formatter()(1_200_000, 0) == "1 200 000"
    finally:
        plt.close(fig)
