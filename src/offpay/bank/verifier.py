"""Verifying many uploaded payments across processes (issue 7, point 7).

An upload of hundreds of payments spends most of an intermediary's CPU time on checking them:
two signatures each, and decoding. Above :data:`POOL_MIN` payments the checks are spread over
a pool of worker processes, each with its own trust store for the same root. Settlement
(:meth:`Verifier.check_all`) hands the workers bytes (a payment's signed encoding, or its
payload, signature and chain) and gets back a small tuple of plain values per payment
(:class:`~offpay.bank.records.VerifiedPayment`), not a pickled message graph. A payment a
worker could not verify is checked again in the calling process, which raises the typed error
the one-by-one path would raise, so the pool changes how fast payments are verified, never
whether.

An intermediary remembers which payments it verified (the same payment reaches it again at a
later hop of one sync) by the SHA-256 of their signed bytes, with the plain record, never the
payload: the memo's memory is bounded by :data:`VERIFIED_KEPT` records of a few hundred bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import threading
from collections.abc import Sequence
from multiprocessing.pool import AsyncResult, Pool

from offpay.bank.evidence import verify_payment, verify_payment_and_request
from offpay.bank.records import VerifiedPayment
from offpay.crypto.pki import TrustStore
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment

POOL_MIN = 64  # payments below which a batch is verified in the calling process
VERIFIED_KEPT = 4096  # payments whose verification an intermediary remembers (by digest)

# A payment as it reaches verification: its signed encoding, or the envelope decoded with the
# message that carried it (which pickles as its payload, signature and chain).
Incoming = bytes | Signed[OfflinePayment]
# What a worker sends back for a payment: VerifiedPayment's fields, the amount as
# (minor, currency); None for a payment that did not verify.
Plain = tuple[bytes, str, str, str, str, int, int, str, bytes, bytes, bool]

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


def plain_check(item: Incoming, trust: TrustStore) -> Plain:
    """Every check of :func:`~offpay.bank.evidence.verify_payment` on one payment, its plain
    values out; raises the typed error of the first check that fails."""
    signed = item if isinstance(item, Signed) else Signed.from_bytes(item)
    payment, request = verify_payment_and_request(signed, trust)
    return (
        payment.tx_id,
        payment.sender,
        payment.receiver,
        payment.payer_institution,
        payment.payee_institution,
        payment.payer_seq,
        payment.amount.minor,
        payment.amount.currency,
        request.request_id,
        signed.digest,
        bool(payment.funding),
    )


def _check_chunk(items: list[Incoming]) -> list[Plain | None]:
    assert _trust is not None
    out: list[Plain | None] = []
    for item in items:
        try:
            out.append(plain_check(item, _trust))
        except OffpayError:
            out.append(None)
    return out


def record_of(plain: Plain) -> VerifiedPayment:
    tx, sender, receiver, payer_inst, payee_inst, seq, minor, currency, rid, digest, fund = plain
    return VerifiedPayment(
        tx, sender, receiver, payer_inst, payee_inst, seq, Money(minor, currency), rid, digest, fund
    )


def key_of(data: bytes) -> bytes:
    """What the memo knows a payment by: the SHA-256 of its whole signed encoding (payload,
    signature and chain)."""
    return hashlib.sha256(data).digest()


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
        self._memo: dict[bytes, VerifiedPayment] = {}

    # -- settlement: bytes in, plain records out --------------------------------------------------

    def payment(self, signed: Signed[OfflinePayment], trust: TrustStore) -> OfflinePayment:
        """:func:`verify_payment` once per payment: one verified before (by its signed bytes)
        is only decoded."""
        key = key_of(signed.to_bytes())
        if key in self._memo:
            return payload_of(signed, OfflinePayment)
        payment, request = verify_payment_and_request(signed, trust)
        self._keep(key, record_of(_plain_of(signed, payment, request.request_id)))
        return payment

    def start(self, datas: Sequence[bytes], items: Sequence[Incoming] | None = None) -> Pending:
        """Start checking payments given as their signed bytes (``datas``) on the pool while
        the caller does something else; :meth:`Pending.records` waits for the answer.
        ``items``: the same payments as envelopes already decoded, if the caller has them
        (nothing is decoded twice)."""
        keys = [key_of(d) for d in datas]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        sources = datas if items is None else items
        job = self._map_async([sources[i] for i in todo]) if todo else None
        return Pending(self, sources, keys, todo, job)

    def check_all(
        self, datas: Sequence[bytes], trust: TrustStore, items: Sequence[Incoming] | None = None
    ) -> list[VerifiedPayment]:
        """Every payment of ``datas`` (signed bytes) checked, in their order; raises the typed
        error of the first that is not a valid payment."""
        return self.start(datas, items).records(trust)

    def _map_async(self, items: list[Incoming]) -> AsyncResult[list[list[Plain | None]]] | None:
        if self.workers < 1 or len(items) < self.pool_min:
            return None
        size = -(-len(items) // (2 * self.workers))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        try:
            return _pool_for(self.root_der, self.workers).map_async(_check_chunk, chunks)
        except (AssertionError, OSError, RuntimeError, ValueError):
            self._no_pool()
            return None

    def _no_pool(self) -> None:
        # Workers could not start (a daemonic process, a program whose main module is not
        # guarded by ``if __name__ == "__main__"``, no processes): verify here.
        self.close()
        self.workers = 0

    def _keep(self, key: bytes, record: VerifiedPayment) -> None:
        if len(self._memo) >= VERIFIED_KEPT:
            with contextlib.suppress(RuntimeError, StopIteration, KeyError):
                self._memo.pop(next(iter(self._memo)))
        self._memo[key] = record

    def remembered(self, key: bytes) -> VerifiedPayment | None:
        return self._memo.get(key)

    # -- the auditor's: decoded payments out ----------------------------------------------------

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
            self._no_pool()
            return None

    def start_pool(self) -> None:
        """Start the process's pool now (a benchmark keeps its start-up out of a measure)."""
        if self.workers > 0:
            try:
                _pool_for(self.root_der, self.workers)
            except (AssertionError, OSError, RuntimeError, ValueError):
                self._no_pool()

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


