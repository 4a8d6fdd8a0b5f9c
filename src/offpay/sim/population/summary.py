"""The figures of one run that a person reads first, and a sweep tabulates: what was paid and
refused (by which limit), how settlement went (delay, shortfalls, waits), what the liquidity
pool lent, what broken devices took against the bound, the load of going online, and (when the
executor measured them) the messages and bytes the events carried and the devices' peak storage.

Every figure is derived from the per-event results; money stays in integer minor units, times
in minutes (hours where named so).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offpay.sim.population.events import PAYMENT_KINDS, Kind, Tag
from offpay.sim.population.outcomes import CODES, NEVER, OK, UNREACHABLE
from offpay.sim.population.run import Run


def _percentiles(values: np.ndarray, name: str) -> dict[str, float]:
    if not len(values):
        return {f"{name}_p{q}": 0.0 for q in (50, 90, 99)} | {f"{name}_max": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{name}_p50": float(p50),
        f"{name}_p90": float(p90),
        f"{name}_p99": float(p99),
        f"{name}_max": float(values.max()),
    }


def summarise(run: Run) -> dict[str, Any]:
    """A flat dictionary of plain numbers (JSON, one row of a sweep's table)."""
    e, r, s = run.events, run.results, run.scenario
    kind, outcome = e.kind, r.outcome
    payment = np.isin(kind, np.array(PAYMENT_KINDS, dtype=np.int8))
    honest = payment & (e.tag != Tag.ATTACK)
    attack = payment & (e.tag == Tag.ATTACK)
    made = honest & (outcome == OK)
    refused = honest & (outcome != OK)
    by_code = np.bincount(outcome[refused], minlength=len(CODES))
    settled = made & (r.settled_at != NEVER)
    delay_h = (r.settled_at[settled] - e.t[settled]) / 60.0
    queued = payment & (r.queued_at != NEVER)
    waited = queued & (r.settled_at != NEVER)
    wait_h = (r.settled_at[waited] - r.queued_at[waited]) / 60.0
    online = np.isin(kind, np.array([Kind.ONLINE, Kind.SHOP_ONLINE], dtype=np.int8))
    hours = max(1, -(-s.minutes // 60))
    # the load of going online, without everyone's first top-up at the start of the run
    reached = online & (outcome != UNREACHABLE) & (e.tag != Tag.START)
    load = np.bincount(e.t[reached] // 60, minlength=hours)
    summary: dict[str, Any] = {
        "scenario": s.name,
        "scheme": s.scheme.value,
        "liquidity": s.liquidity.policy.value,
        "pool_size": s.liquidity.pool,
        "people": run.world.people,
        "merchants": run.world.merchants,
        "days": s.days,
        "outage_hours": s.outage.hours if s.outage else 0.0,
        "events": len(e),
        "payments": int(honest.sum()),
        "payments_made": int(made.sum()),
        "payments_refused": int(refused.sum()),
        "refused_share": float(refused.sum() / honest.sum()) if honest.any() else 0.0,
        "value_paid": int(r.moved[made].sum()),
        "value_refused": int(e.amount[refused].sum()),
        "settled": int(settled.sum()),
        "unsettled_at_end": int((made & (r.settled_at == NEVER)).sum()),
        **_percentiles(delay_h, "settlement_delay_hours"),
        "shortfalls": int(queued.sum()),
        "shortfall_value": int(r.moved[queued].sum()),
        "shortfalls_still_waiting": int((queued & (r.settled_at == NEVER)).sum()),
        **_percentiles(wait_h, "shortfall_wait_hours"),
        "pool_drawn": int(r.pool_drawn.sum()),
        "pool_draws": int((r.pool_drawn > 0).sum()),
        "pool_peak": int(r.pool_after.max()) if len(r.pool_after) else 0,
        "pool_outstanding_at_end": int(r.pool_outstanding),
        "settled_without_waiting_share": float(((made & (r.queued_at == NEVER)).sum()) / made.sum())
        if made.any()
        else 1.0,
        "refunded": int(r.refunded.sum()),
        "attack_payments": int(attack.sum()),
        "attack_payments_made": int((attack & (outcome == OK)).sum()),
        "attack_value_taken": int(r.moved[attack & (outcome == OK)].sum()),
        "devices_blocked": int(r.person_blocked.sum()),
        "losses": int(r.losses),
        "loss_bound": int(r.loss_bound),
        "online_attempts": int(online.sum()),
        "online_cut": int((outcome[online] == UNREACHABLE).sum()),
        "online_peak_per_hour": int(load.max()) if len(load) else 0,
    }
    extra = r.extra
    if "messages" in extra:
        summary["messages"] = int(extra["messages"].sum())
    if "bytes" in extra:
        summary["bytes_carried"] = int(extra["bytes"].sum())
    if "storage" in extra:
        storage = extra["storage"]
        summary["device_storage_peak_bytes"] = int(storage.max()) if len(storage) else 0
    for i, code in enumerate(CODES):
        if i != OK and by_code[i]:
            summary[f"refused.{code}"] = int(by_code[i])
    return summary
