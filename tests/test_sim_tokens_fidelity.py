"""Fidelity of the token scheme's fast executor: one scenario and seed through the array model
and through the real in-process network (real elements, apps, desks, mint, crypto and
databases) must give every event the same outcome, amount, settlement time and ancestry, and
every wallet and element the same final balance. Two scenarios: a mixed one (change, person to
person chains, a partial outage, broken elements), and one where a few shops pile up tokens
through an outage of every intermediary and deposit them all when it ends (the path the model
keeps linear with sorted lists and renewal that skips histories already walked)."""

from __future__ import annotations

import numpy as np
import pytest

from offpay.sim.population.events import Events, Kind, World, generate
from offpay.sim.population.outcomes import CODES, INDEX, NEVER, Results
from offpay.sim.population.scenario import Scenario, parse_scenario
from offpay.sim.population.tokens_fast import run_fast_tokens
from offpay.sim.population.tokens_real import run_real_tokens
from sim_traffic import traffic_differences

SCENARIO = {
    "name": "token fidelity",
    "days": 2,
    "seed": 3,
    "scheme": "tokens",
    "population": {"people": 200, "merchants": 20},
    "behaviour": {
        "payments_per_person_per_day": 1.5,
        "person_to_person_share": 0.4,
        "person_online_per_day": 1,
        "merchant_online_per_day": 2,
        "top_up_to": "SEK 600",
        "online_wallet": "SEK 5000",
        "amount": {"median": "SEK 120", "sigma": 0.7, "max": "SEK 1000"},
    },
    "outage": {"start_hour": 20, "hours": 14, "intermediaries": ["bank-a"]},
    "attacks": {"broken_elements": 0.03, "start_hour": 10, "hours": 20, "payments": 2},
    "tokens": {"max_ancestry": 3},
}

PILE_UP = {
    "name": "token fidelity: shops pile up tokens",
    "days": 2,
    "seed": 11,
    "scheme": "tokens",
    "population": {"people": 200, "merchants": 3},
    "behaviour": {
        "payments_per_person_per_day": 2,
        "person_to_person_share": 0.15,
        "person_online_per_day": 1,
        "merchant_online_per_day": 1,
        "top_up_to": "SEK 800",
        "online_wallet": "SEK 5000",
        "amount": {"median": "SEK 60", "sigma": 0.9, "max": "SEK 700"},
    },
    "outage": {"start_hour": 6, "hours": 30},
    "attacks": {"broken_elements": 0.02, "start_hour": 8, "hours": 12, "payments": 2},
    "tokens": {"max_ancestry": 2},
}

# The same mixed population under a per-payment maximum its elements enforce (issue 20).
PAYMENT_MAX = {
    **SCENARIO,
    "name": "token fidelity: a per-payment maximum",
    "limits": {"payment_max": "SEK 150"},
}

# The same population under the elements' own limits: a token that would carry more than three
# ancestors is refused offline (the wallets renew past three, at online moments only), and no
# element may hold more than SEK 900 (shops fill up between their deposits).
ELEMENT_LIMITS = {
    **SCENARIO,
    "name": "token fidelity: ancestry and holding limits",
    "limits": {"token_max_ancestry": 3, "element_max_holding": "SEK 900"},
}

# The same population under the payers' limits on spending over time (issue 20), which token
# elements enforce as cards do: an offline total between online moments, a day's payments and
# amount, and the hours since the last online moment (the intermediary's signed time).
SPENDING = {
    **SCENARIO,
    "name": "token fidelity: spending limits over time",
    "limits": {
        "card_max_offline_spent": "SEK 350",
        "card_max_daily_payments": 2,
        "card_max_daily_spent": "SEK 300",
        "max_offline_hours": 30,
    },
}

PER_EVENT = ("outcome", "moved", "settled_at", "queued_at", "pool_drawn", "refunded")
FINAL = ("person_online", "person_card", "person_blocked", "merchant_wallet", "bank_holdings")


Simulated = tuple[Scenario, World, Events, Results, Results]
_SIMULATED: dict[str, Simulated] = {}


def simulated(data: dict) -> Simulated:
    """The scenario through both executors, once per test process."""
    if data["name"] not in _SIMULATED:
        scenario = parse_scenario(data)
        world, events = generate(scenario)
        _SIMULATED[data["name"]] = (
            scenario,
            world,
            events,
            run_real_tokens(scenario, world, events),
            run_fast_tokens(scenario, world, events),
        )
    return _SIMULATED[data["name"]]


@pytest.fixture(
    params=[SCENARIO, PILE_UP, PAYMENT_MAX, ELEMENT_LIMITS, SPENDING],
    ids=["mixed", "pile-up", "payment-max", "element-limits", "spending"],
)
def run(request: pytest.FixtureRequest) -> Simulated:
    return simulated(request.param)


