"""Results written by hand for the shipped Alice–Bob–Charlie scenario (e-krona report §3.7), so
that the report and the CLI are tested against figures a person can check on paper, whatever
the executors do. Also random, internally consistent results for a bigger world, to hold the
tables' aggregates to the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from offpay.sim.population.events import PAYMENT_KINDS, Kind, generate
from offpay.sim.population.outcomes import CODES, NEVER, OK, UNREACHABLE, Results
from offpay.sim.population.run import Run
from offpay.sim.population.scenario import Scenario, load_scenario, parse_scenario

ABC = Path(__file__).resolve().parent.parent / "scenarios" / "alice-bob-charlie.toml"
ALICE, BOB, CHARLIE = 0, 1, 2


def abc_scenario(**changes: object) -> Scenario:
    return load_scenario(ABC).model_copy(update=changes)


def abc_results(scenario: Scenario, pool: bool = False) -> Run:
    """The §3.7 story, event by event (times in minutes from midnight):

    0  08:00 Alice online, card topped up to SEK 200      5  13:00 the shop's terminal syncs
    1  09:00 Alice pays Bob SEK 80                         6  15:00 Alice online: 1 and 2 settle
    2  10:00 Bob pays Charlie SEK 50                       7  16:00 Bob online
    3  11:00 Charlie online: 2 is short, waits (queue)
    4  12:00 Charlie pays the shop SEK 20

    With ``pool``, Charlie's sync borrows Bob's SEK 50 from the pool instead (2 settles at
    11:00 without waiting) and Alice's sync at 15:00 repays it.
    """
    world, events = generate(scenario)
    assert events.kind.tolist() == [
        Kind.ONLINE, Kind.P2P, Kind.P2P, Kind.ONLINE, Kind.SHOP, Kind.SHOP_ONLINE,
        Kind.ONLINE, Kind.ONLINE,
    ]  # fmt: skip
    r = Results.empty(len(events), world.people, world.merchants, len(world.banks))
    r.moved[:] = [200_00, 80_00, 50_00, 200_00, 20_00, 0, 80_00, 170_00]
    r.settled_at[[1, 2, 4]] = [900, 900, 780]
    if pool:
        r.settled_at[2] = 660
        r.pool_drawn[2] = 50_00
        r.pool_after[3:6] = 50_00
    else:
        r.queued_at[2] = 660
    r.person_online[:] = [1000_00 - 280_00, 1000_00 - 170_00, 1000_00 - 200_00]
    r.person_shadow[:] = [200_00, 200_00, 230_00]
    r.person_card[:] = [200_00, 200_00, 180_00]
    r.merchant_wallet[:] = [20_00]
    return Run(scenario, world, events, r)


RANDOM_SCENARIO = {
    "name": "random results",
    "seed": 11,
    "days": 3,
    "population": {
        "people": 200,
        "merchants": 12,
        "intermediaries": [{"name": "bank-a", "share": 0.7}, {"name": "bank-b", "share": 0.3}],
    },
    "behaviour": {"payments_per_person_per_day": 2, "person_to_person_share": 0.3},
    "outage": {"start_hour": 30, "hours": 12},
    "liquidity": {"policy": "pool", "pool": "SEK 5000"},
    "attacks": {"cloned_cards": 0.02, "payments": 2},
}


def random_results(seed: int = 0) -> Run:
    """Arbitrary but consistent results: payments refused by random codes, settled after they
    were made (or never), some queued first, the pool drawn and repaid, online attempts cut
    exactly where the stream says so."""
    scenario = parse_scenario(RANDOM_SCENARIO)
    world, e = generate(scenario)
    rng = np.random.default_rng(seed)
    n = len(e)
    r = Results.empty(n, world.people, world.merchants, len(world.banks))
    payment = np.isin(e.kind, np.array(PAYMENT_KINDS, dtype=np.int8))
    refusable = [i for i in range(len(CODES)) if i not in (OK, UNREACHABLE)]
    refused = payment & (rng.random(n) < 0.2)
    r.outcome[refused] = rng.choice(refusable, size=int(refused.sum()))
    r.outcome[e.cut] = UNREACHABLE
    made = payment & ~refused
    r.moved[made] = np.where(e.amount[made] > 0, e.amount[made], 123_00)
    end = scenario.minutes
    queued = made & (rng.random(n) < 0.15)
    r.queued_at[queued] = np.minimum(e.t[queued] + rng.integers(0, 600, n)[queued], end - 1)
    settled = made & (rng.random(n) < 0.8)
    start = np.where(queued, r.queued_at, e.t)
    r.settled_at[settled] = np.minimum(start[settled] + rng.integers(0, 2000, n)[settled], end - 1)
    drawn = made & ~queued & (rng.random(n) < 0.1)
    r.pool_drawn[drawn] = r.moved[drawn]
    r.pool_after[:] = np.maximum(np.cumsum(r.pool_drawn) - np.arange(n) * 1_00, 0)
    r.refunded[refused & (rng.random(n) < 0.3)] = True
    r.person_online[:] = rng.integers(0, 20_000_00, world.people)
    r.person_shadow[:] = rng.integers(0, 3_000_00, world.people)
    r.person_card[:] = rng.integers(0, 3_000_00, world.people)
    r.person_blocked[world.cloned] = True
    r.merchant_wallet[:] = rng.integers(0, 50_000_00, world.merchants)
    r.losses = 1_234_00
    r.loss_bound = 3_000_00 * len(world.cloned)
    r.pool_outstanding = int(r.pool_after[-1])
    assert not np.any((r.settled_at != NEVER) & (r.settled_at < e.t))
    return Run(scenario, world, e, r)
