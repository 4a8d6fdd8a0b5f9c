"""The run's plots, each answering one question a policy maker asks, drawn with matplotlib's
Agg backend (no display needed) and written as PNG and SVG.

Every plot is drawn for every run, also when it has nothing to show (no refusal, no pool): the
plot then says so, so that two reports always have the same sections. Money is plotted in whole
currency units, time in hours (days for runs longer than two days).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from offpay.money import Money, exponent, format_money
from offpay.sim.population.describe import plural
from offpay.sim.population.metrics import Masks, pool_by_period
from offpay.sim.population.outcomes import CODES, NEVER, OK, UNREACHABLE
from offpay.sim.population.run import Run

DPI = 110
SIZE = (8.0, 4.2)


@dataclass(frozen=True)
class Plot:
    """One drawn plot: its file stem, title, what it shows in one sentence, and its PNG."""

    name: str
    title: str
    caption: str
    png: bytes

    @property
    def png_base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Timeline:
    """Hourly bins of a run and how to label them."""

    hours: int
    in_days: bool

    @classmethod
    def of(cls, run: Run) -> Timeline:
        minutes = run.scenario.minutes
        return cls(hours=max(1, -(-minutes // 60)), in_days=minutes > 2 * 24 * 60)

    @property
    def label(self) -> str:
        return "time since the start (days)" if self.in_days else "time since the start (hours)"

    def x(self, hours: np.ndarray) -> np.ndarray:
        return hours / 24.0 if self.in_days else hours

    def per_hour(self, minutes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Count (or exact integer sum of ``weights``) per hour of the run."""
        out = np.zeros(self.hours, np.int64)
        hour = np.minimum(minutes // 60, self.hours - 1)
        np.add.at(out, hour, 1 if weights is None else weights.astype(np.int64))
        return out

    def bins(self) -> np.ndarray:
        return self.x(np.arange(self.hours) + 0.5)


def money_axis(axis: Axes, currency: str, which: str = "y") -> None:
    """Ticks in whole currency units ("12 000") and the currency in the label's place."""
    unit = 10 ** exponent(currency)

    def tick(value: float, _pos: int) -> str:
        return f"{value / unit:,.0f}".replace(",", " ")

    target = axis.yaxis if which == "y" else axis.xaxis
    target.set_major_formatter(FuncFormatter(tick))
    target.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))


def _count_axis(axis: Axes) -> None:
    """Whole counts, thousands spaced as in the money ("140 000")."""
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}".replace(",", " ")))


def _nothing(axis: Axes, text: str) -> None:
    axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes, color="0.35")


def _outage(axis: Axes, run: Run, line: Timeline) -> None:
    outage = run.scenario.outage
    if outage is None:
        return
    start = outage.start_hour
    end = min(outage.start_hour + outage.hours, run.scenario.days * 24)
    axis.axvspan(*line.x(np.array([start, end])), color="0.88", zorder=0, label="outage")


def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = SIZE):
    fig, axes = plt.subplots(rows, cols, figsize=size, dpi=DPI, layout="constrained")
    return fig, axes


def refusals(run: Run, m: Masks) -> tuple[Figure, str]:
    line = Timeline.of(run)
    fig, ax = _figure()
    e, outcome = run.events, run.results.outcome
    drawn = 0
    bottom = np.zeros(line.hours, np.int64)
    width = line.x(np.array(1.0))
    for i, code in enumerate(CODES):
        if i in (OK, UNREACHABLE):
            continue
        mask = m.refused & (outcome == i)
        if mask.any():
            counts = line.per_hour(e.t[mask])
            colour = plt.get_cmap("tab20")(i % 20)  # one colour per rule, also past ten
            ax.bar(line.bins(), counts, width=width, bottom=bottom, label=code, color=colour)
            bottom += counts
            drawn += int(mask.sum())
    _outage(ax, run, line)
    if drawn:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        _nothing(ax, "no payment was refused")
    ax.set(title="Payments refused, by the rule that refused them", xlabel=line.label)
    ax.set_ylabel("payments refused per hour")
    _count_axis(ax)
    return fig, (
        f"{drawn:,} of {int(m.honest.sum()):,} payments were refused; each colour is one rule "
        "(a limit of the signed policy, the payer's funds, a revoked device), stacked per hour."
    )


