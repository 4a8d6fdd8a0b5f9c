"""docs/evidence.md: the questions the references leave open, answered with numbers and plots
from the checked-in scenario ``scenarios/evidence/town.toml`` by ``offpay sim evidence``.

Each question is a set of grid points over that scenario (the sweep's own grid, run on the
sweep's Dask cluster with the fast executor), read back into a table, a plot and a few
sentences that say what the numbers show. Nothing in the page is written by hand: change a
rule in the protocol (and so in the model) or the scenario, run the command again, and the
page follows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from offpay.money import Money, format_money
from offpay.sim.population import sweep as sw

Runner = Callable[[Sequence[sw.Point]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Scale:
    """How big the questions are asked: ``full`` for the published page, ``quick`` to check
    the command end to end in seconds."""

    name: str
    people: tuple[int, ...]  # populations of question (a)
    outage_days: tuple[int, ...]
    people_default: int
    pool_fractions: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    attack_share: float = 0.002


FULL = Scale("full", people=(10_000, 100_000), outage_days=(1, 3, 7), people_default=10_000)
QUICK = Scale("quick", people=(300, 600), outage_days=(1, 2), people_default=400, attack_share=0.01)


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def _points(base: dict[str, Any], grid: list[str]) -> list[sw.Point]:
    return sw.expand(base, sw.parse_grid(grid))


def _csv(values: Sequence[Any]) -> str:
    return ",".join(str(v) for v in values)


def _money(minor: float, currency: str) -> str:
    return format_money(Money(round(minor), currency))


def _words(text: str) -> str:
    """A paragraph written across source lines, as one line of markdown."""
    return " ".join(text.split())


def _share(x: float) -> str:
    return f"{100 * x:.2f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _check(results: Sequence[dict[str, Any]]) -> None:
    for result in results:
        if result.get("error"):
            raise sw.SweepError(f"a point failed: {result['error']}", code="evidence.failed")


def _people_base(base: dict[str, Any], people: int) -> dict[str, Any]:
    """The base at another size, its shops in the same proportion."""
    data = {**base, "population": dict(base["population"])}
    ratio = base["population"]["merchants"] / base["population"]["people"]
    data["population"]["people"] = people
    data["population"]["merchants"] = max(1, round(people * ratio))
    return data


def _save(fig: Any, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=110)
    plt.close(fig)
    return f"evidence/{name}.png"


# -- (a) the liquidity pool ------------------------------------------------------------------


def pool_size(base: dict[str, Any], scale: Scale, run: Runner, folder: Path) -> Section:
    """For each population and outage: the pool's peak when it is never short (what makes
    every payment that can borrow settle at once), then a grid of fractions of that peak for
    the smallest pool that lets 99 % settle without waiting."""
    currency = base.get("currency", "SEK")
    section = Section("a. How large must the central bank's liquidity pool be?")
    rows, curves = [], {}
    for people in scale.people:
        sized = _people_base(base, people)
        sized["liquidity"] = {"policy": "pool", "pool": people * 3_000_00}
        unlimited = _points(sized, [f"outage_days={_csv(scale.outage_days)}"])
        first = run(unlimited)
        _check(first)
        for point, result in zip(unlimited, first, strict=True):
            days = point.grid["outage_days"]
            peak = int(result["pool_peak"])
            ceiling = float(result["settled_without_waiting_share"])
            fractions = [f for f in scale.pool_fractions if f < 1.0]
            pools = sorted({max(1, math.floor(peak * f)) for f in fractions} - {peak})
            # a pool of 0 runs as the queue: what an empty pool gives (the sweep's own rule)
            tried = _points(sized, [f"outage_days={days}", f"pool={_csv([0, *pools])}"])
            found = run(tried)
            _check(found)
            by_pool = {
                int(p.grid["pool"]): float(r["settled_without_waiting_share"])
                for p, r in zip(tried, found, strict=True)
            }
            by_pool[peak] = ceiling
            curves[(people, days)] = sorted(by_pool.items())
            need_99 = min((p for p, s in by_pool.items() if s >= 0.99), default=None)
            rows.append(
                (
                    f"{people:,}",
                    days,
                    _share(by_pool[0]),
                    _money(need_99, currency) if need_99 is not None else "not reached",
                    _money(peak, currency),
                    _money(peak / people, currency),
                    _share(ceiling),
                    int(result["shortfalls"]),
                )
            )
    section.text += [
        _words(
            """Under the `pool` rule a payment the payer's shadow wallet cannot cover yet
            borrows the gap from the central bank's pool, up to what the payer's card says it
            received offline and has not yet repaid; the loan is repaid from the next money that
            reaches the payer. Each row runs the town at one size through one outage: first with
            a pool that is never short (its peak is the size that makes every payment that can
            borrow settle at once), then with smaller pools."""
        ),
        "",
        *_table(
            (
                "people",
                "outage (days)",
                "settle at once with no pool",
                "pool for 99 %",
                "pool for 100 % (its peak)",
                "per person",
                "settle at once, pool never short",
                "shortfalls",
            ),
            rows,
        ),
        "A payment that the pool cannot help waits whatever its size: its gap is larger than what "
        "its payer received offline (the card spent its own money twice over before it synced). "
        "Where the last column but one is below 100 %, no pool reaches 100 %.",
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    for (people, days), curve in sorted(curves.items()):
        xs = [p / 100 / people for p, _ in curve]
        ax.plot(xs, [100 * s for _, s in curve], marker="o", label=f"{people:,} people, {days} d")
    ax.set_xlabel(f"pool per person ({currency})")
    ax.set_ylabel("payments settled without waiting (%)")
    ax.set_title("Liquidity pool size against payments that wait")
    ax.legend(fontsize=8)
    section.figures.append(_save(fig, folder, "pool"))
    return section


# -- (b) broken devices ----------------------------------------------------------------------


def broken_devices(base: dict[str, Any], scale: Scale, run: Runner, folder: Path) -> Section:
    """Broken cards under the report's limits and alternatives. Their holders keep their cards
    topped up to the limit (the worst case: a copy takes what the card held when copied)."""
    currency = base.get("currency", "SEK")
    section = Section("b. What can a cloned or rolled-back card take before it is caught?")
    limits_tried = (1_000_00, 3_000_00, 6_000_00)
    rows, bars, by_limit = [], [], {}
    broken = 2 * round(scale.attack_share * scale.people_default)
    for limit in limits_tried:
        data = _people_base(base, scale.people_default)
        data["behaviour"] = {**data["behaviour"], "top_up_to": limit}
        data["attacks"] = {
            "cloned_cards": scale.attack_share,
            "rolled_back_cards": scale.attack_share,
            "start_hour": 12,
            "hours": 48,
            "payments": 5,
            "amount": "all",
        }
        grid = [f"limits.card_max_balance={limit}", "limits.card_max_offline_transactions=5,10"]
        points = _points(data, grid)
        results = run(points)
        _check(results)
        for point, r in zip(points, results, strict=True):
            count = int(point.grid["limits.card_max_offline_transactions"])
            taken = int(r["attack_value_taken"])
            per_device = taken / broken if broken else 0
            by_limit[(limit, count)] = per_device
            rows.append(
                (
                    _money(limit, currency),
                    count,
                    broken,
                    f"{int(r['attack_payments_made']):,} of {int(r['attack_payments']):,}",
                    _money(taken, currency),
                    _money(per_device, currency),
                    int(r["devices_blocked"]),
                    _money(int(r["losses"]), currency),
                    _money(int(r["loss_bound"]), currency),
                    _money(per_device * 0.001 * 1_000_000, currency),
                )
            )
            bars.append((f"{limit // 100:,} / {count}", per_device / 100))
    low, high = by_limit[(limits_tried[0], 5)], by_limit[(limits_tried[-1], 5)]
    counts = [by_limit[(limit, 10)] - by_limit[(limit, 5)] for limit in limits_tried]
    section.text += [
        _words(
            f"""{broken} of {scale.people_default:,} people's cards are broken at hour 12:
            half cloned (a twin with the card's key and state pays at shops), half rolled back
            (the card's memory is written back past its anti-rollback and it spends again).
            Each tries five payments of everything it holds over two days, while the town lives
            through its outage; their holders keep their cards topped up to the balance limit,
            the worst case. The protocol catches a broken card when its evidence reaches an
            intermediary, blocks and revokes it, and records the loss against the bound the
            policy puts on it (the card balance limit for each card caught). A broken card
            whose copy's payments were refused, or whose evidence had not reached an
            intermediary by the end of the week, is not counted as caught."""
        ),
        "",
        *_table(
            (
                "card balance limit",
                "offline payments",
                "broken cards",
                "attack payments made",
                "taken",
                "per broken card",
                "caught",
                "losses recorded",
                "their bound",
                "expected loss, 0.1 % of 1M cards broken",
            ),
            rows,
        ),
        _words(
            f"""Per broken card, what is taken goes from {_money(low, currency)} at a limit of
            {_money(limits_tried[0], currency)} to {_money(high, currency)} at
            {_money(limits_tried[-1], currency)}; allowing 10 offline payments instead of 5
            changes it by {_money(max(counts, key=abs), currency)} at most."""
        ),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([b[0] for b in bars], [b[1] for b in bars])
    ax.set_xlabel(f"card balance limit ({currency}) / offline payments")
    ax.set_ylabel(f"taken per broken card ({currency})")
    ax.set_title("What a broken card takes, by limits")
    section.figures.append(_save(fig, folder, "broken"))
    return section


# -- (c) balance against tokens --------------------------------------------------------------


FIGURES_C = (
    ("payments_made", "payments made", "n"),
    ("refused_share", "refused", "share"),
    ("settlement_delay_hours_p50", "settlement delay, median (h)", "f"),
    ("settlement_delay_hours_p99", "settlement delay, 99th percentile (h)", "f"),
    ("shortfalls", "payments that waited for liquidity", "n"),
    ("online_peak_per_hour", "peak syncs in one hour (load when the outage ends)", "n"),
    ("messages", "messages", "n"),
    ("bytes_carried", "bytes carried", "n"),
    ("device_storage_peak_bytes", "largest device storage (bytes)", "n"),
)


def schemes(base: dict[str, Any], scale: Scale, run: Runner, folder: Path) -> Section:
    section = Section("c. Balance-based against token-based, on the same population")
    data = _people_base(base, scale.people_default)
    points = _points(data, ["scheme=balance,tokens"])
    results = run(points)
    _check(results)
    rows = []
    for key, label, kind in FIGURES_C:
        cells = []
        for r in results:
            value = r.get(key)
            if value is None:
                cells.append("not measured")
            elif kind == "share":
                cells.append(_share(float(value)))
            elif kind == "f":
                cells.append(f"{float(value):.1f}")
            else:
                cells.append(f"{int(value):,}")
        rows.append((label, *cells))
    section.text += [
        "The same people, shops, payments and outage, once with cards and shadow wallets "
        "(e-krona phase 4) and once with sign-once tokens (FEDS 2025-105).",
        "",
        *_table(("", "balance-based", "token-based"), rows),
    ]
    made = [max(1, int(r.get("payments_made", 0))) for r in results]
    section.text += [
        "",
        _words(
            f"""Per payment made, the balance scheme carried
            {_per(results[0], "bytes_carried", made[0])} and the token scheme
            {_per(results[1], "bytes_carried", made[1])} between devices, apps and
            intermediaries: a token carries its ancestry (every transfer, split and merge since it
            was minted, until renewal), a card's payment only itself, while a card's sync carries
            its log. The largest device held {_per(results[0], "device_storage_peak_bytes", 1)}
            (a card's sealed state) against {_per(results[1], "device_storage_peak_bytes", 1)}
            (an element's tokens with their ancestries)."""
        ),
    ]

    def figure(key: str) -> list[float]:
        return [float(r.get(key) or 0) for r in results]

    carried = [b / m for b, m in zip(figure("bytes_carried"), made, strict=True)]
    panels = (
        ("median settlement delay (h)", figure("settlement_delay_hours_p50")),
        ("bytes carried per payment made", carried),
        ("largest device storage (bytes)", figure("device_storage_peak_bytes")),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 4))
    for ax, (label, values) in zip(axes, panels, strict=True):
        ax.bar(["balance-based", "token-based"], values, color=["tab:blue", "tab:orange"])
        ax.set_title(label, fontsize=10)
    fig.suptitle("Balance-based against token-based, on the same population")
    fig.tight_layout()
    section.figures.append(_save(fig, folder, "schemes"))
    return section


def _per(result: dict[str, Any], key: str, divisor: int) -> str:
    """A byte figure of a run, divided (per payment), for the text; "not measured" if absent."""
    value = result.get(key)
    return "not measured" if value is None else f"{int(value) / divisor:,.0f} bytes"


# -- (d) what the limits cost ----------------------------------------------------------------


def limits(base: dict[str, Any], scale: Scale, run: Runner, folder: Path) -> Section:
    section = Section("d. What do the report's limits cost in refused payments?")
    data = _people_base(base, scale.people_default)
    counts = (5, 10, 20, 40)
    terminals = (12, 50, 200, 1000)
    grid = [
        f"outage_days={_csv(scale.outage_days)}",
        f"limits.card_max_offline_transactions={_csv(counts)}",
        f"limits.terminal_max_offline_payments={_csv(terminals)}",
    ]
    points = _points(data, grid)
    results = run(points)
    _check(results)
    table: dict[tuple[int, int, int], dict[str, Any]] = {}
    for point, r in zip(points, results, strict=True):
        key = (
            int(point.grid["outage_days"]),
            int(point.grid["limits.card_max_offline_transactions"]),
            int(point.grid["limits.terminal_max_offline_payments"]),
        )
        table[key] = r
    rows, halves = [], []
    codes = sorted({k for r in results for k in r if k.startswith("refused.")})
    for days in scale.outage_days:
        report = table[(days, 5, 12)]
        rows.append(
            (
                days,
                _share(float(report["refused_share"])),
                *(f"{int(report.get(c, 0)):,}" for c in codes),
            )
        )
        goal = float(report["refused_share"]) / 2
        options = sorted(
            (k for k in table if k[0] == days and float(table[k]["refused_share"]) <= goal),
            key=lambda k: (k[1], k[2]),
        )
        if options:
            _, card, terminal = options[0]
            halves.append(
                (
                    days,
                    _share(float(report["refused_share"])),
                    f"{card} payments per card, {terminal} per terminal",
                    _share(float(table[options[0]]["refused_share"])),
                )
            )
        else:
            best = min((k for k in table if k[0] == days), key=lambda k: table[k]["refused_share"])
            leading = max(
                (c for c in codes if table[best].get(c)), key=lambda c: table[best][c], default=""
            )
            halves.append(
                (
                    days,
                    _share(float(report["refused_share"])),
                    f"none in the grid; the fewest refusals, with {best[1]} per card and "
                    f"{best[2]} per terminal, are mostly `{leading.removeprefix('refused.')}`",
                    _share(float(table[best]["refused_share"])),
                )
            )
    section.text += [
        "The report's limits (§3.3): 5 offline transactions and SEK 3 000 per card, 12 payments "
        "and SEK 20 000 per terminal. Refused payments by the rule that refused them:",
        "",
        *_table(("outage (days)", "refused", *(c.removeprefix("refused.") for c in codes)), rows),
        "Which limits would halve the refused payments at the same exposure? A broken card "
        "cannot take more than its balance limit and a terminal holds at most its amount limit, "
        "so the grid keeps both amounts and varies only the counts (cards: "
        f"{_csv(counts)}; terminals: {_csv(terminals)}). The fewest payments per card, then per "
        "terminal, that halve them:",
        "",
        *_table(("outage (days)", "refused (report)", "halved by", "refused then"), halves),
    ]
    section.text += _alternatives(data, scale, run, table)
    fig, ax = plt.subplots(figsize=(7, 4))
    for card in counts:
        ys = [100 * float(table[(d, card, 12)]["refused_share"]) for d in scale.outage_days]
        ax.plot(scale.outage_days, ys, marker="o", label=f"{card} per card, 12 per terminal")
    ax.set_xlabel("outage (days)")
    ax.set_ylabel("payments refused (%)")
    ax.set_title("Refused payments by outage length and card limit")
    ax.legend(fontsize=8)
    section.figures.append(_save(fig, folder, "limits"))
    return section


# The limits the references name beyond the pilot's (docs/limits.md), as alternatives to the
# report's: amounts in minor units of the scenario's currency (SEK), the counts relaxed where an
# amount takes over from them; the last three add the limits on time (per day: e₹; offline
# hours: Bank of Canada, Crunchfish) to the offline total.
ALTERNATIVES: tuple[tuple[str, dict[str, int]], ...] = (
    (
        "40 per card, 200 per terminal; at most SEK 3 000 spent offline between syncs",
        {
            "card_max_offline_transactions": 40,
            "terminal_max_offline_payments": 200,
            "card_max_offline_spent": 3_000_00,
        },
    ),
    (
        "40 per card, 200 per terminal; SEK 3 000 between syncs; at most SEK 500 a payment",
        {
            "card_max_offline_transactions": 40,
            "terminal_max_offline_payments": 200,
            "card_max_offline_spent": 3_000_00,
            "payment_max": 500_00,
        },
    ),
    (
        "40 per card, 200 per terminal; at most SEK 1 500 spent offline between syncs",
        {
            "card_max_offline_transactions": 40,
            "terminal_max_offline_payments": 200,
            "card_max_offline_spent": 1_500_00,
        },
    ),
    (
        "the report's counts; at most SEK 200 a payment",
        {"payment_max": 200_00},
    ),
    (
        "40 per card, 200 per terminal; SEK 3 000 between syncs; 20 payments, SEK 1 500 a day",
        {
            "card_max_offline_transactions": 40,
            "terminal_max_offline_payments": 200,
            "card_max_offline_spent": 3_000_00,
            "card_max_daily_payments": 20,
            "card_max_daily_spent": 1_500_00,
        },
    ),
    (
        "40 per card, 200 per terminal; SEK 3 000 between syncs; 72 hours offline at most",
        {
            "card_max_offline_transactions": 40,
            "terminal_max_offline_payments": 200,
            "card_max_offline_spent": 3_000_00,
            "max_offline_hours": 72,
        },
    ),
    (
        "40 per card, 200 per terminal; SEK 3 000 between syncs; 48 hours offline at most",
        {
            "card_max_offline_transactions": 40,
            "terminal_max_offline_payments": 200,
            "card_max_offline_spent": 3_000_00,
            "max_offline_hours": 48,
        },
    ),
)

# The same population with sign-once tokens under the limits token elements enforce: a holding
# limit (the digital euro's proposed €3 000–4 000) equal to the report's card balance limit, so
# that one broken element can take no more than one broken card (the same exposure), alone and
# with the other limits elements enforce.
TOKENS_UNLIMITED = "tokens, no element limits"
TOKEN_ALTERNATIVES: tuple[tuple[str, dict[str, int]], ...] = (
    (TOKENS_UNLIMITED, {}),
    ("tokens; at most SEK 3 000 held", {"element_max_holding": 3_000_00}),
    (
        "tokens; SEK 3 000 held; at most 10 ancestors offline",
        {"element_max_holding": 3_000_00, "token_max_ancestry": 10},
    ),
    (
        "tokens; SEK 3 000 held; SEK 3 000 between online moments; 20 payments a day; "
        "72 hours offline",
        {
            "element_max_holding": 3_000_00,
            "card_max_offline_spent": 3_000_00,
            "card_max_daily_payments": 20,
            "max_offline_hours": 72,
        },
    ),
)


def _alternatives(
    data: dict[str, Any], scale: Scale, run: Runner, table: dict[tuple[int, int, int], Any]
) -> list[str]:
    """The report's limits against the alternatives the references name, per outage length:
    the payments refused and the most one broken card can take offline (its exposure: the
    balance limit, or the offline total where that is lower); then the token scheme under the
    limits its elements enforce (a broken element's exposure: its holding limit); then which
    of them halve the report's refused payments at no more exposure."""
    currency = data.get("currency", "SEK")
    balance = int(data.get("limits", {}).get("card_max_balance", 3_000_00))
    rows, token_rows = [], []
    shares: dict[tuple[int, str], float] = {}
    exposures: dict[str, int | None] = {}
    for days in scale.outage_days:
        report = table[(days, 5, 12)]
        shares[(days, REPORT_LIMITS)] = float(report["refused_share"])
        rows.append(
            (days, REPORT_LIMITS, _share(float(report["refused_share"])),
             _money(balance, currency), _leading(report))
        )  # fmt: skip
    runs = [(name, limits, "balance", rows) for name, limits in ALTERNATIVES]
    runs += [(name, limits, "tokens", token_rows) for name, limits in TOKEN_ALTERNATIVES]
    for name, limits, scheme, out in runs:
        alt = {**data, "scheme": scheme, "limits": {**data.get("limits", {}), **limits}}
        points = _points(alt, [f"outage_days={_csv(scale.outage_days)}"])
        results = run(points)
        _check(results)
        if scheme == "tokens":
            exposures[name] = limits.get("element_max_holding")
        else:
            exposures[name] = min(balance, limits.get("card_max_offline_spent", balance))
        most = exposures[name]
        shown = "no policy bound" if most is None else _money(most, currency)
        for point, r in zip(points, results, strict=True):
            days = int(point.grid["outage_days"])
            shares[(days, name)] = float(r["refused_share"])
            out.append((days, name, _share(shares[(days, name)]), shown, _leading(r)))
    rows.sort(key=lambda row: row[0])
    token_rows.sort(key=lambda row: row[0])
    longest = max(scale.outage_days)
    (wide, wide_limits), _, (narrow, narrow_limits) = ALTERNATIVES[:3]
    most = [min(balance, x["card_max_offline_spent"]) for x in (wide_limits, narrow_limits)]
    summary = (
        f"Over {longest} days, an offline total of {_money(most[1], currency)} instead of "
        f"{_money(most[0], currency)} lowers what one broken card can take to "
        f"{_money(most[1], currency)}, and refuses {_share(shares[(longest, narrow)])} of "
        f"payments against {_share(shares[(longest, wide)])}."
    )
    header = ("outage (days)", "limits", "refused", "one broken device takes at most",
              "refused most by")  # fmt: skip
    return [
        "The references name other limits (docs/limits.md): a maximum per payment (RBI: ₹200; "
        "e-CNY hardware wallets: ¥500), a total spent offline since the last sync apart from "
        "the balance (RBI: ₹2 000), limits per day (e₹: ₹50 000 or 20 transfers), on the "
        "time a card or element may stay offline (Bank of Canada, Crunchfish), on a token's "
        "ancestry (Federal Reserve) and on what an element holds (digital euro). The simulator "
        "models each (docs/simulator.md); the same population under them, with what one "
        "broken card can take offline at most:",
        "",
        *_table(header, rows),
        _words(summary),
        "",
        "The same population with sign-once tokens, under the limits its elements enforce; "
        "a broken element takes at most what it holds, which its holding limit bounds "
        "(equal to the report's card balance limit here: the same exposure):",
        "",
        *_table(header, token_rows),
        _words(
            """One policy binds every element of an intermediary, shops' elements included: a
            holding limit refuses what a shop's element would take beyond it between the shop's
            deposits (`element_max_holding` above), as much as what a person's would."""
        ),
        *_halving(scale, shares, exposures, balance, currency),
    ]


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _halving(
    scale: Scale,
    shares: dict[tuple[int, str], float],
    exposures: dict[str, int | None],
    balance: int,
    currency: str,
) -> list[str]:
    """Per outage length, the alternatives that refuse at most half the payments the report's
    limits refuse, at no more exposure than the report's balance limit; or the closest."""
    lines = []
    for days in scale.outage_days:
        goal = shares[(days, REPORT_LIMITS)] / 2
        same = [n for n, most in exposures.items() if most is not None and most <= balance]
        halving = [n for n in same if shares[(days, n)] <= goal]
        if halving:
            named = "; ".join(f"{n} ({_share(shares[(days, n)])})" for n in halving)
            report = _share(shares[(days, REPORT_LIMITS)])
            lines.append(
                f"* {_days(days)}: the report's limits refuse {report}; halved by {named}."
            )
        else:
            best = min(same, key=lambda n: shares[(days, n)])
            lines.append(
                f"* {_days(days)}: the report's limits refuse "
                f"{_share(shares[(days, REPORT_LIMITS)])}; none of these halves it at no more "
                f"exposure than {_money(balance, currency)}; the fewest refusals: {best} "
                f"({_share(shares[(days, best)])})."
            )
    return [
        "",
        "Which of these halve the refused payments at the same exposure (what one broken "
        f"device can take offline at most no more than {_money(balance, currency)})?",
        "",
        *lines,
        "",
    ]


REPORT_LIMITS = "the report's (5 per card, 12 per terminal)"


def _leading(result: dict[str, Any]) -> str:
    """The three limits that refused the most payments in ``result``, with their counts."""
    codes = sorted(
        (c for c in result if c.startswith("refused.limit.") and result[c]),
        key=lambda c: -int(result[c]),
    )
    return ", ".join(f"{c.removeprefix('refused.limit.')} {int(result[c]):,}" for c in codes[:3])


# -- (e) the four liquidity rules ------------------------------------------------------------


def liquidity(base: dict[str, Any], scale: Scale, run: Runner, folder: Path) -> Section:
    currency = base.get("currency", "SEK")
    section = Section("e. The four liquidity rules on the same population")
    data = _people_base(base, scale.people_default)
    data["liquidity"] = {"policy": "queue", "pool": scale.people_default * 3_000_00}
    points = _points(data, ["policy=queue,restrict,pool,receipts"])
    results = run(points)
    _check(results)
    rows = [
        (
            p.grid["policy"],
            _share(float(r["refused_share"])),
            f"{int(r['shortfalls']):,}",
            _money(int(r["shortfall_value"]), currency),
            f"{float(r['shortfall_wait_hours_p50']):.1f} / "
            f"{float(r['shortfall_wait_hours_max']):.1f}",
            f"{int(r['shortfalls_still_waiting']):,}",
            _money(int(r["pool_peak"]), currency),
        )
        for p, r in zip(points, results, strict=True)
    ]
    section.text += [
        "Report §3.7: Alice pays Bob offline, Bob pays Charlie with that money, Charlie syncs "
        "first and Bob's shadow wallet cannot cover the payment yet. `queue` lets it wait until "
        "money reaches Bob; `restrict` stops Bob's card from spending what it received offline; "
        "`pool` borrows the gap from the central bank; `receipts` has Bob's card hand over the "
        "payment that funded it, so whoever syncs first settles both in order.",
        "",
        *_table(
            (
                "rule",
                "refused",
                "waited",
                "value that waited",
                "wait, median / longest (h)",
                "still waiting at the end",
                "pool peak",
            ),
            rows,
        ),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([p.grid["policy"] for p in points], [int(r["shortfalls"]) for r in results])
    ax.set_ylabel("payments that waited")
    ax.set_title("Shortfalls by liquidity rule")
    section.figures.append(_save(fig, folder, "liquidity"))
    return section


QUESTIONS = (pool_size, broken_devices, schemes, limits, liquidity)


def build(base_path: Path, out: Path, scale: Scale, run: Runner) -> Path:
    """Answer every question and write ``out`` (markdown) with its plots beside it in
    ``evidence/``; returns ``out``."""
    base = sw.read_base(base_path)
    folder = out.parent / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    sections = [question(base, scale, run, folder) for question in QUESTIONS]
    lines = [
        "# Evidence: what offline payments cost a population",
        "",
        f"Generated by `offpay sim evidence` ({scale.name} scale) from "
        f"`{base_path.as_posix()}`; do not edit by hand. Every behavioural assumption and its "
        "public source is in the header of that file; the model and its limits are in "
        "docs/simulator.md. Every figure comes from the fast executor, which the fidelity tests "
        "hold to the real protocol event by event.",
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", *section.text, ""]
        lines += [f"![{section.title}]({figure})" for figure in section.figures]
        lines += [""]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
