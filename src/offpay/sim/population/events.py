"""One stream of events for both executors: drawn from a scenario with one seeded generator,
as columns (numpy arrays), never one Python object per event.

Behaviour is drawn per person and day: a Poisson number of payments at uniform times in the
active hours, each at a shop (merchants weighted by a log-normal popularity) or, with the
person-to-person share, to another person drawn uniformly; amounts log-normal around the
median, in whole currency units, cut to the range. People and merchants go online at Poisson
times at their own rates. During an outage, going online fails for the devices it cuts off,
and each of them tries again within ``reconnect_hours`` after it ends.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from offpay.money import exponent
from offpay.sim.population.scenario import (
    MINUTES_PER_DAY,
    Scenario,
    ScenarioError,
    ScriptKind,
)


class Kind(enum.IntEnum):
    """What an event does. ``a`` and ``b`` are indices of people (p) or merchants (m)."""

    SHOP = 0  # person a pays merchant b's terminal `amount`
    P2P = 1  # person b asks person a for `amount`; a's card pays; b's card receives
    ONLINE = 2  # person a's card synchronises, then is topped up to `top_up_to`
    SHOP_ONLINE = 3  # merchant a's terminal synchronises
    CLONE = 4  # an attacker copies person a's card (key and state) into a twin
    SNAPSHOT = 5  # an attacker saves person a's card memory, to write it back later
    ROLLBACK = 6  # the saved memory is written back to person a's card
    CLONE_SHOP = 7  # the twin of person a's card pays merchant b; amount 0: all it holds
    ROLLED_SHOP = 8  # person a's rolled-back card pays merchant b; amount 0: all it holds


class Tag(enum.IntEnum):
    """Why an event is in the stream (for the report, not for the rules)."""

    BEHAVIOUR = 0
    SCRIPT = 1
    RECONNECT = 2
    ATTACK = 3
    START = 4  # everyone's first top-up at time 0 (``start_topped_up``)


PAYMENT_KINDS = (Kind.SHOP, Kind.P2P, Kind.CLONE_SHOP, Kind.ROLLED_SHOP)


@dataclass(frozen=True, eq=False)
class World:
    """Who is in the network: each person's and merchant's intermediary and region, and the
    devices an attacker breaks."""

    banks: tuple[str, ...]
    regions: tuple[str, ...]
    person_bank: np.ndarray  # int16, index into banks
    person_region: np.ndarray  # int16
    merchant_bank: np.ndarray
    merchant_region: np.ndarray
    names: tuple[str, ...]  # names of the first people (scripts)
    cloned: np.ndarray  # int32, people whose card is cloned
    rolled_back: np.ndarray  # int32, people whose card is rolled back

    @property
    def people(self) -> int:
        return len(self.person_bank)

    @property
    def merchants(self) -> int:
        return len(self.merchant_bank)

    def person_name(self, i: int) -> str:
        return self.names[i] if i < len(self.names) else f"p{i}"


@dataclass(frozen=True, eq=False)
class Events:
    """The stream, sorted by time (ties keep the order they were drawn in)."""

    t: np.ndarray  # int32, minutes from the start
    kind: np.ndarray  # int8, Kind
    a: np.ndarray  # int32
    b: np.ndarray  # int32, -1 where unused
    amount: np.ndarray  # int64, minor units; 0 where unused
    cut: np.ndarray  # bool: an attempt to go online that the outage cut off
    tag: np.ndarray  # int8, Tag

    def __len__(self) -> int:
        return len(self.t)

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS}
        order = np.argsort(joined["t"], kind="stable")
        return Events(**{f: v[order] for f, v in joined.items()})


_FIELDS = ("t", "kind", "a", "b", "amount", "cut", "tag")


def _events(t, kind, a, b=None, amount=None, tag=Tag.BEHAVIOUR) -> Events:
    n = len(t)
    return Events(
        t=np.asarray(t, dtype=np.int32),
        kind=np.broadcast_to(np.asarray(kind, dtype=np.int8), (n,)).copy(),
        a=np.asarray(a, dtype=np.int32),
        b=np.full(n, -1, np.int32) if b is None else np.asarray(b, dtype=np.int32),
        amount=np.zeros(n, np.int64) if amount is None else np.asarray(amount, dtype=np.int64),
        cut=np.zeros(n, dtype=bool),
        tag=np.full(n, tag, dtype=np.int8),
    )


def _assign(rng: np.random.Generator, n: int, shares: list[float]) -> np.ndarray:
    """Exactly rounded shares, shuffled: a bank with share 0.3 of 10 people has 3 of them."""
    counts = np.floor(np.asarray(shares) * n).astype(np.int64)
    rest = np.argsort(-(np.asarray(shares) * n - counts), kind="stable")[: n - counts.sum()]
    counts[rest] += 1
    labels = np.repeat(np.arange(len(shares), dtype=np.int16), counts)
    rng.shuffle(labels)
    return labels


def make_world(scenario: Scenario, rng: np.random.Generator) -> World:
    pop, attacks = scenario.population, scenario.attacks
    banks = [s.share for s in pop.intermediaries]
    regions = [s.share for s in pop.regions]
    people = rng.permutation(pop.people).astype(np.int32)
    n_clone = round(attacks.cloned_cards * pop.people)
    n_roll = round(attacks.rolled_back_cards * pop.people)
    if scenario.scheme.value == "tokens":  # the schema allows no broken cards here
        n_clone = round(attacks.broken_elements * pop.people)
    return World(
        banks=tuple(s.name for s in pop.intermediaries),
        regions=tuple(s.name for s in pop.regions),
        person_bank=_assign(rng, pop.people, banks),
        person_region=_assign(rng, pop.people, regions),
        merchant_bank=_assign(rng, pop.merchants, banks),
        merchant_region=_assign(rng, pop.merchants, regions),
        names=pop.names,
        cloned=np.sort(people[:n_clone]),
        rolled_back=np.sort(people[n_clone : n_clone + n_roll]),
    )


def _poisson_times(
    rng: np.random.Generator, n: int, rate_per_day: float, minutes: int, window: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Event times of ``n`` independent actors, each with ``rate_per_day`` events a day at
    uniform times inside ``window`` (minutes of the day), up to ``minutes``: (actor, time)."""
    days = -(-minutes // MINUTES_PER_DAY)
    counts = rng.poisson(rate_per_day, size=(days, n))
    day, actor = np.nonzero(counts)
    reps = counts[day, actor]
    day, actor = np.repeat(day, reps), np.repeat(actor, reps)
    start, end = window
    t = day.astype(np.int64) * MINUTES_PER_DAY + rng.integers(start, end, size=len(day))
    keep = t < minutes
    return actor[keep].astype(np.int32), t[keep].astype(np.int32)


def _amounts(rng: np.random.Generator, n: int, scenario: Scenario) -> np.ndarray:
    """Log-normal amounts in whole currency units, cut to [min, max]."""
    dist = scenario.behaviour.amount
    unit = 10 ** exponent(scenario.currency)
    draws = dist.median * np.exp(dist.sigma * rng.standard_normal(n))
    whole = np.maximum(np.rint(draws / unit), 1).astype(np.int64) * unit
    return np.clip(whole, max(dist.min, 1), dist.max)


def _behaviour(scenario: Scenario, world: World, rng: np.random.Generator) -> list[Events]:
    b, minutes = scenario.behaviour, scenario.minutes
    window = (b.active_hours[0] * 60, b.active_hours[1] * 60)
    payer, t = _poisson_times(rng, world.people, b.payments_per_person_per_day, minutes, window)
    n = len(payer)
    p2p = rng.random(n) < b.person_to_person_share
    if world.merchants == 0:
        p2p[:] = True
    if world.people < 2:
        p2p[:] = False
    keep = p2p | (world.merchants > 0)
    payer, t, p2p = payer[keep], t[keep], p2p[keep]
    n = len(payer)
    payee = np.full(n, -1, np.int32)
    if world.merchants:
        popularity = rng.lognormal(0.0, 1.0, world.merchants)
        cdf = np.cumsum(popularity / popularity.sum())
        shops = np.searchsorted(cdf, rng.random(n), side="right").clip(0, world.merchants - 1)
        payee = shops.astype(np.int32)
    if p2p.any():
        other = rng.integers(0, world.people - 1, size=int(p2p.sum()))
        other = other + (other >= payer[p2p])  # anyone but the payer
        payee[p2p] = other.astype(np.int32)
    kind = np.where(p2p, Kind.P2P, Kind.SHOP).astype(np.int8)
    pays = _events(t, kind, payer, payee, _amounts(rng, n, scenario))
    day = (0, MINUTES_PER_DAY)
    person, tp = _poisson_times(rng, world.people, b.person_online_per_day, minutes, window)
    shop, tm = _poisson_times(rng, world.merchants, b.merchant_online_per_day, minutes, day)
    parts = [pays, _events(tp, Kind.ONLINE, person), _events(tm, Kind.SHOP_ONLINE, shop)]
    if b.start_topped_up:  # first: a population starts with its cards topped up
        everyone = np.arange(world.people, dtype=np.int32)
        parts.insert(0, _events(np.zeros(world.people), Kind.ONLINE, everyone, tag=Tag.START))
    return parts


def _attacks(scenario: Scenario, world: World, rng: np.random.Generator) -> list[Events]:
    attacks = scenario.attacks
    start = round(attacks.start_hour * 60)
    end = min(scenario.minutes, start + round(attacks.hours * 60))
    if world.merchants == 0 or end <= start + 1:
        return []
    amount = 0 if attacks.amount == "all" else attacks.amount
    parts = []
    for who, breaks, pays in (
        (world.cloned, Kind.CLONE, Kind.CLONE_SHOP),
        (world.rolled_back, Kind.SNAPSHOT, Kind.ROLLED_SHOP),
    ):
        if not len(who):
            continue
        parts.append(_events(np.full(len(who), start), breaks, who, tag=Tag.ATTACK))
        attacker = np.repeat(who, attacks.payments)
        t = rng.integers(start + 1, end, size=len(attacker))
        shop = rng.integers(0, world.merchants, size=len(attacker))
        parts.append(_events(t, pays, attacker, shop, np.full(len(t), amount), tag=Tag.ATTACK))
        if breaks is Kind.SNAPSHOT:
            first = np.full(world.people, np.iinfo(np.int32).max, np.int64)
            np.minimum.at(first, attacker, t)
            parts.append(_events(first[who] - 1, Kind.ROLLBACK, who, tag=Tag.ATTACK))
    return parts


def _script(scenario: Scenario, world: World) -> list[Events]:
    if not scenario.script:
        return []
    names = {name: i for i, name in enumerate(world.names)}

    def person(ref: str) -> int:
        i = names.get(ref)
        if i is None and ref.isdigit():
            i = int(ref)
        if i is None or not 0 <= i < world.people:
            raise ScenarioError(f"script: no person {ref!r}", code="scenario.invalid")
        return i

    def merchant(ref: str) -> int:
        if not (ref.startswith("m") and ref[1:].isdigit() and int(ref[1:]) < world.merchants):
            raise ScenarioError(f"script: no merchant {ref!r}", code="scenario.invalid")
        return int(ref[1:])

    kinds = {
        ScriptKind.SHOP: Kind.SHOP,
        ScriptKind.P2P: Kind.P2P,
        ScriptKind.ONLINE: Kind.ONLINE,
        ScriptKind.SHOP_ONLINE: Kind.SHOP_ONLINE,
    }
    rows = []
    for step in scenario.script:
        kind = kinds[step.kind]
        a = merchant(step.who) if kind is Kind.SHOP_ONLINE else person(step.who)
        b = -1
        if kind is Kind.SHOP:
            b = merchant(step.to or "")
        elif kind is Kind.P2P:
            b = person(step.to or "")
            if b == a:
                raise ScenarioError(
                    "script: a person cannot pay themselves", code="scenario.invalid"
                )
        rows.append((round(step.at_hour * 60), kind, a, b, step.amount or 0))
    t, kind, a, b, amount = (np.array(col) for col in zip(*rows, strict=True))
    return [_events(t, kind, a, b, amount, tag=Tag.SCRIPT)]


def _outage(scenario: Scenario, world: World, events: Events, rng: np.random.Generator) -> Events:
    """Mark the attempts to go online that the outage cuts off; add the retries after it."""
    outage = scenario.outage
    if outage is None:
        return events
    start = round(outage.start_hour * 60)
    end = min(scenario.minutes, start + round(outage.hours * 60))

    banks = np.array([not outage.intermediaries or n in outage.intermediaries for n in world.banks])
    regions = np.array([not outage.regions or n in outage.regions for n in world.regions])
    person_cut = banks[world.person_bank] & regions[world.person_region]
    shop_cut = banks[world.merchant_bank] & regions[world.merchant_region]
    during = (events.t >= start) & (events.t < end)
    online = events.kind == Kind.ONLINE
    shop_online = events.kind == Kind.SHOP_ONLINE
    cut = during & (
        (online & person_cut[np.where(online, events.a, 0)])
        | (shop_online & shop_cut[np.where(shop_online, events.a, 0)])
    )
    if not cut.any() or end >= scenario.minutes:
        return Events(**{**_columns(events), "cut": cut})
    retry_kind = events.kind[cut]
    retry_who = events.a[cut]
    pairs = np.unique(np.stack([retry_kind.astype(np.int64), retry_who]), axis=1)
    spread = max(1, round(outage.reconnect_hours * 60))
    t = np.minimum(end + rng.integers(0, spread, size=pairs.shape[1]), scenario.minutes - 1)
    retries = _events(t, pairs[0], pairs[1], tag=Tag.RECONNECT)
    return Events.concat([Events(**{**_columns(events), "cut": cut}), retries])


def _columns(events: Events) -> dict[str, np.ndarray]:
    return {f: getattr(events, f) for f in _FIELDS}


def generate(scenario: Scenario) -> tuple[World, Events]:
    """The world and its stream of events; the same scenario and seed give the same stream."""
    rng = np.random.default_rng(scenario.seed)
    world = make_world(scenario, rng)
    parts = _script(scenario, world)
    if scenario.generate:
        parts += _behaviour(scenario, world, rng)
    parts += _attacks(scenario, world, rng)
    events = Events.concat(parts) if parts else _events([], Kind.SHOP, [])
    return world, _outage(scenario, world, events, rng)