def shortfalls(run: Run, m: Masks) -> tuple[Figure, str]:
    line = Timeline.of(run)
    r = run.results
    queued = m.payment & (r.queued_at != NEVER)
    fig, (count, value, wait) = _figure(1, 3, (11.0, 4.0))
    times = r.queued_at[queued]
    count.step(line.bins(), line.per_hour(times), where="mid", color="C3")
    count.set(title="Shortfalls arising", xlabel=line.label, ylabel="payments queued per hour")
    _count_axis(count)
    value.step(line.bins(), line.per_hour(times, r.moved[queued]), where="mid", color="C1")
    value.set(title="Value queued", xlabel=line.label, ylabel=f"{run.scenario.currency} per hour")
    money_axis(value, run.scenario.currency)
    waited = queued & (r.settled_at != NEVER)
    hours = (r.settled_at[waited] - r.queued_at[waited]) / 60.0
    if len(hours):
        wait.hist(hours, bins=min(40, max(5, len(hours))), color="C2")
    else:
        _nothing(wait, "no payment waited")
    wait.set(title="Time waiting", xlabel="hours in the queue", ylabel="payments")
    _count_axis(wait)
    for ax in (count, value):
        _outage(ax, run, line)
    if not queued.any():
        _nothing(count, "no shortfall")
        _nothing(value, "no shortfall")
    still = int((queued & (r.settled_at == NEVER)).sum())
    return fig, (
        f"{plural(int(queued.sum()), 'payment')} found the payer's shadow wallet short and "
        f"waited in the settlement queue; {still:,} were still waiting at the end."
    )


def pool(run: Run, m: Masks) -> tuple[Figure, str]:
    line = Timeline.of(run)
    s = run.scenario
    fig, ax = _figure()
    currency = s.currency
    # Hourly peaks: the exact peak survives, and a week of millions of events stays a light
    # plot (and a small SVG).
    _end, hourly = pool_by_period(run, 60, line.hours)
    ax.step(line.bins(), hourly, where="mid", color="C0", label="outstanding loans (hourly peak)")
    peak = int(hourly.max()) if len(hourly) else 0
    if peak:
        at = int(np.argmax(hourly))
        ax.plot(line.bins()[at], peak, "o", color="C3", label="peak")
    if s.liquidity.pool:
        ax.axhline(s.liquidity.pool, color="0.4", linestyle="--", label="pool size")
    _outage(ax, run, line)
    if s.liquidity.policy.value != "pool":
        _nothing(ax, f"liquidity policy '{s.liquidity.policy.value}': no pool to draw from")
    ax.legend(fontsize="small", loc="upper left")
    ax.set(title="The central bank's liquidity pool", xlabel=line.label)
    ax.set_ylabel(f"outstanding ({currency})")
    ax.set_ylim(bottom=0)
    money_axis(ax, currency)
    return fig, (
        "What the liquidity pool had lent and not yet been repaid (the highest figure in each "
        f"hour); the dot marks the peak, {_money_label(peak, currency)}."
    )


def losses(run: Run, m: Masks) -> tuple[Figure, str]:
    r, s = run.results, run.scenario
    taken = int(r.moved[m.attack & (r.outcome == OK)].sum())
    fig, ax = _figure(size=(7.0, 4.0))
    labels = ["taken by broken devices", "recorded as losses", "bound of the policy"]
    values = [taken, int(r.losses), int(r.loss_bound)]
    bars = ax.bar(labels, values, color=["C3", "C1", "0.6"])
    ax.bar_label(bars, labels=[_money_label(v, s.currency) for v in values], fontsize="small")
    ax.set(title="Losses to cloned and rolled-back devices")
    ax.set_ylabel(f"value ({s.currency})")
    money_axis(ax, s.currency)
    if not (len(run.world.cloned) or len(run.world.rolled_back)):
        _nothing(ax, "the scenario breaks no device")
    return fig, (
        "What broken devices took in payments the shops accepted, what the intermediaries "
        "recorded as lost, and the bound the limits policy puts on that loss."
    )


def _money_label(minor: int, currency: str) -> str:
    return format_money(Money(minor, currency))