def _first_differences(events: Events, real: Results, fast: Results, name: str) -> list[str]:
    x, y = getattr(real, name), getattr(fast, name)
    rows = np.nonzero(x != y)[0][:5]
    return [
        f"event {i} {Kind(int(events.kind[i])).name} t={events.t[i]} a={events.a[i]} "
        f"b={events.b[i]}: real {x[i]} ({CODES[real.outcome[i]]}), fast {y[i]} "
        f"({CODES[fast.outcome[i]]})"
        for i in rows
    ]


def test_every_event_has_the_same_fate(run) -> None:
    _, _, events, real, fast = run
    for name in PER_EVENT:
        assert np.array_equal(getattr(real, name), getattr(fast, name)), _first_differences(
            events, real, fast, name
        )
    assert np.array_equal(real.extra["ancestry"], fast.extra["ancestry"]), _first_differences(
        events, real, fast, "outcome"
    )


def test_every_wallet_and_element_ends_equal(run) -> None:
    _, _, _, real, fast = run
    for name in FINAL:
        assert np.array_equal(getattr(real, name), getattr(fast, name)), name
    assert real.losses == fast.losses
    assert real.loss_bound == fast.loss_bound
    assert real.extra["tokens_outstanding"][0] == fast.extra["tokens_outstanding"][0]


def test_the_scenario_exercises_what_it_claims() -> None:
    scenario, world, events, real, _ = simulated(SCENARIO)
    assert world.people >= 200 and scenario.days >= 2
    kind, outcome = events.kind, real.outcome
    pays = np.isin(kind, (Kind.SHOP, Kind.P2P))
    # payments with change: most amounts differ from the single token an element starts with
    assert (pays & (outcome == INDEX["ok"])).sum() > 300
    # the outage cut people and shops off, and they came back
    assert (outcome == INDEX["offline.unreachable"]).sum() > 10
    assert (events.tag == 2).any()
    # histories grew past the policy's depth: renewals happened
    assert real.extra["ancestry"].max() > scenario.tokens.max_ancestry
    # the broken elements double-spent, were caught at deposit, revoked, and the loss recorded
    assert (kind == Kind.CLONE).sum() == len(world.cloned) > 0
    assert ((kind == Kind.CLONE_SHOP) & (outcome == INDEX["ok"])).any()
    online = np.isin(kind, (Kind.ONLINE, Kind.SHOP_ONLINE))
    assert (online & (outcome == INDEX["token.double_spend"])).any()
    assert real.person_blocked[world.cloned].any()
    assert not real.person_blocked[np.setdiff1d(np.arange(world.people), world.cloned)].any()
    assert 0 < real.losses <= real.loss_bound
    # payments settle when their token is redeemed, never before they were made
    settled = real.settled_at != NEVER
    assert settled.sum() > 200
    assert (real.settled_at[settled] >= events.t[settled]).all()
    assert not settled[~pays & (kind != Kind.CLONE_SHOP)].any()


def _most_piled_up(events: Events, outcome: np.ndarray, merchants: int) -> int:
    """The most tokens a shop received between two of its successful online moments."""
    held, most = np.zeros(merchants, np.int64), 0
    for i in range(len(events)):
        kind, ok = int(events.kind[i]), outcome[i] == INDEX["ok"]
        if kind in (Kind.SHOP, Kind.CLONE_SHOP) and ok:
            held[events.b[i]] += 1
        elif kind == Kind.SHOP_ONLINE and not events.cut[i]:
            most = max(most, int(held[events.a[i]]))
            held[events.a[i]] = 0
    return most


def test_the_payment_max_scenario_refuses_above_the_maximum_and_nothing_else_beyond_it() -> None:
    _, _, events, real, _ = simulated(PAYMENT_MAX)
    payments = np.isin(events.kind, [Kind.SHOP, Kind.P2P])
    refused = payments & (real.outcome == INDEX["limit.payment_max"])
    made = payments & (real.outcome == INDEX["ok"])
    assert refused.sum() > 20 and made.sum() > 100
    assert (events.amount[refused] > 150_00).all()
    assert (real.moved[made] <= 150_00).all()


def test_the_element_limits_scenario_refuses_by_each_limit_and_holds_them() -> None:
    """Both limits refuse payments (the executors agree on each, above), and every payment
    made delivered a token of at most three ancestors."""
    _, _, events, real, _ = simulated(ELEMENT_LIMITS)
    payments = np.isin(events.kind, [Kind.SHOP, Kind.P2P])
    made = payments & (real.outcome == INDEX["ok"])
    assert (payments & (real.outcome == INDEX["limit.token_max_ancestry"])).sum() > 10
    assert (payments & (real.outcome == INDEX["limit.element_max_holding"])).sum() > 10
    assert made.sum() > 100
    assert (real.extra["ancestry"][made] <= 3).all()


