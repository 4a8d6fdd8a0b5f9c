"""Verifying many uploaded payments across processes (issue 7, point 7).

An upload of hundreds of payments spends most of an intermediary's CPU time on checking them:
two signatures each, and decoding. Above :data:`POOL_MIN` payments the checks are spread over
a pool of worker processes, each with its own trust store for the same root; each worker
returns the decoded payment or nothing. A payment a worker could not verify is checked again
in the calling process, which raises the typed error the one-by-one path would raise, so the
pool changes how fast payments are verified, never whether.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from multiprocessing.pool import Pool

from offpay.bank.evidence import verify_payment
from offpay.crypto.pki import TrustStore
from offpay.errors import OffpayError
from offpay.wire.envelope import Signed
from offpay.wire.messages import OfflinePayment

POOL_MIN = 64  # payments below which a batch is verified in the calling process

_trust: TrustStore | None = None  # a worker's own, for the root it was started with


def _start_worker(root_der: bytes) -> None:
    global _trust
    _trust = TrustStore(root_der)


def _verify(payments: list[Signed[OfflinePayment]]) -> list[OfflinePayment | None]:
    assert _trust is not None
    out: list[OfflinePayment | None] = []
    for signed in payments:
        try:
            out.append(verify_payment(signed, _trust))
        except OffpayError:
            out.append(None)
    return out


def default_workers() -> int:
    """A worker per core (the caller waits while they verify); none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores if cores and cores > 1 else 0


class Verifier:
    """Verifies payments for one trust root; ``workers`` processes (0: in this process).

    The worker pool is the process's, one per trust root: every intermediary of a process
    (a simulated network holds several) shares it, instead of each starting a pool of its own
    (two pools of a worker per core each on two cores made four workers fight for two)."""

    def __init__(self, root_der: bytes, workers: int | None = None) -> None:
        self.root_der = root_der
        self.workers = default_workers() if workers is None else workers
        self.pool_min = POOL_MIN

    def verify_all(
        self, payments: Sequence[Signed[OfflinePayment]]
    ) -> list[OfflinePayment | None] | None:
        """Each payment verified by the pool (None for one that failed), or None when the
        batch is too small for the pool or there is no pool."""
        if self.workers < 1 or len(payments) < self.pool_min:
            return None
        size = -(-len(payments) // (2 * self.workers))
        chunks = [list(payments[i : i + size]) for i in range(0, len(payments), size)]
        try:
            pool = _pool_for(self.root_der, self.workers)
            return [p for chunk in pool.map(_verify, chunks) for p in chunk]
        except (AssertionError, OSError, RuntimeError, ValueError):
            # Workers could not start (a daemonic process, a program whose main module is
            # not guarded by ``if __name__ == "__main__"``, no processes): verify here.
            self.close()
            self.workers = 0
            return None

    def worker_pids(self) -> list[int]:
        """The process ids of the pool's workers (none before the first big batch)."""
        with _POOLS_LOCK:
            pool = _POOLS.get(self.root_der)
        return [] if pool is None else [p.pid for p in getattr(pool, "_pool", ()) if p.pid]

    def close(self) -> None:
        """Stop the process's pool for this root (the next big batch starts another)."""
        with _POOLS_LOCK:
            pool = _POOLS.pop(self.root_der, None)
        if pool is not None:
            pool.terminate()
            pool.join()


_POOLS: dict[bytes, Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool_for(root_der: bytes, workers: int) -> Pool:
    with _POOLS_LOCK:
        pool = _POOLS.get(root_der)
        if pool is None:
            # spawn: fresh interpreters, nothing of this process's threads or connections;
            # daemonic workers, which multiprocessing stops when this process exits.
            context = multiprocessing.get_context("spawn")
            pool = _POOLS[root_der] = context.Pool(workers, _start_worker, (root_der,))
        return pool