def settlement_delay(run: Run, m: Masks) -> tuple[Figure, str]:
    e, r = run.events, run.results
    settled = m.made & (r.settled_at != NEVER)
    hours = (r.settled_at[settled] - e.t[settled]) / 60.0
    fig, ax = _figure()
    if len(hours):
        ax.hist(hours, bins=60, color="C0")
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            at = float(np.percentile(hours, q))
            ax.axvline(at, color="C3", linestyle=style, label=f"{q}th percentile: {at:.1f} h")
        ax.legend(fontsize="small")
    else:
        _nothing(ax, "no payment settled")
    ax.set(
        title="Settlement delay: from payment to the notary's record",
        xlabel="hours from payment to settlement",
        ylabel="payments",
    )
    _count_axis(ax)
    unsettled = int((m.made & (r.settled_at == NEVER)).sum())
    return fig, (
        f"How long each of {len(hours):,} settled payments stayed offline before the central "
        f"bank recorded it; {unsettled:,} payments made had not settled by the end."
    )


def online_load(run: Run, m: Masks) -> tuple[Figure, str]:
    line = Timeline.of(run)
    e = run.events
    fig, ax = _figure()
    reached = line.per_hour(e.t[m.online & ~m.cut])
    cut = line.per_hour(e.t[m.cut])
    ax.step(line.bins(), reached, where="mid", label="reached their intermediary")
    ax.step(line.bins(), cut, where="mid", color="C3", label="cut off by the outage")
    _outage(ax, run, line)
    ax.legend(fontsize="small", loc="upper left")
    ax.set(title="Online load: devices going online", xlabel=line.label)
    ax.set_ylabel("devices per hour")
    _count_axis(ax)
    peak = int(reached.max()) if len(reached) else 0
    return fig, (
        f"Cards and terminals that synchronised each hour (peak {peak:,} an hour), and the "
        "attempts the outage cut off; when it ends, the devices cut off come back together."
    )


def extra_series(run: Run, m: Masks) -> tuple[Figure, str] | None:
    """Device storage, bytes carried and messages, when the executor measured them
    (``Results.extra``): per-event series are summed per hour, per-person ones shown as a
    distribution. None when the executor measured none."""
    extra = run.results.extra
    events, people = len(run.events), run.world.people
    per_event = {k: v for k, v in sorted(extra.items()) if len(v) == events}
    per_person = {k: v for k, v in sorted(extra.items()) if len(v) == people and k not in per_event}
    shown = list(per_event.items()) + list(per_person.items())
    if not shown:
        return None
    line = Timeline.of(run)
    fig, axes = _figure(1, len(shown), (4.0 * len(shown) + 1, 4.0))
    for ax, (key, values) in zip(np.atleast_1d(axes), shown, strict=True):
        label = key.replace("_", " ")
        if key in per_event:
            ax.step(line.bins(), line.per_hour(run.events.t, values), where="mid")
            ax.set(title=label, xlabel=line.label, ylabel=f"{label} per hour")
            _outage(ax, run, line)
        else:
            ax.hist(values, bins=30)
            ax.set(title=label, xlabel=f"{label} per device", ylabel="devices")
        _count_axis(ax)
    return fig, (
        "What the executor measured beyond outcomes: "
        + ", ".join(k.replace("_", " ") for k, _ in shown)
        + "."
    )


PLOTS: tuple[tuple[str, str, Callable[[Run, Masks], tuple[Figure, str] | None]], ...] = (
    ("refusals", "Payments refused by each limit", refusals),
    ("shortfalls", "Shortfalls: count, value and time waiting", shortfalls),
    ("pool", "The liquidity pool's outstanding loans", pool),
    ("losses", "Losses to broken devices against their bound", losses),
    ("settlement_delay", "Settlement delay", settlement_delay),
    ("online_load", "Online load and the surge after the outage", online_load),
    ("devices", "Device storage, bytes carried and messages", extra_series),
)


def make_plots(run: Run, out: Path, masks: Masks | None = None) -> list[Plot]:
    """Draw every plot the run has data for, write each as ``NAME.png`` and ``NAME.svg`` in
    ``out``, and return them in report order."""
    m = masks or Masks.of(run)
    plots = []
    for name, title, draw in PLOTS:
        drawn = draw(run, m)
        if drawn is None:
            continue
        fig, caption = drawn
        try:
            fig.savefig(out / f"{name}.svg", metadata={"Date": None})
            fig.savefig(out / f"{name}.png")
            png = (out / f"{name}.png").read_bytes()
        finally:
            plt.close(fig)
        plots.append(Plot(name=name, title=title, caption=caption, png=png))
    return plots
