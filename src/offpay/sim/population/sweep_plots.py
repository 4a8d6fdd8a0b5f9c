"""Plots across a sweep's grid: each figure worth seeing against the first grid key, one line
per value of the other keys (PNG for reading, SVG for print), drawn with matplotlib's
object API so that no global backend or pyplot state is touched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offpay.money import exponent


@dataclass(frozen=True)
class Figure:
    name: str  # the summary figure
    title: str
    unit: str  # "share", "count", "hours", or "money" (minor units, shown in the currency)


PLOTTED: tuple[Figure, ...] = (
    Figure("refused_share", "Payments refused", "share"),
    Figure("settled_without_waiting_share", "Payments settled without waiting", "share"),
    Figure("shortfalls", "Shortfalls: payments that waited for money", "count"),
    Figure("shortfall_value", "Value of the shortfalls", "money"),
    Figure("shortfalls_still_waiting", "Shortfalls still waiting at the end", "count"),
    Figure("shortfall_wait_hours_p99", "Shortfall wait, 99th percentile", "hours"),
    Figure("settlement_delay_hours_p99", "Settlement delay, 99th percentile", "hours"),
    Figure("pool_peak", "Liquidity pool: peak outstanding", "money"),
    Figure("losses", "Losses to broken devices", "money"),
    Figure("online_peak_per_hour", "Online load: busiest hour", "count"),
)

# grid keys whose values are amounts (minor units once the scenario has read them)
MONEY_KEYS = {
    "pool",
    "liquidity.pool",
    "limits.card_max_balance",
    "limits.terminal_max_received",
    "behaviour.top_up_to",
    "behaviour.online_wallet",
    "behaviour.amount.median",
    "behaviour.amount.min",
    "behaviour.amount.max",
}
KEY_LABELS = {"outage_days": "outage (days)"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _money_formatter(currency: str) -> Any:
    from matplotlib.ticker import FuncFormatter

    scale = 10 ** exponent(currency)
    return FuncFormatter(lambda v, _pos: f"{v / scale:,.0f}".replace(",", " "))


def _x_label(key: str, currency: str) -> str:
    if key in MONEY_KEYS:
        return f"{key} ({currency})"
    return KEY_LABELS.get(key, key)


def _y_label(figure: Figure, currency: str) -> str:
    return {"share": "share", "count": "count", "hours": "hours", "money": currency}[figure.unit]


def worth_plotting(rows: Sequence[dict[str, Any]]) -> list[Figure]:
    """The figures the sweep measured and that are not zero at every point: a flat zero has
    nothing to show (no attacks, no losses)."""
    ok = [r for r in rows if not r.get("error")]
    return [
        f
        for f in PLOTTED
        if ok and all(_number(r.get(f.name)) for r in ok) and any(r[f.name] for r in ok)
    ]


def plot(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    values: dict[str, Sequence[Any]],
    out: Path,
    currency: str = "SEK",
) -> list[Path]:
    """One PNG and one SVG per figure worth plotting; ``values`` gives each key's values in
    the grid's order (the order of a text axis such as the policy)."""
    from matplotlib.figure import Figure as MplFigure

    ok = [r for r in rows if not r.get("error")]
    if not ok or not keys:
        return []
    x_key, others = keys[0], list(keys[1:])
    xs = list(values[x_key])
    numeric_x = all(_number(v) for v in xs)
    if numeric_x:
        xs = sorted(xs)
    lines = sorted(
        {tuple(r[k] for k in others) for r in ok}, key=lambda t: _order(t, others, values)
    )
    written: list[Path] = []
    for figure in worth_plotting(rows):
        fig = MplFigure(figsize=(7.5, 4.5), layout="constrained")
        ax = fig.add_subplot()
        for line in lines:
            mine = {r[x_key]: r[figure.name] for r in ok if tuple(r[k] for k in others) == line}
            at = [x for x in xs if x in mine]
            pos = at if numeric_x else [xs.index(x) for x in at]
            label = ", ".join(
                f"{k}={_show(v, k, currency)}" for k, v in zip(others, line, strict=True)
            )
            ax.plot(pos, [mine[x] for x in at], marker="o", label=label or None)
        if numeric_x:
            positive = [x for x in xs if x > 0]
            if positive and max(xs) / min(positive) >= 100:
                ax.set_xscale("symlog", linthresh=min(positive))
            ax.set_xticks(xs)
            if x_key in MONEY_KEYS:
                ax.xaxis.set_major_formatter(_money_formatter(currency))
        else:
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        if figure.unit == "money":
            ax.yaxis.set_major_formatter(_money_formatter(currency))
        if figure.unit == "share":
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(_x_label(x_key, currency))
        ax.set_ylabel(_y_label(figure, currency))
        ax.set_title(figure.title)
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize="small")
        for suffix in ("png", "svg"):
            path = out / f"sweep-{figure.name}.{suffix}"
            fig.savefig(path, dpi=120, metadata=_metadata(suffix))
            written.append(path)
    return written


def _metadata(suffix: str) -> dict[str, Any]:
    """No date in the files: the same sweep gives the same SVG."""
    return {"Date": None} if suffix == "svg" else {}


def _order(line: tuple[Any, ...], keys: Sequence[str], values: dict[str, Sequence[Any]]) -> list:
    return [
        list(values[k]).index(v) if v in values[k] else 0 for k, v in zip(keys, line, strict=True)
    ]


def _show(value: Any, key: str, currency: str) -> str:
    if key in MONEY_KEYS and isinstance(value, int):
        from offpay.money import Money, format_money

        return format_money(Money(value, currency))
    return str(value)
