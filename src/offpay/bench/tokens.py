"""Token verification (FEDS 2025-105): the time to verify a token whose history has 1, 10, 30
and 100 ancestors, and how much of it is the signatures themselves.

A receiving element verifies the whole history back to the minted root before it accepts a
token, so this time grows with the history; the prototype renews tokens beyond 30 ancestors.
The overhead is the verification time above the time to verify exactly the same signatures
again, one after another (recorded during a verification and replayed): encoding, hashing,
certificate look-ups and the walk itself.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from offpay.bench.instrument import count_crypto, replay_seconds
from offpay.crypto.keys import Algorithm
from offpay.sim.network import OfflineNetwork
from offpay.tokens.model import Token

Say = Callable[[str], None]
DEPTHS = (1, 10, 30, 100)


def _chain(net: OfflineNetwork, depths: Sequence[int]) -> dict[int, tuple[Any, Token]]:
    """One token handed back and forth between two elements; returns, for each depth, the
    element holding the token with that many ancestors, and the token."""
    ann = net.add_token_user("Ann", "bank-a", online=1_000_00)
    ben = net.add_token_user("Ben", "bank-b")
    token = ann.app.withdraw(net.money(10_00))
    holder, other = ann, ben
    wanted = set(depths)
    found: dict[int, tuple[Any, Token]] = {}
    for depth in range(1, max(depths) + 1):
        child = holder.element.transfer(token.id, other.element.keygen())
        other.element.store(child)
        token, holder, other = child, other, holder
        if depth in wanted:
            found[depth] = (holder.element, token)
    return found


def measure(
    algorithm: Algorithm = Algorithm.ED25519,
    depths: Sequence[int] = DEPTHS,
    repeat: int = 7,
    say: Say = print,
) -> list[dict[str, Any]]:
    """For each depth: median verification time, the bare time of its signatures, overhead;
    all in CPU time of this process, so that other work on the machine does not count."""
    net = OfflineNetwork(algorithm=algorithm)
    for bank in net.banks:
        net.issue(bank, 1_000_000_00)
    say(f"  building a token history of {max(depths)} transfers ({algorithm.value})")
    chain = _chain(net, depths)
    rows = []
    for depth in depths:
        element, token = chain[depth]
        element.verify(token)  # warm the certificate cache, as a live element's is
        with count_crypto(record=True) as crypto:
            history = element.verify(token)
        times = []
        for _ in range(repeat):
            start = time.process_time()
            element.verify(token)
            times.append(time.process_time() - start)
        verify_s = statistics.median(times)
        signatures_s = replay_seconds(crypto.recorded, repeat)
        rows.append(
            {
                "algorithm": algorithm.value,
                "ancestors": history.length,
                "signatures": crypto.total_verifies,
                "verify_ms": round(1e3 * verify_s, 3),
                "signatures_ms": round(1e3 * signatures_s, 3),
                "overhead_pct": round(100 * (verify_s / signatures_s - 1), 1),
            }
        )
    return rows
