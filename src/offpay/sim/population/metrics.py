"""The run's figures as three tables a researcher loads into any tool (pandas, polars, DuckDB,
R): one row per payment, one per device, one per day. Built from the per-event results with
numpy, never one Python object per payment, and written as Parquet.

Money is integer minor units in every column; times are minutes from the start. A time that did
not come (a payment never settled, never queued) is null, not a sentinel number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from offpay.sim.population.events import PAYMENT_KINDS, Kind, Tag
from offpay.sim.population.outcomes import CODES, NEVER, OK, UNREACHABLE
from offpay.sim.population.run import Run
from offpay.sim.population.scenario import MINUTES_PER_DAY

PAYMENTS_FILE = "payments.parquet"
DEVICES_FILE = "devices.parquet"
DAYS_FILE = "days.parquet"

PAYMENT_KIND_ARRAY = np.array(PAYMENT_KINDS, dtype=np.int8)
ONLINE_KIND_ARRAY = np.array([Kind.ONLINE, Kind.SHOP_ONLINE], dtype=np.int8)
_KIND_NAMES = tuple(k.name.lower().replace("_", "-") for k in Kind)
_TAG_NAMES = tuple(t.name.lower() for t in Tag)


@dataclass(frozen=True)
class Masks:
    """Which events are what, computed once for the tables, the plots and the report."""

    payment: np.ndarray  # any payment, the attacker's included
    honest: np.ndarray  # a payment by a device's rightful holder
    attack: np.ndarray  # a payment by a cloned or rolled-back copy
    made: np.ndarray  # an honest payment the devices accepted
    refused: np.ndarray  # an honest payment a rule refused
    online: np.ndarray  # an attempt to go online (person or shop)
    cut: np.ndarray  # an attempt to go online that the outage cut off

    @classmethod
    def of(cls, run: Run) -> Masks:
        e, outcome = run.events, run.results.outcome
        payment = np.isin(e.kind, PAYMENT_KIND_ARRAY)
        honest = payment & (e.tag != Tag.ATTACK)
        online = np.isin(e.kind, ONLINE_KIND_ARRAY)
        return cls(
            payment=payment,
            honest=honest,
            attack=payment & (e.tag == Tag.ATTACK),
            made=honest & (outcome == OK),
            refused=honest & (outcome != OK),
            online=online,
            cut=online & (outcome == UNREACHABLE),
        )


def days_of(run: Run) -> int:
    """Whole days the run covers (a fractional last day counts)."""
    return max(1, -(-run.scenario.minutes // MINUTES_PER_DAY))


def _times(values: np.ndarray) -> pa.Array:
    """Minutes as int32 with null where the time did not come."""
    return pa.array(values.astype(np.int32), mask=values == NEVER)


def _labels(index: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    """Names by index, dictionary-encoded (a million rows of a few bank names stay small)."""
    return pa.DictionaryArray.from_arrays(
        pa.array(index.astype(np.int32)), pa.array(list(names), pa.string())
    )


def payments_table(run: Run, masks: Masks | None = None) -> pa.Table:
    """One row per payment, in the order they happened. Person-to-person payments are paid by
    person ``payer`` to person ``payee``; shop payments to merchant ``payee``."""
    m = masks or Masks.of(run)
    e, r, w = run.events, run.results, run.world
    rows = np.flatnonzero(m.payment)
    kind = e.kind[rows]
    payer, payee = e.a[rows], e.b[rows]
    to_person = kind == Kind.P2P
    payee_bank = np.where(
        to_person,
        w.person_bank[np.where(to_person, payee, 0)] if w.people else 0,
        w.merchant_bank[np.where(to_person, 0, payee)] if w.merchants else 0,
    )
    return pa.table(
        {
            "time": pa.array(e.t[rows]),
            "kind": _labels(kind, _KIND_NAMES),
            "tag": _labels(e.tag[rows], _TAG_NAMES),
            "payer": pa.array(payer),
            "payee": pa.array(payee),
            "payee_is_merchant": pa.array(~to_person),
            "amount": pa.array(e.amount[rows]),
            "moved": pa.array(r.moved[rows]),
            "outcome": _labels(r.outcome[rows], CODES),
            "settled_at": _times(r.settled_at[rows]),
            "queued_at": _times(r.queued_at[rows]),
            "pool_drawn": pa.array(r.pool_drawn[rows]),
            "refunded": pa.array(r.refunded[rows]),
            "payer_bank": _labels(w.person_bank[payer], w.banks),
            "payee_bank": _labels(payee_bank, w.banks),
        }
    )


def devices_table(run: Run, masks: Masks | None = None) -> pa.Table:
    """One row per device: people's cards first (index 0…), then merchants' terminals. Counts
    are of the holder's own payments; a copy's payments are counted under ``attack_*``."""
    m = masks or Masks.of(run)
    e, r, w = run.events, run.results, run.world
    people, merchants = w.people, w.merchants

    def count(mask: np.ndarray, who: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(who[mask], minlength=n).astype(np.int64)[:n]

    made_p = count(m.made, e.a, people)
    refused_p = count(m.refused, e.a, people)
    ok = m.payment & (r.outcome == OK)
    p2p = e.kind == Kind.P2P
    received_p = count(ok & p2p, e.b, people)
    received_m = count(ok & ~p2p, e.b, merchants)
    attack_made = count(m.attack & (r.outcome == OK), e.a, people)
    cloned = np.zeros(people, bool)
    cloned[w.cloned] = True
    rolled = np.zeros(people, bool)
    rolled[w.rolled_back] = True
    zeros_m = np.zeros(merchants, np.int64)
    false_m = np.zeros(merchants, bool)
    named = list(w.names[:people])
    index = np.concatenate([np.arange(people), np.arange(merchants)]).astype(np.int32)
    name_col = pa.concat_arrays(
        [pa.array(named, pa.string()), pa.nulls(people - len(named) + merchants, pa.string())]
    )
    null_m = pa.nulls(merchants, pa.int64())
    return pa.table(
        {
            "device": _labels(
                np.concatenate([np.zeros(people), np.ones(merchants)]), ("card", "terminal")
            ),
            "index": pa.array(index),
            "name": name_col,
            "bank": _labels(np.concatenate([w.person_bank, w.merchant_bank]), w.banks),
            "region": _labels(np.concatenate([w.person_region, w.merchant_region]), w.regions),
            "online_wallet": pa.concat_arrays([pa.array(r.person_online), null_m]),
            "shadow_wallet": pa.concat_arrays([pa.array(r.person_shadow), null_m]),
            "card_balance": pa.concat_arrays([pa.array(r.person_card), null_m]),
            "merchant_wallet": pa.concat_arrays(
                [pa.nulls(people, pa.int64()), pa.array(r.merchant_wallet)]
            ),
            "blocked": pa.array(np.concatenate([r.person_blocked, false_m])),
            "cloned": pa.array(np.concatenate([cloned, false_m])),
            "rolled_back": pa.array(np.concatenate([rolled, false_m])),
            "payments_made": pa.array(np.concatenate([made_p, zeros_m])),
            "payments_refused": pa.array(np.concatenate([refused_p, zeros_m])),
            "payments_received": pa.array(np.concatenate([received_p, received_m])),
            "attack_payments_made": pa.array(np.concatenate([attack_made, zeros_m])),
        }
    )


def _per_day(
    day: np.ndarray, mask: np.ndarray, days: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Count (or sum ``weights``, integers kept exact) of the masked events per day."""
    out = np.zeros(days, np.int64)
    values = 1 if weights is None else weights[mask].astype(np.int64)
    np.add.at(out, day[mask], values)
    return out


