"""Fidelity of the population simulator's balance scheme: the fast executor (the protocol's
rules over arrays, numba) against the real one (real cards, terminals, apps, crypto and
databases), event by event.

For each liquidity policy, one scenario of a few hundred people over two days with an outage,
person-to-person payments that form cycles (so that payers spend money whose settlement has
not reached them), a cloned card and a rolled-back card: every event must have the same outcome
(made, or refused by the same rule), move the same amount, settle at the same minute, wait in
the queue from the same minute, borrow the same amount from the pool and be refunded alike; and
every wallet, card, block and holding must be equal at the end. Each scenario must also
exercise what it claims to (shortfalls, pool draws, limits, the clone caught), or the test
would prove little.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from offpay.sim.population.events import Events, Kind, World, generate
from offpay.sim.population.fast import ConservationError, run_fast
from offpay.sim.population.outcomes import CODES, INDEX, NEVER, Results
from offpay.sim.population.real import run_real
from offpay.sim.population.scenario import Scenario, parse_scenario
from sim_traffic import traffic_differences

EVENT_FIELDS = ("outcome", "moved", "settled_at", "queued_at", "pool_drawn", "refunded")
FINAL_FIELDS = (
    "person_online",
    "person_shadow",
    "person_card",
    "person_blocked",
    "merchant_wallet",
    "bank_holdings",
)

BASE: dict[str, Any] = {
    "name": "fidelity",
    "days": 2,
    "population": {
        "people": 200,
        "merchants": 12,
        "intermediaries": [
            {"name": "bank-b", "share": 0.4},
            {"name": "bank-a", "share": 0.6},
        ],
    },
    "behaviour": {
        "payments_per_person_per_day": 3,
        "person_to_person_share": 0.7,  # most money goes round between people: cycles
        "person_online_per_day": 1.5,
        "merchant_online_per_day": 1,
        "top_up_to": "SEK 300",
        "online_wallet": "SEK 2000",
        "amount": {"median": "SEK 100", "sigma": 0.8},
    },
    "outage": {"start_hour": 14, "hours": 20, "reconnect_hours": 2},
    "limits": {
        "card_max_offline_transactions": 6,
        "card_max_balance": "SEK 800",
        "terminal_max_offline_payments": 10,
        "blocked_window_hours": 6,
        "max_receipts": 4,
    },
    "liquidity": {"policy": "queue", "pool": "SEK 150"},
    "attacks": {
        "cloned_cards": 0.02,
        "rolled_back_cards": 0.02,
        "start_hour": 10,
        "hours": 30,
        "payments": 3,
    },
}


def scenario(**changes: Any) -> Scenario:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return parse_scenario(data)


def differences(events: Events, real: Results, fast: Results, shown: int = 8) -> list[str]:
    """The first events where the executors differ, and every final figure that differs."""
    out = []
    bad = np.zeros(len(events), bool)
    for name in EVENT_FIELDS:
        bad |= getattr(real, name) != getattr(fast, name)
    for i in np.flatnonzero(bad)[:shown]:
        fields = {
            name: (getattr(real, name)[i], getattr(fast, name)[i])
            for name in EVENT_FIELDS
            if getattr(real, name)[i] != getattr(fast, name)[i]
        }
        if "outcome" in fields:
            fields["outcome"] = tuple(CODES[c] for c in fields["outcome"])
        out.append(
            f"event {i} at minute {events.t[i]}: {Kind(int(events.kind[i])).name} "
            f"a={events.a[i]} b={events.b[i]} amount={events.amount[i]} "
            f"(real, fast): {fields}"
        )
    if bad.sum() > shown:
        out.append(f"... {int(bad.sum())} events differ in all")
    for name in FINAL_FIELDS:
        where = np.flatnonzero(getattr(real, name) != getattr(fast, name))
        if len(where):
            out.append(
                f"{name} differs at {where[:8].tolist()}: real "
                f"{getattr(real, name)[where[:8]].tolist()}, fast "
                f"{getattr(fast, name)[where[:8]].tolist()}"
            )
    for name in ("pool_outstanding", "losses", "loss_bound"):
        if getattr(real, name) != getattr(fast, name):
            out.append(f"{name}: real {getattr(real, name)}, fast {getattr(fast, name)}")
    if not np.array_equal(real.pool_after, fast.pool_after):
        out.append("pool_after differs")
    return out


def assert_same(events: Events, real: Results, fast: Results) -> None:
    problems = differences(events, real, fast) + traffic_differences(events, real, fast)
    assert not problems, "the executors differ:\n" + "\n".join(problems)


def count(results: Results, code: str) -> int:
    return int((results.outcome == INDEX[code]).sum())


def both(s: Scenario) -> tuple[World, Events, Results, Results]:
    world, events = generate(s)
    return world, events, run_real(s, world, events), run_fast(s, world, events)


# --- one scenario per liquidity policy -----------------------------------------------------------


@pytest.mark.parametrize("policy", ["queue", "restrict", "pool", "receipts"])
def test_the_fast_executor_gives_every_event_the_real_outcome(policy: str) -> None:
    s = scenario(seed=2, liquidity={"policy": policy})
    world, events, real, fast = both(s)
    assert_same(events, real, fast)

    # What the scenario claims to exercise, it did.
    payments = np.isin(events.kind, [Kind.SHOP, Kind.P2P])
    made = payments & (real.outcome == INDEX["ok"])
    assert made.sum() > 300 and (real.settled_at[made] != NEVER).sum() > 200
    assert count(real, "offline.unreachable") > 0  # the outage cut syncs off
    limits = sum(count(real, c) for c in CODES if c.startswith("limit."))
    assert limits > 0 and count(real, "limit.card_max_offline_transactions") > 0
    queued = int((real.queued_at != NEVER).sum())
    if policy == "queue":
        assert queued > 0  # shortfalls waited, and some of them settled later
        assert ((real.queued_at != NEVER) & (real.settled_at != NEVER)).any()
    if policy == "pool":
        assert (real.pool_drawn > 0).sum() > 0 and real.pool_after.max() > 0
        assert queued > 0  # the small pool ran dry: some gaps waited
    if policy == "restrict":
        assert queued == 0 and count(real, "limit.card_received_not_spendable") > 0
    # The clone: caught, blocked, revoked (devices that synchronised since refuse it), and
    # what it took recorded with its bound.
    cloned, rolled = world.cloned, world.rolled_back
    assert real.person_blocked[cloned].any()
    assert real.losses > 0 and real.loss_bound >= real.losses
    assert count(real, "crypto.revoked") > 0
    # The rolled-back card: its old-state payments and sessions are caught.
    attacks = np.isin(events.kind, [Kind.ROLLED_SHOP]) & np.isin(events.a, rolled)
    assert attacks.any()
    assert real.person_blocked[rolled].any() or count(real, "device.stale_session") > 0
    # Traffic and storage were measured: every kind of event carried bytes (a cut one none),
    # syncs carried logs of several sizes, cards held logs of several sizes.
    carried = real.extra["bytes"]
    for kind in (Kind.SHOP, Kind.P2P, Kind.ONLINE, Kind.SHOP_ONLINE):
        assert (carried[(events.kind == kind) & ~events.cut] > 0).all()
    assert (carried[events.cut] == 0).all() and (real.extra["messages"][events.cut] == 0).all()
    syncs = carried[(events.kind == Kind.ONLINE) & (real.outcome == INDEX["ok"])]
    assert len(np.unique(syncs)) > 10
    assert len(np.unique(real.extra["storage"])) > 10


def test_the_receipts_policy_settles_chains_the_queue_leaves_waiting() -> None:
    """The same stream under ``queue`` and ``receipts``: receipts settle funding first, so
    fewer payments wait (both executors agree on each, see above)."""
    waited = {}
    for policy in ("queue", "receipts"):
        s = scenario(seed=2, liquidity={"policy": policy})
        world, events = generate(s)
        fast = run_fast(s, world, events)
        waited[policy] = int((fast.queued_at != NEVER).sum())
    assert waited["receipts"] < waited["queue"]


# --- determinism and conservation -------------------------------------------------------------


def test_the_same_seed_gives_identical_results() -> None:
    s = scenario(seed=5, liquidity={"policy": "pool"})
    runs = []
    for _ in range(2):
        world, events = generate(s)
        runs.append((events, run_fast(s, world, events)))
    (events, first), (_, second) = runs
    assert_same(events, first, second)
    assert np.array_equal(first.pool_after, second.pool_after)
    small = scenario(seed=5, population={"people": 40, "merchants": 4}, days=1)
    world, events = generate(small)
    assert_same(events, run_real(small, world, events), run_real(small, world, events))


def test_the_model_checks_conservation_after_every_event() -> None:
    """A credit made one minor unit too large is caught at the event that made it."""
    s = scenario(seed=2, population={"people": 60, "merchants": 6})
    world, events = generate(s)
    clean = run_fast(s, world, events)
    settled = clean.settled_at[clean.settled_at != NEVER]
    first = int(np.flatnonzero(events.t >= settled.min())[0])
    with pytest.raises(ConservationError, match="not conserved after event") as info:
        run_fast(s, world, events, _break_at=first)
    assert info.value.code == "audit.conservation"
    # and no earlier: every event before the broken credit balanced
    event = int(str(info.value).split("after event ")[1].split(":")[0])
    assert event >= first


def test_progress_is_told_about_every_percent() -> None:
    s = scenario(seed=1, population={"people": 60, "merchants": 6})
    world, events = generate(s)
    told: list[int] = []
    run_fast(s, world, events, progress=told.append)
    assert told == sorted(told) and told[-1] == len(events)
    assert 50 <= len(told) <= 101


# --- the limits beyond the pilot's (issue 20) ---------------------------------------------------


@pytest.mark.parametrize("policy", ["queue", "restrict"])
def test_the_per_payment_maximum_and_the_offline_total_are_honoured_alike(policy: str) -> None:
    """A per-payment maximum (the terminal, the payee's card or the payer's card refuses) and
    a total spent offline between syncs: the fast executor refuses exactly the payments the
    real devices refuse, and no payment made breaks either limit."""
    s = scenario(
        seed=5,
        liquidity={"policy": policy},
        limits={"payment_max": "SEK 180", "card_max_offline_spent": "SEK 250"},
    )
    world, events, real, fast = both(s)
    assert_same(events, real, fast)
    assert count(real, "limit.payment_max") > 0
    assert count(real, "limit.card_max_offline_spent") > 0
    payments = np.isin(events.kind, [Kind.SHOP, Kind.P2P]) & (real.outcome == INDEX["ok"])
    honest = payments & ~np.isin(events.a, np.concatenate([world.cloned, world.rolled_back]))
    assert honest.sum() > 200
    assert (real.moved[honest] <= 180_00).all()


@pytest.mark.parametrize(
    ("limit", "value"),
    [
        ("card_max_daily_payments", 2),
        ("card_max_daily_spent", "SEK 150"),
        ("max_offline_hours", 8),
    ],
)
def test_the_daily_limits_and_the_offline_hours_follow_the_cards_clock_alike(
    limit: str, value: Any
) -> None:
    """Limits by the card's clock: the intermediary's signed time at each sync, moved on by the
    terminals' and the payee cards' signed times in their requests. Over two days with an
    outage, the fast executor refuses exactly the payments the real cards refuse."""
    s = scenario(seed=7, limits={limit: value})
    _, events, real, fast = both(s)
    assert_same(events, real, fast)
    assert count(real, f"limit.{limit}") > 10
    payments = np.isin(events.kind, [Kind.SHOP, Kind.P2P]) & (real.outcome == INDEX["ok"])
    assert payments.sum() > 200  # the limit refuses some payments, not all
    if limit == "card_max_daily_payments":
        # a new day brings new payments: cards pay on both days
        day = events.t // 1440
        assert (payments & (day == 0)).sum() > 100 and (payments & (day == 1)).sum() > 100


# --- small random scenarios ----------------------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**32),
    people=st.integers(8, 30),
    merchants=st.integers(1, 4),
    policy=st.sampled_from(["queue", "restrict", "pool", "receipts"]),
    p2p=st.floats(0, 1),
    online=st.floats(0, 3),
    outage=st.booleans(),
    attacks=st.booleans(),
    limit=st.integers(1, 6),
    max_balance=st.integers(100, 2000),
    pool=st.integers(1, 500),
    payment_max=st.none() | st.integers(20, 300),
    spent_max=st.none() | st.integers(50, 1000),
    daily_n=st.none() | st.integers(0, 4),
    daily_max=st.none() | st.integers(50, 600),
    hours=st.none() | st.integers(0, 30),
    days=st.sampled_from([1, 2]),  # a second day: the daily counters start again
)
# A card whose clone is caught at its sync's confirmation: the instruction it applied was made
# before the block, so it carries no revocation list (the model once counted the new one).
@example(
    seed=0, people=21, merchants=1, policy="queue", p2p=0.0, online=1.0, outage=False,
    attacks=True, limit=1, max_balance=300, pool=1, payment_max=None, spent_max=None,
    daily_n=None, daily_max=None, hours=None, days=1,
)  # fmt: skip
def test_small_random_scenarios_agree(
    seed: int,
    people: int,
    merchants: int,
    policy: str,
    p2p: float,
    online: float,
    outage: bool,
    attacks: bool,
    limit: int,
    max_balance: int,
    pool: int,
    payment_max: int | None,
    spent_max: int | None,
    daily_n: int | None,
    daily_max: int | None,
    hours: int | None,
    days: int,
) -> None:
    data = copy.deepcopy(BASE)
    data.update(seed=seed, days=days)
    data["population"].update(people=people, merchants=merchants)
    data["behaviour"].update(person_to_person_share=p2p, person_online_per_day=online)
    data["limits"].update(
        card_max_offline_transactions=limit,
        card_max_balance=max_balance * 100,
        terminal_max_offline_payments=limit + 2,
        blocked_window_hours=2,
    )
    if payment_max is not None:
        data["limits"]["payment_max"] = payment_max * 100
    if spent_max is not None:
        data["limits"]["card_max_offline_spent"] = spent_max * 100
    if daily_n is not None:
        data["limits"]["card_max_daily_payments"] = daily_n
    if daily_max is not None:
        data["limits"]["card_max_daily_spent"] = daily_max * 100
    if hours is not None:
        data["limits"]["max_offline_hours"] = hours
    data["liquidity"] = {"policy": policy, "pool": pool * 100}
    data["attacks"].update(
        cloned_cards=0.1 if attacks else 0,
        rolled_back_cards=0.1 if attacks else 0,
        start_hour=4,
        hours=16,
    )
    if not outage:
        del data["outage"]
    s = parse_scenario(data)
    _, events, real, fast = both(s)
    assert_same(events, real, fast)