def _plain_of(signed: Signed[OfflinePayment], p: OfflinePayment, request_id: bytes) -> Plain:
    return (
        p.tx_id,
        p.sender,
        p.receiver,
        p.payer_institution,
        p.payee_institution,
        p.payer_seq,
        p.amount.minor,
        p.amount.currency,
        request_id,
        signed.digest,
        bool(p.funding),
    )


class Pending:
    """Payments being checked by the pool (or to be checked here)."""

    def __init__(
        self,
        verifier: Verifier,
        sources: Sequence[Incoming],
        keys: list[bytes],
        todo: list[int],
        job: AsyncResult[list[list[Plain | None]]] | None,
    ) -> None:
        self.verifier, self.sources, self.keys = verifier, sources, keys
        self.todo, self.job = todo, job
        self.todo_set = frozenset(todo)

    def records(self, trust: TrustStore) -> list[VerifiedPayment]:
        """Each payment's record, in order; raises the typed error of the first payment that
        is not valid (checked again here, where the pool refused it or there is no pool)."""
        verifier = self.verifier
        pooled: list[Plain | None] | None = None
        if self.job is not None:
            try:
                pooled = [p for chunk in self.job.get() for p in chunk]
            except (AssertionError, OSError, RuntimeError, ValueError):
                verifier._no_pool()
        fresh: dict[int, VerifiedPayment] = {}
        if pooled is not None:
            for i, plain in zip(self.todo, pooled, strict=True):
                if plain is not None:
                    fresh[i] = record_of(plain)
        out: list[VerifiedPayment] = []
        for i, (source, key) in enumerate(zip(self.sources, self.keys, strict=True)):
            record = fresh.get(i) or verifier.remembered(key)
            if record is None:
                record = record_of(plain_check(source, trust))
            if i in self.todo_set:
                verifier._keep(key, record)
            out.append(record)
        return out


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