def pool_by_period(run: Run, period_minutes: int, periods: int) -> tuple[np.ndarray, np.ndarray]:
    """The pool's outstanding loans at the end of each period (a day, an hour) and their peak
    during it; a period without events keeps the previous period's figure."""
    e, after = run.events, run.results.pool_after
    period = np.minimum(e.t // period_minutes, periods - 1)
    peak = np.zeros(periods, np.int64)
    end = np.zeros(periods, np.int64)
    if len(after):
        np.maximum.at(peak, period, after)
        last = np.full(periods, -1, np.int64)
        np.maximum.at(last, period, np.arange(len(after)))
        have = last >= 0
        filled = np.maximum.accumulate(last)  # the last event at or before each period
        end = np.where(filled >= 0, after[np.maximum(filled, 0)], 0)
        peak = np.where(have, peak, end)
    return end.astype(np.int64), peak


def days_table(run: Run, masks: Masks | None = None) -> pa.Table:
    """One row per day: payments made and refused (by each code), shortfalls, what settled,
    the pool, and the load of going online. A payment counts on the day it was made; a
    shortfall on the day it was queued; a settlement on the day it settled."""
    m = masks or Masks.of(run)
    e, r = run.events, run.results
    days = days_of(run)
    day = e.t // MINUTES_PER_DAY
    queued = m.payment & (r.queued_at != NEVER)
    queued_day = np.minimum(np.where(queued, r.queued_at, 0) // MINUTES_PER_DAY, days - 1)
    settled = m.payment & (r.settled_at != NEVER)
    settled_day = np.minimum(np.where(settled, r.settled_at, 0) // MINUTES_PER_DAY, days - 1)
    pool_end, pool_peak = pool_by_period(run, MINUTES_PER_DAY, days)
    columns: dict[str, object] = {
        "day": pa.array(np.arange(days, dtype=np.int32)),
        "payments": pa.array(_per_day(day, m.honest, days)),
        "payments_made": pa.array(_per_day(day, m.made, days)),
        "value_paid": pa.array(_per_day(day, m.made, days, r.moved)),
        "payments_refused": pa.array(_per_day(day, m.refused, days)),
    }
    for i, code in enumerate(CODES):
        if i not in (OK, UNREACHABLE):
            columns[f"refused.{code}"] = pa.array(_per_day(day, m.refused & (r.outcome == i), days))
    columns |= {
        "shortfalls": pa.array(_per_day(queued_day, queued, days)),
        "shortfall_value": pa.array(_per_day(queued_day, queued, days, r.moved)),
        "settled": pa.array(_per_day(settled_day, settled, days)),
        "settled_value": pa.array(_per_day(settled_day, settled, days, r.moved)),
        "pool_drawn": pa.array(_per_day(day, m.payment, days, r.pool_drawn)),
        "pool_outstanding_end": pa.array(pool_end),
        "pool_outstanding_peak": pa.array(pool_peak),
        "attack_payments_made": pa.array(_per_day(day, m.attack & (r.outcome == OK), days)),
        "online_attempts": pa.array(_per_day(day, m.online, days)),
        "online_cut": pa.array(_per_day(day, m.cut, days)),
    }
    return pa.table(columns)


def write_metrics(run: Run, out: Path, masks: Masks | None = None) -> list[Path]:
    """The three tables as Parquet files in ``out``; the paths written."""
    m = masks or Masks.of(run)
    written = []
    for name, table in (
        (PAYMENTS_FILE, payments_table(run, m)),
        (DEVICES_FILE, devices_table(run, m)),
        (DAYS_FILE, days_table(run, m)),
    ):
        path = out / name
        pq.write_table(table, path)
        written.append(path)
    return written
