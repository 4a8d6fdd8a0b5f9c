"""How closely the fast executors must reproduce what the real ones measure of traffic and
storage, shared by the fidelity tests of both schemes.

The fast models compose bytes from sizes measured once on real devices; what they cannot follow
is what the encoders vary per message: CBOR integer widths (amounts, counters, values), the
length of a refusal's text, the pickle of a sealed state's integers, the ids in a revocation
list. Those are a few bytes in a thousand; messages are counted exactly, event by event."""

from __future__ import annotations

import numpy as np

from offpay.sim.population.events import Events, Kind
from offpay.sim.population.outcomes import CODES, Results

RUN_TOLERANCE = 0.02  # of a run's total bytes, and of its devices' storage added up
EACH_TOLERANCE = 0.05  # of every event's bytes, of every person's storage


def traffic_differences(events: Events, real: Results, fast: Results) -> list[str]:
    """Messages equal per event; bytes and storage within the tolerances above, every event and
    every person."""
    out = []
    for name in ("messages", "bytes", "storage"):
        if name not in real.extra or name not in fast.extra:
            out.append(f"{name}: not recorded by both executors")
    if out:
        return out
    messages = np.flatnonzero(real.extra["messages"] != fast.extra["messages"])
    for i in messages[:8]:
        out.append(
            f"event {i} ({Kind(int(events.kind[i])).name}, {CODES[real.outcome[i]]}): "
            f"{real.extra['messages'][i]} messages real, {fast.extra['messages'][i]} fast"
        )
    for name, what in (("bytes", "event"), ("storage", "person")):
        r, f = real.extra[name].astype(np.float64), fast.extra[name].astype(np.float64)
        if abs(f.sum() - r.sum()) > RUN_TOLERANCE * r.sum():
            out.append(f"{name} in all: real {r.sum():.0f}, fast {f.sum():.0f}")
        for i in np.flatnonzero(np.abs(f - r) > EACH_TOLERANCE * r)[:8]:
            kind = f" ({Kind(int(events.kind[i])).name})" if what == "event" else ""
            out.append(f"{name} of {what} {i}{kind}: real {r[i]:.0f}, fast {f[i]:.0f}")
    return out
