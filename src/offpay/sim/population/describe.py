"""A scenario and its run in plain sentences, for the report's reader who never opens the TOML:
who is in the network, how they pay, what the outage cuts, which limits and which liquidity
rule apply; and the headline answers, with money formatted as people read it.
"""

from __future__ import annotations

from typing import Any

from offpay.money import Money, format_money
from offpay.policy import default_policy
from offpay.sim.population.scenario import Scenario
from offpay.wire.messages import Liquidity

LIQUIDITY_WORDS: dict[Liquidity, str] = {
    Liquidity.QUEUE: (
        "a payment its payer's shadow wallet cannot cover waits in the settlement queue until "
        "money reaches that wallet (the pilot's rule)"
    ),
    Liquidity.RESTRICT: (
        "money a card received offline cannot be spent offline before the card synchronises"
    ),
    Liquidity.POOL: (
        "settlement borrows a payer's gap from the central bank's liquidity pool, and repays "
        "it from the next money that reaches the payer"
    ),
    Liquidity.RECEIPTS: (
        "each payment carries the signed payments that fund it, and whoever synchronises "
        "first settles that chain in order"
    ),
}


def money(minor: int, currency: str) -> str:
    return format_money(Money(int(minor), currency))


def _hours(hours: float) -> str:
    if hours >= 24 and hours % 24 == 0:
        return plural(hours / 24, "day")
    return plural(hours, "hour")


def plural(n: float, noun: str) -> str:
    """``1 shop``, ``2 shops``, ``1,000 shops``, ``0.5 times``."""
    text = f"{n:,}" if isinstance(n, int) else f"{n:g}"
    return f"{text} {noun}" if n == 1 else f"{text} {noun}s"


def _shares(shares: tuple[Any, ...]) -> str:
    return ", ".join(f"{s.name} ({s.share:.0%})" for s in shares)


def describe(s: Scenario) -> list[str]:
    """The scenario in sentences, one per aspect, in the order a reader asks about them."""
    pop, b, cur = s.population, s.behaviour, s.currency
    scheme = (
        "sign-once tokens (Federal Reserve FEDS 2025-105)"
        if s.scheme.value == "tokens"
        else "card balances and shadow wallets (e-krona report §3.4–3.7)"
    )
    sentences = [
        f"{plural(pop.people, 'person').replace('persons', 'people')} and "
        f"{plural(pop.merchants, 'shop')} over {_hours(s.days * 24)}, "
        f"paying offline with {scheme}.",
        f"They bank with {_shares(pop.intermediaries)}"
        + (f" and live in {_shares(pop.regions)}." if len(pop.regions) > 1 else "."),
    ]
    if s.generate:
        sentences.append(
            f"Each person makes {b.payments_per_person_per_day:g} payments a day on average "
            f"between {b.active_hours[0]:02d}:00 and {b.active_hours[1]:02d}:00, "
            f"{b.person_to_person_share:.0%} of them to another person and the rest at shops; "
            f"amounts have a median of {money(b.amount.median, cur)} and range from "
            f"{money(b.amount.min, cur)} to {money(b.amount.max, cur)}."
        )
        sentences.append(
            f"A person goes online {plural(b.person_online_per_day, 'time')} a day on average "
            f"(which synchronises the card and tops it up to {money(b.top_up_to, cur)}), a "
            f"shop {plural(b.merchant_online_per_day, 'time')}; each person's online wallet "
            "starts at "
            f"{money(b.online_wallet, cur)}."
        )
    if s.script:
        sentences.append(
            f"{plural(len(s.script), 'event')} {'is' if len(s.script) == 1 else 'are'} given by "
            "hand (a script); cards are topped up to "
            f"{money(b.top_up_to, cur)} when their holder goes online."
        )
    if s.outage is None:
        sentences.append("There is no outage: devices reach their intermediary when they try.")
    else:
        o = s.outage
        who = " and ".join(
            part
            for part in (
                f"intermediaries {', '.join(o.intermediaries)}" if o.intermediaries else "",
                f"regions {', '.join(o.regions)}" if o.regions else "",
            )
            if part
        )
        sentences.append(
            f"From hour {o.start_hour:g}, for {_hours(o.hours)}, the devices of "
            f"{who or 'every intermediary'} cannot reach their intermediary; payments go on "
            f"offline, and the devices cut off try again within {o.reconnect_hours:g} hours "
            "after it ends."
        )
    sentences.append(limits_sentence(s))
    rule = LIQUIDITY_WORDS[s.liquidity.policy]
    pool = f" (a pool of {money(s.liquidity.pool, cur)})" if s.liquidity.pool else ""
    sentences.append(f"Liquidity rule '{s.liquidity.policy.value}'{pool}: {rule}.")
    a = s.attacks
    broken = [
        f"{share:.2%} {what}"
        for share, what in (
            (a.cloned_cards, "of cards are cloned"),
            (a.rolled_back_cards, "of cards are rolled back"),
            (a.broken_elements, "of token elements are broken"),
        )
        if share
    ]
    if broken:
        spend = "everything the copy holds" if a.amount == "all" else money(a.amount, cur)
        sentences.append(
            f"Attacks: {', '.join(broken)} at hour {a.start_hour:g}; each broken device "
            f"makes {plural(a.payments, 'shop payment')} of {spend} within {_hours(a.hours)}."
        )
    sentences.append(f"Random seed {s.seed}: the same file and seed give the same run.")
    return sentences


