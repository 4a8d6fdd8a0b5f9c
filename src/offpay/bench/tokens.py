"""Token verification (FEDS 2025-105): the time to verify a token whose history has 1, 10, 30
and 100 ancestors, and how much of it is the signatures themselves.

A receiving element verifies the whole history back to the minted root before it accepts a
token, so this time grows with the history; the prototype renews tokens beyond 30 ancestors.
The overhead is the verification time above the time to verify exactly the same signatures
again, one after another (recorded during a verification and replayed): encoding, hashing,
certificate look-ups and the walk itself.

Two figures per history. **Cold** (the headline): a verifier that never saw any of the history
(its certificate cache is warm, as a live element's is after discovery), so every signature of
the history is verified. **Warm**: a verifier that already verified the token's parent, as the
receiver has in phase 3 of every transfer (phase 2 verified the offered token) and as an
element has when a token it held comes back: it remembers those signatures, so only the new
hop's are verified; every other check runs again.
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
from offpay.tokens.verify import TokenVerifier

Say = Callable[[str], None]
DEPTHS = (1, 10, 30, 100)


def _chain(net: OfflineNetwork, depth: int) -> list[tuple[Any, Token]]:
    """One token handed back and forth between two elements; for each number of ancestors
    from 0 to ``depth``, the element holding the token and the token."""
    ann = net.add_token_user("Ann", "bank-a", online=1_000_00)
    ben = net.add_token_user("Ben", "bank-b")
    token = ann.app.withdraw(net.money(10_00))
    holder, other = ann, ben
    found: list[tuple[Any, Token]] = [(holder.element, token)]
    for _ in range(depth):
        child = holder.element.transfer(token.id, other.element.keygen())
        other.element.store(child)
        token, holder, other = child, other, holder
        found.append((holder.element, token))
    return found


def _timed(
    verifier: TokenVerifier, token: Token, repeat: int, before: Token | None = None
) -> tuple[float, Any]:
    """Median CPU seconds of ``repeat`` verifications of ``token``, each by a fresh verifier
    that first verified ``before`` (untimed) if given; and the signatures one of them made."""
    times = []
    for i in range(repeat + 1):
        v = verifier.fresh()
        if before is not None:
            v.verify(before)
        if i == 0:
            with count_crypto(record=True) as crypto:
                v.verify(token)
            continue
        start = time.process_time()
        v.verify(token)
        times.append(time.process_time() - start)
    return statistics.median(times), crypto


def measure(
    algorithm: Algorithm = Algorithm.ED25519,
    depths: Sequence[int] = DEPTHS,
    repeat: int = 7,
    say: Say = print,
) -> list[dict[str, Any]]:
    """For each depth: median cold and warm verification times, the bare time of their
    signatures, overhead; all in CPU time of this process, so that other work on the machine
    does not count."""
    net = OfflineNetwork(algorithm=algorithm)
    for bank in net.banks:
        net.issue(bank, 1_000_000_00)
    say(f"  building a token history of {max(depths)} transfers ({algorithm.value})")
    chain = _chain(net, max(depths))
    rows = []
    for depth in depths:
        element, token = chain[depth]
        verifier = element.verifier
        history = verifier.fresh().verify(token)  # warms the certificate cache, as a live
        # element's is after discovery (the same two elements endorsed the whole history)
        cold_s, cold = _timed(verifier, token, repeat)
        warm_s, warm = _timed(verifier, token, repeat, before=chain[depth - 1][1])
        cold_sig_s = replay_seconds(cold.recorded, repeat)
        warm_sig_s = replay_seconds(warm.recorded, repeat)
        rows.append(
            {
                "algorithm": algorithm.value,
                "ancestors": history.length,
                "signatures": cold.total_verifies,
                "verify_ms": round(1e3 * cold_s, 3),
                "signatures_ms": round(1e3 * cold_sig_s, 3),
                "overhead_pct": round(100 * (cold_s / cold_sig_s - 1), 1),
                "warm_signatures": warm.total_verifies,
                "warm_verify_ms": round(1e3 * warm_s, 3),
                "warm_signatures_ms": round(1e3 * warm_sig_s, 3),
            }
        )
    return rows