def test_the_spending_scenario_refuses_by_each_limit_and_holds_them() -> None:
    """Each limit on spending over time refuses payments (the executors agree on each,
    above), and no payer's payments made break one: recounted here from the events, with each
    person's online moments (a successful ONLINE event, the start)."""
    _, world, events, real, _ = simulated(SPENDING)
    payments = np.isin(events.kind, [Kind.SHOP, Kind.P2P])
    for limit in ("card_max_offline_spent", "card_max_daily_payments", "card_max_daily_spent"):
        assert (payments & (real.outcome == INDEX[f"limit.{limit}"])).sum() > 5, limit
    assert (payments & (real.outcome == INDEX["limit.max_offline_hours"])).sum() > 0
    assert (payments & (real.outcome == INDEX["ok"])).sum() > 100
    since = np.zeros(world.people, np.int64)
    online_at = np.zeros(world.people, np.int64)
    day = np.full(world.people, -1, np.int64)
    day_n, day_spent = np.zeros(world.people, np.int64), np.zeros(world.people, np.int64)
    for i in range(len(events)):
        kind, a, t = int(events.kind[i]), int(events.a[i]), int(events.t[i])
        if kind == Kind.ONLINE and not events.cut[i]:
            since[a], online_at[a] = 0, t
        elif kind in (Kind.SHOP, Kind.P2P) and real.outcome[i] == INDEX["ok"]:
            amount = int(events.amount[i])
            if t // 1440 > day[a]:
                day[a], day_n[a], day_spent[a] = t // 1440, 0, 0
            since[a] += amount
            day_n[a] += 1
            day_spent[a] += amount
            assert since[a] <= 350_00 and day_n[a] <= 2 and day_spent[a] <= 300_00, i
            assert t - online_at[a] <= 30 * 60, i


def test_the_pile_up_scenario_exercises_what_it_claims() -> None:
    scenario, world, events, real, _ = simulated(PILE_UP)
    kind, outcome = events.kind, real.outcome
    # every intermediary cut off: shops' online moments failed, and then each deposited a pile
    assert ((kind == Kind.SHOP_ONLINE) & (outcome == INDEX["offline.unreachable"])).sum() >= 3
    assert _most_piled_up(events, outcome, world.merchants) >= 100
    # renewals inside the deposits, and the broken elements' copies caught there
    assert real.extra["ancestry"].max() > scenario.tokens.max_ancestry
    online = np.isin(kind, (Kind.ONLINE, Kind.SHOP_ONLINE))
    assert (online & (outcome == INDEX["token.double_spend"])).any()
    assert 0 < real.losses <= real.loss_bound
    assert (real.settled_at != NEVER).sum() > 300


def test_money_is_conserved(run) -> None:
    scenario, world, _, real, fast = run
    issued = world.people * scenario.behaviour.online_wallet
    for r in (real, fast):
        online = int(r.person_online.sum() + r.merchant_wallet.sum())
        assert online == int(r.bank_holdings.sum())
        assert issued == online + int(r.extra["tokens_outstanding"][0])


def test_same_seed_same_results(run) -> None:
    scenario, _, _, _, fast = run
    again = run_fast_tokens(scenario, *generate(scenario))
    for name in (*PER_EVENT, *FINAL):
        assert np.array_equal(getattr(fast, name), getattr(again, name)), name
    assert np.array_equal(fast.extra["ancestry"], again.extra["ancestry"])


def test_the_real_executor_measures_traffic_and_storage(run) -> None:
    """Each payment made is the protocol's four exchanges; a cut online moment carries nothing;
    an online moment's requests carry bytes; elements held ancestries of several sizes."""
    _, _, events, real, _ = run
    messages, carried, storage = (real.extra[k] for k in ("messages", "bytes", "storage"))
    ok = real.outcome == INDEX["ok"]
    pays = np.isin(events.kind, (Kind.SHOP, Kind.P2P, Kind.CLONE_SHOP)) & ok
    assert pays.any() and (messages[pays] == 4).all() and (carried[pays] > 0).all()
    assert (messages[events.cut] == 0).all() and (carried[events.cut] == 0).all()
    online = (events.kind == Kind.ONLINE) & ok & (real.moved > 0)
    assert online.any() and (messages[online] >= 1).all()
    assert len(np.unique(carried[online])) > 10
    assert (storage > 0).all() and len(np.unique(storage)) > 10


def test_the_fast_model_counts_the_same_traffic_and_storage(run) -> None:
    """The model's messages equal the real ones event by event (refusals included: a peer
    known revoked stops after the hellos, a short payer after the proofs, a receiver that finds
    a double spend refuses the offer); bytes and storage within the shared tolerances."""
    _, _, events, real, fast = run
    problems = traffic_differences(events, real, fast)
    assert not problems, "the executors differ:\n" + "\n".join(problems)
    refused = real.outcome != INDEX["ok"]
    assert (refused & (real.extra["messages"] > 0)).any()  # refusals with traffic were compared