def limits_sentence(s: Scenario) -> str:
    p, base = s.policy, default_policy("report", 1, s.currency)
    cur = s.currency
    text = (
        f"Limits: a card makes at most {p.card_max_offline_transactions} offline transactions "
        f"and holds at most {money(p.card_max_balance.minor, cur)}; a shop terminal accepts "
        f"at most {p.terminal_max_offline_payments} payments and "
        f"{money(p.terminal_max_received.minor, cur)} offline"
    )
    same = (
        p.card_max_offline_transactions == base.card_max_offline_transactions
        and p.card_max_balance == base.card_max_balance
        and p.terminal_max_offline_payments == base.terminal_max_offline_payments
        and p.terminal_max_received == base.terminal_max_received
    )
    return text + (" (the e-krona report's limits, §3.3)." if same else " (changed from §3.3).")


MONEY_FIGURES = frozenset(
    {
        "pool_size",
        "value_paid",
        "value_refused",
        "shortfall_value",
        "pool_drawn",
        "pool_peak",
        "pool_outstanding_at_end",
        "attack_value_taken",
        "losses",
        "loss_bound",
    }
)


def figure_text(key: str, value: float, currency: str) -> str:
    """One summary figure as people read it: money formatted, counts spaced, shares in %."""
    if key in MONEY_FIGURES:
        return money(int(value), currency)
    if key.endswith("_share"):
        return f"{value:.2%}"
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    return f"{value:.4g}"


def headlines(summary: dict[str, Any], currency: str) -> list[tuple[str, str]]:
    """The answers a reader looks for first, as (question, answer) pairs of text."""
    pays = summary["payments"]
    refused = summary["payments_refused"]
    codes = sorted(
        ((k.removeprefix("refused."), v) for k, v in summary.items() if k.startswith("refused.")),
        key=lambda kv: -kv[1],
    )
    why = "; ".join(f"{code}: {n:,}" for code, n in codes) or "none"
    rows = [
        (
            "Payments made",
            f"{summary['payments_made']:,} of {pays:,} ({money(summary['value_paid'], currency)})",
        ),
        ("Payments refused", f"{refused:,} ({summary['refused_share']:.2%}); by rule: {why}"),
        (
            "Settled without waiting",
            f"{summary['settled_without_waiting_share']:.2%} of payments made",
        ),
        (
            "Shortfalls",
            f"{plural(summary['shortfalls'], 'payment')} "
            f"({money(summary['shortfall_value'], currency)}) waited; median wait "
            f"{summary['shortfall_wait_hours_p50']:.1f} h, longest "
            f"{summary['shortfall_wait_hours_max']:.1f} h; "
            f"{summary['shortfalls_still_waiting']:,} still waiting at the end",
        ),
        (
            "Settlement delay",
            f"median {summary['settlement_delay_hours_p50']:.1f} h, 99th percentile "
            f"{summary['settlement_delay_hours_p99']:.1f} h; "
            f"{summary['unsettled_at_end']:,} payments not settled at the end",
        ),
        (
            "Liquidity pool",
            f"peak outstanding {money(summary['pool_peak'], currency)}, "
            f"{summary['pool_draws']:,} draws, "
            f"{money(summary['pool_outstanding_at_end'], currency)} outstanding at the end",
        ),
        (
            "Broken devices",
            f"took {money(summary['attack_value_taken'], currency)} in "
            f"{summary['attack_payments_made']:,} payments; losses recorded "
            f"{money(summary['losses'], currency)} against a bound of "
            f"{money(summary['loss_bound'], currency)}; {summary['devices_blocked']:,} "
            "devices blocked",
        ),
        (
            "Online load",
            f"peak {plural(summary['online_peak_per_hour'], 'device')} an hour; "
            f"{summary['online_cut']:,} of {summary['online_attempts']:,} attempts cut off",
        ),
    ]
    return rows
